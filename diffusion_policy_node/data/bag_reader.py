"""Read rosbag2 demonstrations into per-episode arrays on the `dt` grid.

The only module of the package that imports `rosbags` (pure Python rosbag2: mcap and sqlite3
storage, no ROS install needed). See `DataConfig` for the resampling rules. How bad input is
handled (an error names the bag, topic and field; "skip" means a logged warning plus an entry in
`BagContents.skipped`, which the cache summary keeps):

- missing path, truncated/corrupt bag, configured topic absent or of the wrong type, a joint that
  never appears in the JointState `name` field or is missing from a JointTrajectory's
  `joint_names`, a Float64MultiArray of the wrong length, an unsupported image encoding, a camera
  whose image size changes within an episode (checked on every raw frame, and on the decoded
  ones for compressed topics), a required topic with no usable message in a bag
  (`episode_split="bag"`), header stamps on another clock than the record times that some
  topics fall back to: error.
- NaN/inf in the selected joints of a JointState or command, a malformed message (position and
  name lengths differ, a trajectory without points), a message older than the previous one on
  its topic: the message is skipped (the previous sample stays in force) and counted.
- an episode shorter than `DataConfig.min_episode_steps`, and a marker-split episode in which a
  required topic has no message: the episode is skipped and counted.

Image sizes may differ between bags and cameras: every frame is resized to `image_size`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from .config import DataConfig
from .images import (
    check_raw_encoding,
    decode_compressed_image,
    decode_raw_image,
    resize_image,
)

__all__ = [
    "BagContents",
    "BagReadError",
    "Episode",
    "SkippedItem",
    "bag_files",
    "find_bags",
    "read_bag",
]

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
COMMAND_MSGTYPES = {
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
}
STORAGE_SUFFIXES = (".mcap", ".db3")


class BagReadError(ValueError):
    """A bag cannot be turned into episodes; the message names the bag, topic and field."""


@dataclass
class Episode:
    """One demonstration resampled on the grid: T steps, N cameras, D joints."""

    images: np.ndarray  # (T, N, H, W, 3) uint8 RGB, cameras in config order
    state: np.ndarray  # (T, D) float32 joint positions in config.joint_names order
    action: np.ndarray  # (T, D) float32 action issued at each step
    source: str  # the bag (and episode number for marker splits)
    times_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,) grid

    def __len__(self) -> int:
        return int(self.state.shape[0])


@dataclass(frozen=True)
class SkippedItem:
    """Something left out of the data set, with the reason (kept in the cache summary)."""

    source: str
    reason: str


@dataclass
class BagContents:
    episodes: list[Episode]
    skipped: list[SkippedItem]


# --------------------------------------------------------------------------- bag discovery


def find_bags(paths: Iterable[str | Path]) -> list[Path]:
    """Expand paths into bags: rosbag2 folders, bare .mcap/.db3 files, or folders holding them.

    A folder without `metadata.yaml` is searched (sorted, recursively) for bag folders and loose
    storage files. A path that does not exist is an error.
    """
    bags: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise BagReadError(f"bag {path}: not found; check the path (cwd: {Path.cwd()})")
        if path.is_file():
            if path.suffix not in STORAGE_SUFFIXES:
                raise BagReadError(
                    f"bag {path}: not a rosbag2 storage file (expected {STORAGE_SUFFIXES}) "
                    "or a bag folder with metadata.yaml"
                )
            bags.append(path)
        elif (path / "metadata.yaml").exists():
            bags.append(path)
        else:
            found = _search_folder(path)
            if not found:
                raise BagReadError(
                    f"bag {path}: folder holds no rosbag2 bag (no metadata.yaml, no .mcap/.db3); "
                    "pass a bag folder or storage file"
                )
            bags.extend(found)
    return bags


def _search_folder(folder: Path) -> list[Path]:
    found: list[Path] = []
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            found.extend([child] if (child / "metadata.yaml").exists() else _search_folder(child))
        elif child.suffix in STORAGE_SUFFIXES:
            found.append(child)
    return found


def bag_files(path: str | Path) -> list[Path]:
    """The files making up a bag (the file itself, or every file in a bag folder), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- reading


