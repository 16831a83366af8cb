"""Streams of one episode resampled on the `dt` grid, with gaps (part of the bag reader).

The grid of an episode runs from the moment every required stream has a sample to the last
sample of the stream that stops first; each step takes the newest sample at or before its time.
A camera or joint-state stream with no sample for longer than `DataConfig.max_gap_s` would be
filled by repeating its last sample: those steps are dropped instead and the episode is split
there (parts shorter than `min_episode_steps` are skipped), each gap counted in the summary.
Commands are not gap-checked: a command stays in force until the next one, as it does for the
controller. Camera frames are decoded only when the grid picks them and handed to a frame
store at once (memory or, for the cache, a file), so nothing grows with the episode but the
small per-message time and joint arrays.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from diffusion_policy_node.action_groups import ActionGroup
from diffusion_policy_node.joint_states import JointStateMerger
from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower

from .bag_sources import BagReadError
from .config import DataConfig
from .images import decode_compressed_image, decode_raw_image, resize_image
from .timebase import OrderFilter, SkipCounts

__all__ = [
    "IMAGE",
    "BuildResult",
    "EpisodeBuilder",
    "EpisodePlan",
    "FrameStore",
    "MemoryFrames",
    "SkippedItem",
    "check_frame_size",
]

IMAGE = "sensor_msgs/msg/Image"


class FrameStore(Protocol):
    """Where decoded (H, W, 3) frames go; `add` returns the frame's index for its camera."""

    def add(self, camera: int, rgb: np.ndarray) -> int: ...


class MemoryFrames:
    """Frames kept in memory (for `read_bag`)."""

    def __init__(self, n_cameras: int) -> None:
        self.frames: list[list[np.ndarray]] = [[] for _ in range(n_cameras)]

    def add(self, camera: int, rgb: np.ndarray) -> int:
        self.frames[camera].append(rgb)
        return len(self.frames[camera]) - 1

    def images(self, frame_index: np.ndarray) -> np.ndarray:
        """(T, N, H, W, 3) uint8 for a (T, N) index array."""
        T, N = frame_index.shape
        if T == 0:
            return np.zeros((0, N, 0, 0, 3), np.uint8)
        return np.stack(
            [np.stack([self.frames[c][i] for i in frame_index[:, c]]) for c in range(N)], axis=1
        )


@dataclass
class EpisodePlan:
    """One episode on the grid, its frames still in a FrameStore: T steps, N cameras."""

    state: np.ndarray  # (T, D) float32
    action: np.ndarray  # (T, D) float32
    times_ns: np.ndarray  # (T,) int64 grid times
    frame_index: np.ndarray  # (T, N) int64 index into the store, per camera
    source: str

    def __len__(self) -> int:
        return int(self.state.shape[0])


@dataclass(frozen=True)
class SkippedItem:
    """Something left out of the data set, with the reason (kept in the cache summary)."""

    source: str
    reason: str


class _JointStream:
    """JointState messages merged by name into rows in `joint_names` order.

    Messages may list the joints in any order, carry extra joints, or (several publishers on
    one topic) only some of them; a row is emitted once every configured joint has a value.
    """

    def __init__(self, joint_names: list[str]) -> None:
        self.merger = JointStateMerger(joint_names)  # the policy node merges the same way
        self.times = array("q")
        self.values = array("d")  # rows back to back

    def add(self, t: int, item: tuple[list[int], np.ndarray]) -> None:
        cols, values = item
        self.merger.merge(np.asarray(cols, dtype=np.intp), values, t)
        if self.merger.complete:
            self.times.append(t)
            self.values.extend(self.merger.positions())

    def rows(self) -> np.ndarray:
        return np.frombuffer(self.values, np.float64).reshape(-1, len(self.merger.joint_names))