@lru_cache(maxsize=1)
def _typestore() -> Any:
    return get_typestore(Stores.ROS2_JAZZY)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _duration_ns(duration: Any) -> int:
    return int(duration.sec) * 1_000_000_000 + int(duration.nanosec)


class _Counts:
    """Per-(topic, reason) counters of skipped messages."""

    def __init__(self) -> None:
        self.counter: Counter[tuple[str, str]] = Counter()

    def skip(self, topic: str, reason: str) -> None:
        self.counter[(topic, reason)] += 1


class _JointStream:
    """JointState messages merged by name into rows in `joint_names` order.

    Messages may list the joints in any order, carry extra joints, or (several publishers on
    one topic) only some of them; a row is emitted once every configured joint has a value.
    """

    def __init__(self, joint_names: list[str], topic: str, counts: _Counts) -> None:
        self.column = {name: i for i, name in enumerate(joint_names)}
        self.topic = topic
        self.counts = counts
        self.latest = np.full(len(joint_names), np.nan)
        self.seen = np.zeros(len(joint_names), bool)
        self.times: list[int] = []
        self.rows: list[np.ndarray] = []

    def add(self, t: int, names: list[str], position: np.ndarray) -> None:
        if len(position) != len(names):
            self.counts.skip(self.topic, "malformed JointState (len(position) != len(name))")
            return
        cols, src = [], []
        for k, name in enumerate(names):
            col = self.column.get(name)
            if col is not None:
                cols.append(col)
                src.append(k)
        if not cols:
            return  # another publisher's joints only
        values = np.asarray(position, dtype=np.float64)[src]
        if not np.all(np.isfinite(values)):
            self.counts.skip(self.topic, "NaN/inf in a selected joint position")
            return
        if self.times and t < self.times[-1]:
            self.counts.skip(self.topic, "older than the previous message")
            return
        self.latest[cols] = values
        self.seen[cols] = True
        if self.seen.all():
            self.times.append(t)
            self.rows.append(self.latest.copy())


class _FrameSelector:
    """Decodes only the camera frames the grid picks: frame i is kept iff a grid time falls in
    [t_i, t_{i+1}). Frames wait undecided until the grid origin t0 is known, except those whose
    successor is no later than a lower bound of t0 (no grid time can pick them)."""

    def __init__(self, topic: str, image_size: tuple[int, int], dt_ns: int) -> None:
        self.topic = topic
        self.image_size = image_size
        self.dt_ns = dt_ns
        self.times: list[int] = []  # every accepted frame, in order
        self.frames: dict[int, np.ndarray] = {}  # accepted index -> resized RGB
        self.undecided: list[tuple[int, Any, str]] = []  # (accepted index, msg, where)
        self.size: tuple[int, int] | None = None  # (h, w) of this episode's frames

    def add(self, t: int, msg: Any, where: str) -> bool:
        """Accept a frame (False if it is older than the previous one)."""
        if self.times and t < self.times[-1]:
            return False
        self.times.append(t)
        self.undecided.append((len(self.times) - 1, msg, where))
        return True

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
            self.check_size(rgb.shape[0], rgb.shape[1], where)
        self.frames[idx] = resize_image(rgb, self.image_size)

    def check_size(self, h: int, w: int, where: str) -> None:
        if self.size is None:
            self.size = (h, w)
        elif self.size != (h, w):
            raise BagReadError(
                f"{where} field height/width: image size changed within an episode from "
                f"{self.size[0]}x{self.size[1]} to {h}x{w}. Frames are resized to image_size, "
                "but a resolution change mid-episode means the camera was reconfigured: split "
                "the recording there or re-record."
            )


class _EpisodeBuilder:
    """Everything one episode needs, filled in during the single pass over the bag."""

    def __init__(self, config: DataConfig, source: str, counts: _Counts) -> None:
        self.config = config
        self.source = source
        self.joints = _JointStream(config.joint_names, config.joint_state_topic, counts)
        self.cameras = [
            _FrameSelector(topic, config.image_size, config.dt_ns)
            for topic in config.camera_topics
        ]
        self.command_times: list[int] = []
        self.commands: list[Any] = []  # (D,) array, or (start_ns, tfs (P,), positions (P, D))
        self.t0: int | None = None
        self.n_messages = 0

    def _streams(self) -> dict[str, list[int]]:
        """Accepted sample times of every required stream."""
        out = {cam.topic: cam.times for cam in self.cameras}
        out[self.config.joint_state_topic] = self.joints.times
        if self.config.action_source == "command":
            out[self.config.command_topic] = self.command_times
        return out

    def missing_topics(self) -> list[str]:
        return [topic for topic, times in self._streams().items() if not times]

    def update_origin(self) -> int:
        """Fix the grid origin t0 once every required stream has a sample; return t0 or, before
        that, a lower bound of it (the latest first sample so far)."""
        if self.t0 is not None:
            return self.t0
        firsts = [times[0] for times in self._streams().values() if times]
        bound = max(firsts) if firsts else -(2**62)
        if len(firsts) == len(self._streams()):
            self.t0 = bound
            for cam in self.cameras:
                cam.decide(self.t0, bound)
        return bound

    def finish_frames(self) -> None:
        bound = self.update_origin()
        for cam in self.cameras:
            cam.finish(self.t0, bound)

    def build(self) -> Episode | SkippedItem:
        """Resample every stream on the grid (call after `finish_frames`, all streams present)."""
        cfg = self.config
        dt = cfg.dt_ns
        t0 = self.t0
        if t0 is None:
            raise RuntimeError("build() before every stream had a sample")
        t_end = min(times[-1] for times in self._streams().values())
        n_grid = (t_end - t0) // dt + 1 if t_end >= t0 else 0
        n_steps = n_grid - 1 if cfg.action_source == "next_state" else n_grid
        if n_steps < cfg.min_episode_steps:
            return SkippedItem(
                self.source,
                f"episode has {max(n_steps, 0)} steps of dt={cfg.dt}s, fewer than "
                f"min_episode_steps={cfg.min_episode_steps} (the horizon)",
            )
        grid = t0 + np.arange(n_grid, dtype=np.int64) * dt

        def newest(times: list[int]) -> np.ndarray:
            return np.searchsorted(np.asarray(times, np.int64), grid, side="right") - 1

        state = np.stack(self.joints.rows)[newest(self.joints.times)]
        images = np.empty((n_grid, len(self.cameras), *cfg.image_size, 3), np.uint8)
        for c, cam in enumerate(self.cameras):
            for k, idx in enumerate(newest(cam.times)):
                images[k, c] = cam.frames[int(idx)]
        if cfg.action_source == "next_state":
            action = state[1:]
            state, images, grid = state[:-1], images[:-1], grid[:-1]
        elif cfg.command_type == "Float64MultiArray":
            action = np.stack(self.commands)[newest(self.command_times)]
        else:
            idx = newest(self.command_times)
            action = np.stack(
                [
                    _eval_trajectory(self.commands[i], int(g) + dt)
                    for i, g in zip(idx, grid, strict=True)
                ]
            )
        return Episode(
            images=images,
            state=state.astype(np.float32),
            action=action.astype(np.float32),
            source=self.source,
            times_ns=grid,
        )


def _eval_trajectory(command: tuple[int, np.ndarray, np.ndarray], t: int) -> np.ndarray:
    """Joint positions of a trajectory at absolute time t (ns), linear between points and
    holding the first/last point outside them (joint_trajectory_controller holds the last)."""
    start, tfs, positions = command
    s = float(t - start)
    return np.array([np.interp(s, tfs, positions[:, j]) for j in range(positions.shape[1])])