class _FrameSelector:
    """Decodes only the camera frames the grid picks: frame i is kept iff a grid time falls in
    [t_i, t_{i+1}). Frames wait undecided until the grid origin t0 is known, except those whose
    successor is no later than a lower bound of t0 (no grid time can pick them)."""

    def __init__(
        self, camera: int, config: DataConfig, store: FrameStore, sizes: dict[str, Any]
    ) -> None:
        self.camera = camera
        self.sizes = sizes
        self.topic = config.camera_topics[camera]
        self.image_size = config.image_size
        self.dt_ns = config.dt_ns
        self.store = store
        self.times = array("q")  # every accepted frame, in order
        self.frames: dict[int, int] = {}  # accepted index -> store index
        self.undecided: list[tuple[int, Any, str]] = []  # (accepted index, msg, where)

    def add(self, t: int, item: tuple[Any, str]) -> None:
        self.times.append(t)
        self.undecided.append((len(self.times) - 1, *item))

    def decide(self, t0: int | None, t0_bound: int) -> None:
        """Settle every undecided frame that has a successor."""
        while len(self.undecided) >= 2:
            idx, msg, where = self.undecided[0]
            t_next = self.times[self.undecided[1][0]]
            if t0 is None:
                if t_next > t0_bound:
                    return  # might still be picked once t0 is known
            elif self._grid_hits(self.times[idx], t_next, t0):
                self._decode(idx, msg, where)
            self.undecided.pop(0)

    def finish(self, t0: int | None, t0_bound: int) -> None:
        self.decide(t0, t0_bound)
        if t0 is not None and self.undecided:
            idx, msg, where = self.undecided.pop()
            self._decode(idx, msg, where)  # the newest frame: picked by the grid's tail
        self.undecided.clear()

    def _grid_hits(self, t: int, t_next: int, t0: int) -> bool:
        first = t0 if t <= t0 else t0 - ((t0 - t) // self.dt_ns) * self.dt_ns
        return first < t_next

    def _decode(self, idx: int, msg: Any, where: str) -> None:
        if msg.__msgtype__ == IMAGE:
            rgb = decode_raw_image(
                msg.encoding, msg.height, msg.width, msg.step, msg.data, where=where
            )
        else:
            rgb = decode_compressed_image(msg.format, msg.data, where=where)
            check_frame_size(self.sizes, self.topic, rgb.shape[0], rgb.shape[1], where)
        self.frames[idx] = self.store.add(self.camera, resize_image(rgb, self.image_size))


class _Commands:
    """Accepted commands: (D,) arrays (Float64MultiArray) or (start, tfs, positions) tuples."""

    def __init__(self) -> None:
        self.times = array("q")
        self.items: list[Any] = []

    def add(self, t: int, item: Any) -> None:
        self.times.append(t)
        self.items.append(item)


@dataclass
class BuildResult:
    episodes: list[EpisodePlan] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    steps_dropped: int = 0


class EpisodeBuilder:
    """Everything one episode needs, filled in during the single pass over the bag: each topic
    goes through an OrderFilter into its stream."""

    def __init__(
        self, config: DataConfig, source: str, counts: SkipCounts, store: FrameStore
    ) -> None:
        self.config = config
        self.source = source
        self.joints = _JointStream(config.joint_names)
        self.sizes: dict[str, tuple[int, int]] = {}  # camera topic -> (h, w) in this episode
        self.cameras = [
            _FrameSelector(c, config, store, self.sizes) for c in range(config.n_cameras)
        ]
        self.groups = config.groups
        self.commands = {g.topic: _Commands() for g in self.groups if g.source == "command"}
        self.sinks: dict[str, Any] = {config.joint_state_topic: self.joints}
        self.sinks.update({cam.topic: cam for cam in self.cameras})
        self.sinks.update(self.commands)
        self.filters = {
            topic: OrderFilter(topic, counts, config.max_gap_ns) for topic in self.sinks
        }
        self.t0: int | None = None
        self.n_messages = 0

    def add(self, topic: str, t: int, item: Any) -> None:
        """Queue one message (already validated) of a required topic."""
        sink = self.sinks[topic]
        for t_ok, item_ok in self.filters[topic].push(t, item):
            sink.add(t_ok, item_ok)
        self._settle()

    def _settle(self) -> None:
        bound = self.update_origin()
        for cam in self.cameras:
            cam.decide(self.t0, bound)

    def _streams(self) -> dict[str, array]:
        """Accepted sample times of every required stream."""
        return {topic: sink.times for topic, sink in self.sinks.items()}

    def missing_topics(self) -> list[str]:
        return [topic for topic, times in self._streams().items() if not times]

    def update_origin(self) -> int:
        """Fix the grid origin t0 once every required stream has a sample; return t0 or, before
        that, a lower bound of it (the latest first sample so far)."""
        if self.t0 is not None:
            return self.t0
        firsts = [times[0] for times in self._streams().values() if times]
        bound = max(firsts) if firsts else -(2**62)
        if len(firsts) == len(self.sinks):
            self.t0 = bound
        return bound

    def finish(self) -> None:
        """Release every held message and settle the frames (call once, at the episode end)."""
        for topic, filt in self.filters.items():
            for t, item in filt.flush():
                self.sinks[topic].add(t, item)
        bound = self.update_origin()
        for cam in self.cameras:
            cam.finish(self.t0, bound)

    def build(self) -> BuildResult:
        """Resample every stream on the grid (after `finish`, every stream present)."""
        cfg = self.config
        dt = cfg.dt_ns
        t0 = self.t0
        if t0 is None:
            raise RuntimeError("build() before every stream had a sample")
        result = BuildResult()
        t_end = min(times[-1] for times in self._streams().values())
        n_grid = (t_end - t0) // dt + 1 if t_end >= t0 else 0
        grid = t0 + np.arange(n_grid, dtype=np.int64) * dt

        def newest(times: array) -> np.ndarray:
            return np.searchsorted(np.frombuffer(times, np.int64), grid, side="right") - 1

        valid = np.ones(n_grid, bool)
        sensors = [(cam.topic, cam.times) for cam in self.cameras]
        sensors.append((cfg.joint_state_topic, self.joints.times))
        for topic, times in sensors:
            valid &= self._gaps(topic, np.frombuffer(times, np.int64), newest(times), grid, result)
        state = self.joints.rows()[newest(self.joints.times)]
        frame_index = np.zeros((n_grid, len(self.cameras)), np.int64)
        for c, cam in enumerate(self.cameras):
            frame_index[:, c] = [cam.frames[int(i)] for i in newest(cam.times)]
        action = np.concatenate(
            [self._group_actions(g, state, grid, newest) for g in self.groups], axis=1
        )
        if any(g.source == "next_state" for g in self.groups):
            # a next_state action is the state one step later: the last step has none
            state, frame_index, grid = state[:-1], frame_index[:-1], grid[:-1]
            action = action[:-1]
            valid = valid[:-1] & valid[1:]
        result.steps_dropped = int((~valid).sum())
        self._split(valid, state, action, grid, frame_index, result)
        return result

    def _group_actions(
        self,
        group: ActionGroup,
        state: np.ndarray,
        grid: np.ndarray,
        newest: Callable[[array], np.ndarray],
    ) -> np.ndarray:
        """(n_grid, d) actions of one group on the grid (next_state: the last row repeats the
        last state; it is cut by `build`)."""
        if group.source == "next_state":
            cols = [self.config.joint_names.index(j) for j in group.joints]
            part = state[:, cols]
            return np.concatenate([part[1:], part[-1:]], axis=0) if len(part) else part
        commands = self.commands[group.topic]
        if group.type == "Float64MultiArray":
            return np.stack(commands.items)[newest(commands.times)]
        if not len(grid):
            return np.zeros((0, len(group.joints)))
        cols = [self.config.joint_names.index(j) for j in group.joints]
        joint_times = np.frombuffer(self.joints.times, np.int64)
        joint_rows = self.joints.rows()[:, cols]

        def measured(t: int) -> np.ndarray:
            i = int(np.searchsorted(joint_times, t, side="right")) - 1
            return joint_rows[max(i, 0)]

        times = np.frombuffer(commands.times, np.int64)
        return controller_reference(times, commands.items, grid + self.config.dt_ns, measured)

    def _gaps(
        self, topic: str, times: np.ndarray, idx: np.ndarray, grid: np.ndarray, out: BuildResult
    ) -> np.ndarray:
        """Valid-step mask for one sensor stream; its gaps longer than max_gap go to `out`."""
        stale = (grid - times[idx]) > self.config.max_gap_ns
        for i in np.unique(idx[stale]):
            out.gaps.append(
                {
                    "episode": self.source,
                    "topic": topic,
                    "start_s": round(float(times[i] - grid[0]) / 1e9, 3),  # from the 1st step
                    "length_s": round(float(times[i + 1] - times[i]) / 1e9, 3),
                    "steps_dropped": int(np.sum(stale & (idx == i))),
                }
            )
        return ~stale

    def _split(
        self,
        valid: np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
        grid: np.ndarray,
        frame_index: np.ndarray,
        out: BuildResult,
    ) -> None:
        """Runs of valid steps become episodes (parts, when a gap split them)."""
        cfg = self.config
        edges = np.flatnonzero(np.diff(np.concatenate([[0], valid.astype(np.int8), [0]])))
        runs = list(zip(edges[::2], edges[1::2], strict=True))
        split = bool(out.gaps)
        if not runs:
            runs = [(0, 0)]
        for k, (a, b) in enumerate(runs, start=1):
            source = f"{self.source} [part {k}]" if split else self.source
            n = int(b - a)
            if n < cfg.min_episode_steps:
                where = " between gaps" if split else ""
                out.skipped.append(
                    SkippedItem(
                        source,
                        f"episode{where} has {n} steps of dt={cfg.dt}s, fewer than "
                        f"min_episode_steps={cfg.min_episode_steps} (the horizon)",
                    )
                )
                continue
            out.episodes.append(
                EpisodePlan(
                    state=state[a:b].astype(np.float32),
                    action=action[a:b].astype(np.float32),
                    times_ns=grid[a:b],
                    frame_index=frame_index[a:b],
                    source=source,
                )
            )


def controller_reference(
    times: np.ndarray,
    commands: list[tuple[int, np.ndarray, np.ndarray]],
    at_ns: np.ndarray,
    measured: Callable[[int], np.ndarray],
) -> np.ndarray:
    """(n, d) positions a joint_trajectory_controller commands at the times `at_ns` (sorted,
    ns) when it receives `commands` (start ns, time_from_start ns (P,), positions (P, d)) at
    `times` (sorted, ns): every command received by then, each one interpolated from what the
    controller commanded at its receipt (`runtime.TrajectoryFollower`, from the desired
    state; the first one from `measured(t)`, the (d,) joint positions at its receipt).

    This is the position the arm was sent to be at each time. Taking instead the newest
    command at `t` and reading it at `t + dt` makes the labels steps of a staircase whenever
    the commands' jitter straddles the grid (the grid starts on a command, so it sits on them).
    """
    n = len(at_ns)
    if not len(commands) or not n:
        return np.zeros((n, commands[0][2].shape[1] if len(commands) else 0))
    origin = min(int(at_ns[0]), int(times[0]), min(int(c[0]) for c in commands)) - 10**9
    follower = TrajectoryFollower(commands[0][2].shape[1])
    out = np.empty((n, follower.dof))
    i = 0
    for k, t in enumerate(np.asarray(at_ns, np.int64)):
        while i < len(times) and times[i] <= t:
            start, tfs, positions = commands[i]
            follower.set_trajectory(
                np.asarray(tfs, np.float64) * 1e-9,
                positions,
                (int(start) - origin) * 1e-9,  # > 0: never "now"
                (int(times[i]) - origin) * 1e-9,
                current_position=measured(int(times[i])),
                from_desired=True,
            )
            i += 1
        sample = follower.sample((int(t) - origin) * 1e-9)
        if sample is None:  # before the first command: the measured position
            sample = measured(int(t))
        out[k] = sample
    return out


def check_frame_size(sizes: dict[str, Any], topic: str, h: int, w: int, where: str) -> None:
    """A camera's resolution must not change within an episode (checked on every frame)."""
    known = sizes.setdefault(topic, (h, w))
    if known != (h, w):
        raise BagReadError(
            f"{where} field height/width: image size changed within an episode from "
            f"{known[0]}x{known[1]} to {h}x{w}. Frames are resized to image_size, "
            "but a resolution change mid-episode means the camera was reconfigured: split "
            "the recording there or re-record."
        )