def _open_reader(path: Path) -> Reader:
    if not path.exists():
        raise BagReadError(f"bag {path}: not found; check the path (cwd: {Path.cwd()})")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise BagReadError(
            f"bag {path}: folder has no metadata.yaml (recording interrupted?). Run "
            f"`ros2 bag reindex {path}` or pass the .mcap/.db3 file inside it directly."
        )
    if path.is_file() and path.suffix not in STORAGE_SUFFIXES:
        raise BagReadError(f"bag {path}: unknown storage file type; expected {STORAGE_SUFFIXES}")
    try:
        reader = Reader(path)
        reader.open()
    except Exception as exc:
        raise BagReadError(
            f"bag {path}: cannot be opened ({type(exc).__name__}: {exc}). The bag is truncated "
            "or corrupt: re-record it, try `ros2 bag reindex`, or leave it out."
        ) from exc
    return reader


def _check_topics(reader: Reader, path: Path, config: DataConfig) -> None:
    topics = reader.topics
    wanted: list[tuple[str, str, tuple[str, ...]]] = [
        (topic, "camera_topics", (IMAGE, COMPRESSED_IMAGE)) for topic in config.camera_topics
    ]
    wanted.append((config.joint_state_topic, "joint_state_topic", (JOINT_STATE,)))
    if config.action_source == "command":
        msgtype = COMMAND_MSGTYPES[config.command_type]
        wanted.append((config.command_topic, "command_topic", (msgtype,)))
    if config.episode_split != "bag":
        wanted.append((config.episode_split, "episode_split", ()))
    for topic, field_name, msgtypes in wanted:
        info = topics.get(topic)
        if info is None:
            raise BagReadError(
                f"bag {path} topic {topic}: not in the bag (DataConfig.{field_name}). Topics in "
                f"the bag: {sorted(topics)}. Record it or change the data config."
            )
        if msgtypes and info.msgtype not in msgtypes:
            raise BagReadError(
                f"bag {path} topic {topic}: has type {info.msgtype}, expected "
                f"{' or '.join(msgtypes)} (DataConfig.{field_name}). Fix the data config."
            )


def _messages(reader: Reader, connections: list[Any], path: Path) -> Iterator[Any]:
    """The reader's messages, with storage errors turned into a BagReadError."""
    stream = reader.messages(connections=connections)
    while True:
        try:
            item = next(stream)
        except StopIteration:
            return
        except Exception as exc:
            raise BagReadError(
                f"bag {path}: reading failed ({type(exc).__name__}: {exc}). The bag is truncated "
                "or corrupt: re-record it, try `ros2 bag reindex`, or leave it out."
            ) from exc
        yield item


def read_bag(path: str | Path, config: DataConfig) -> BagContents:
    """Read one bag in a single pass into episodes on the `config.dt` grid.

    Camera frames are decoded only when the grid picks them. Raises BagReadError (or
    ImageDecodeError, a ValueError too) naming the bag, topic and field; see the module doc.
    """
    path = Path(path)
    reader = _open_reader(path)
    try:
        return _read_open_bag(reader, path, config)
    finally:
        reader.close()


def _read_open_bag(reader: Reader, path: Path, config: DataConfig) -> BagContents:
    _check_topics(reader, path, config)
    return _BagPass(reader, path, config).run()


class _BagPass:
    """The single pass over one open bag: messages in record order into episode builders
    (one per bag, or one per segment between `episode_split` markers), then the whole-bag
    checks (truncation, mixed clocks, unknown joints) and the skipped-message summary."""

    def __init__(self, reader: Reader, path: Path, config: DataConfig) -> None:
        self.reader = reader
        self.path = path
        self.config = config
        self.typestore = _typestore()
        self.split_by_marker = config.episode_split != "bag"
        self.cameras = {topic: i for i, topic in enumerate(config.camera_topics)}
        topics = {*self.cameras, config.joint_state_topic, config.episode_split}
        if config.action_source == "command":
            topics.add(config.command_topic)
        self.connections = [c for c in reader.connections if c.topic in topics]
        self.counts = _Counts()
        self.names_seen: set[str] = set()
        self.n_read: Counter[str] = Counter()
        self.clock_offsets: dict[str, int] = {}  # topic -> header stamp - record time, first
        self.record_timed: set[str] = set()  # topics with messages timed by record time
        self.episodes: list[Episode] = []
        self.skipped: list[SkippedItem] = []

    def run(self) -> BagContents:
        ep = self._new_builder()
        for conn, record_ns, raw in _messages(self.reader, self.connections, self.path):
            topic = conn.topic
            index = self.n_read[topic]
            self.n_read[topic] += 1
            if topic == self.config.episode_split:
                self._close_episode(ep)
                ep = self._new_builder()
                continue
            where = f"bag {self.path} topic {topic} message {index}"
            self._add_message(ep, conn, record_ns, raw, where)
        self._check_bag()
        self._close_episode(ep)
        for (topic, reason), n in sorted(self.counts.counter.items()):
            self.skipped.append(
                SkippedItem(f"{self.path} topic {topic}", f"{n} message(s) skipped: {reason}")
            )
        for item in self.skipped:
            log.warning("skipped %s: %s", item.source, item.reason)
        return BagContents(episodes=self.episodes, skipped=self.skipped)

    def _new_builder(self) -> _EpisodeBuilder:
        n = len(self.episodes) + len(self.skipped) + 1
        source = f"{self.path} [episode {n}]" if self.split_by_marker else str(self.path)
        return _EpisodeBuilder(self.config, source, self.counts)

    def _close_episode(self, ep: _EpisodeBuilder) -> None:
        ep.finish_frames()
        missing = ep.missing_topics()
        if self.split_by_marker and ep.n_messages == 0:
            return  # nothing between two markers (or after the last one)
        if missing and not self.split_by_marker:
            raise BagReadError(
                f"bag {self.path} topic {missing[0]}: no usable message (required topics "
                f"without one: {missing}; skipped-message counts: "
                f"{dict(self.counts.counter) or 'none'}). Re-record or leave the bag out."
            )
        if missing:
            self.skipped.append(SkippedItem(ep.source, f"no usable message on {missing}"))
            return
        result = ep.build()
        (self.episodes if isinstance(result, Episode) else self.skipped).append(result)

    def _add_message(
        self, ep: _EpisodeBuilder, conn: Any, record_ns: int, raw: bytes, where: str
    ) -> None:
        """Deserialize one camera, joint-state or command message into the episode `ep`."""
        topic = conn.topic
        try:
            msg = self.typestore.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:
            raise BagReadError(
                f"{where}: cannot be deserialized as {conn.msgtype} ({exc}); the bag is corrupt"
            ) from exc
        ep.n_messages += 1
        t = self._message_time(topic, msg, record_ns)
        if topic in self.cameras:
            cam = ep.cameras[self.cameras[topic]]
            if conn.msgtype == IMAGE:  # cheap checks on every frame, not only decoded ones
                check_raw_encoding(msg.encoding, where)
                cam.check_size(msg.height, msg.width, where)
            if not cam.add(t, msg, where):
                self.counts.skip(topic, "older than the previous message")
            bound = ep.update_origin()
            cam.decide(ep.t0, bound)
        elif topic == self.config.joint_state_topic:
            self.names_seen.update(msg.name)
            ep.joints.add(t, list(msg.name), msg.position)
        else:
            command = _parse_command(msg, t, self.config, where, self.counts)
            if command is not None and ep.command_times and t < ep.command_times[-1]:
                self.counts.skip(topic, "older than the previous message")
            elif command is not None:
                ep.command_times.append(t)
                ep.commands.append(command)
        ep.update_origin()

    def _message_time(self, topic: str, msg: Any, record_ns: int) -> int:
        """The header stamp (timestamp_source 'header', when set) or else the record time;
        notes which clock each topic uses for `_check_clocks`."""
        if self.config.timestamp_source != "header":
            return record_ns
        header = getattr(msg, "header", None)
        stamp = _stamp_ns(header.stamp) if header is not None else 0
        if not stamp:
            self.record_timed.add(topic)
            return record_ns
        self.clock_offsets.setdefault(topic, stamp - record_ns)
        return stamp

    def _check_bag(self) -> None:
        """Whole-bag checks once every message is read: truncation, mixed clocks, joints."""
        _check_complete(self.connections, self.n_read, self.path)
        _check_clocks(self.clock_offsets, self.record_timed, self.path)
        config = self.config
        missing = [j for j in config.joint_names if j not in self.names_seen]
        if missing and self.n_read[config.joint_state_topic]:
            raise BagReadError(
                f"bag {self.path} topic {config.joint_state_topic} field name: joint(s) "
                f"{missing} never appear; names in the bag: {sorted(self.names_seen)}. Fix "
                "DataConfig.joint_names."
            )


def _check_complete(connections: list[Any], n_read: Counter[str], path: Path) -> None:
    """Fewer messages than the bag's index promises means the storage was cut short."""
    expected: Counter[str] = Counter()
    for conn in connections:
        expected[conn.topic] += int(conn.msgcount)
    for topic, n in expected.items():
        if n_read[topic] < n:
            raise BagReadError(
                f"bag {path} topic {topic}: the bag's index lists {n} messages but only "
                f"{n_read[topic]} could be read; the bag is truncated. Re-record it, try "
                "`ros2 bag reindex`, or leave it out."
            )


def _check_clocks(offsets: dict[str, int], record_timed: set[str], path: Path) -> None:
    """Header stamps and record times can only be mixed when they come from the same clock."""
    if not record_timed or not offsets:
        return
    topic, offset = max(offsets.items(), key=lambda item: abs(item[1]))
    if abs(offset) > 1_000_000_000:
        raise BagReadError(
            f"bag {path} topic {topic} field header.stamp: stamps differ from the record times "
            f"by {offset / 1e9:.1f} s, but {sorted(record_timed)} have no (or zero) stamps and "
            "are timed by record time: the two clocks differ (sim time vs wall clock?). Set "
            "DataConfig.timestamp_source='record' or record with `ros2 bag record "
            "--use-sim-time`."
        )


def _parse_command(
    msg: Any, t: int, config: DataConfig, where: str, counts: _Counts
) -> np.ndarray | tuple[int, np.ndarray, np.ndarray] | None:
    """A command as a (D,) array (Float64MultiArray) or (start, tfs, positions) trajectory."""
    topic = config.command_topic
    n_joints = len(config.joint_names)
    if config.command_type == "Float64MultiArray":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (n_joints,):
            raise BagReadError(
                f"{where} field data: has {data.size} values, expected {n_joints} (one per "
                f"DataConfig.joint_names, in that order). Fix joint_names or command_topic."
            )
        if not np.all(np.isfinite(data)):
            counts.skip(topic, "NaN/inf in the command")
            return None
        return data.copy()
    names = list(msg.joint_names)
    missing = [j for j in config.joint_names if j not in names]
    if missing:
        raise BagReadError(
            f"{where} field joint_names: joint(s) {missing} missing (has {names}). "
            "Fix DataConfig.joint_names or record the full arm's trajectory."
        )
    if not msg.points:
        counts.skip(topic, "JointTrajectory without points")
        return None
    cols = [names.index(j) for j in config.joint_names]
    tfs = np.array([_duration_ns(p.time_from_start) for p in msg.points], dtype=np.float64)
    rows = []
    for p in msg.points:
        if len(p.positions) != len(names):
            counts.skip(topic, "malformed JointTrajectory (len(positions) != len(joint_names))")
            return None
        rows.append(np.asarray(p.positions, dtype=np.float64)[cols])
    positions = np.stack(rows)
    if not np.all(np.isfinite(positions)):
        counts.skip(topic, "NaN/inf in the command")
        return None
    if np.any(np.diff(tfs) <= 0):
        counts.skip(topic, "JointTrajectory with non-increasing time_from_start")
        return None
    return (t, tfs, positions)
