"""Read rosbag2 demonstrations into per-episode arrays on the `dt` grid.

The bag reader is this module with `bag_sources` (finding and opening bags, split recordings,
duplicates, metadata advice, mcap CRCs), `timebase` (one time base per bag, clock offsets,
message order) and `resample` (streams on the grid, gaps). Only this module and `bag_sources`
(and `bag_writer`, for recording) import `rosbags` (pure Python rosbag2: mcap and sqlite3, no
ROS install needed).
See `DataConfig` for the resampling rules. How bad input is handled (an error names the bag,
topic and field; "skip" means a logged warning plus a count in the ingest summary):

- missing path, truncated/corrupt bag (an mcap chunk CRC mismatch included), a damaged or
  unsupported metadata.yaml, an unsupported serialization format, configured topic absent or of
  the wrong type, a joint that never appears in the JointState `name` field or is missing from
  a JointTrajectory's `joint_names`, a Float64MultiArray of the wrong length, an unsupported
  image encoding, a camera whose image size changes within an episode, a required topic with no
  usable message in a bag (`episode_split="bag"`), the same bag given twice, header stamps on
  another clock than the record times when the bag must fall back to record time: error.
- NaN/inf in the selected joints of a JointState or command, a malformed message (position and
  name lengths differ, a trajectory without points), a JointState that names a joint twice
  (never "last wins": `joint_states.select_joints`, as the policy node), a message older than
  the previous one on its topic, a header stamp far ahead of the messages after it (an
  outlier), a zero stamp in a bag timed by header stamps: the message is skipped (the
  previous sample stays in force) and counted in `BagContents.skipped` (one item per topic
  and reason).
- a sensor stream silent for longer than `max_gap`: the steps are dropped and the episode split
  there (`summary["gaps"]`); an episode (or part) shorter than `min_episode_steps`, and a
  marker-split episode in which a required topic has no message: skipped and counted.

Image sizes may differ between bags and cameras: every frame is resized to `image_size`.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from diffusion_policy_node.action_groups import ActionGroup
from diffusion_policy_node.joint_states import JointStateError, select_joints

from .bag_sources import (
    STORAGE_SUFFIXES,
    BagReadError,
    OpenBag,
    bag_files,
    find_bags,
    open_bag,
)
from .config import DataConfig
from .images import check_raw_encoding
from .resample import (
    IMAGE,
    EpisodeBuilder,
    EpisodePlan,
    FrameStore,
    MemoryFrames,
    SkippedItem,
    check_frame_size,
)
from .timebase import (
    OFFSET_SAMPLE,
    ClockOffsets,
    SkipCounts,
    TimeBase,
    choose_time_base,
    header_stamp,
    offset_reference,
)

__all__ = [
    "STORAGE_SUFFIXES",
    "BagContents",
    "BagReadError",
    "BagScan",
    "Episode",
    "SkippedItem",
    "bag_files",
    "find_bags",
    "read_bag",
    "scan_bag",
]

log = logging.getLogger(__name__)

COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
COMMAND_MSGTYPES = {
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
}


@dataclass
class Episode:
    """One demonstration resampled on the grid: T steps, N cameras, D joints."""

    images: np.ndarray  # (T, N, H, W, 3) uint8 RGB, cameras in config order
    state: np.ndarray  # (T, D) float32 joint positions in config.joint_names order
    action: np.ndarray  # (T, D) float32 action issued at each step
    source: str  # the bag (and episode number for marker splits, part number after a gap)
    times_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (T,) grid

    def __len__(self) -> int:
        return int(self.state.shape[0])


@dataclass
class BagContents:
    episodes: list[Episode]
    skipped: list[SkippedItem]
    summary: dict[str, Any] = field(default_factory=dict)  # see `scan_bag`


@dataclass
class BagScan:
    """A bag read with its frames in a FrameStore (what the cache streams to disk)."""

    episodes: list[EpisodePlan]
    skipped: list[SkippedItem]
    summary: dict[str, Any]


def read_bag(path: str | Path, config: DataConfig) -> BagContents:
    """Read one bag in a single pass into episodes on the `config.dt` grid, in memory.

    Camera frames are decoded only when the grid picks them. Raises BagReadError (or
    ImageDecodeError, a ValueError too) naming the bag, topic and field; see the module doc.
    """
    frames = MemoryFrames(config.n_cameras)
    scan = scan_bag(path, config, frames)
    episodes = [
        Episode(
            images=frames.images(plan.frame_index),
            state=plan.state,
            action=plan.action,
            source=plan.source,
            times_ns=plan.times_ns,
        )
        for plan in scan.episodes
    ]
    return BagContents(episodes=episodes, skipped=scan.skipped, summary=scan.summary)


def scan_bag(path: str | Path, config: DataConfig, frames: FrameStore) -> BagScan:
    """Read one bag, handing every decoded frame to `frames` as soon as it is decoded.

    The summary (JSON-safe) holds: bag, files, time_base and time_base_note, mapped_topics
    (header-less topics mapped onto the header clock), clock_offsets_ms
    (header stamp minus record time per topic), episodes, steps, skipped_messages
    {topic: {reason: n}}, skipped_episodes, gaps, gap_steps_dropped, chunk_crc.
    """
    path = Path(path)
    bag = open_bag(path)
    try:
        _check_crc(bag, path, config)
        _check_topics(bag, path, config)
        return _BagPass(bag, path, config, frames).run()
    finally:
        bag.close()


@lru_cache(maxsize=1)
def _typestore() -> Any:
    return get_typestore(Stores.ROS2_JAZZY)


def _duration_ns(duration: Any) -> int:
    return int(duration.sec) * 1_000_000_000 + int(duration.nanosec)


def _group_fields(config: DataConfig, group: ActionGroup) -> tuple[str, str]:
    """How error messages name a group's topic and joints in the config: (topic field,
    joints field) of its `action_groups` entry, or the single-controller fields."""
    if config.action_groups is None:
        return "command_topic", "joint_names"
    return f"action_groups[{group.name}].topic", f"action_groups[{group.name}].joints"


def _check_crc(bag: OpenBag, path: Path, config: DataConfig) -> None:
    """Refuse a bag without verified chunk CRCs under `require_crc`; else warn (once per bag
    read) when its mcap chunks carry none."""
    verified = bag.crc_note.startswith("verified")
    if config.require_crc and not verified:
        raise BagReadError(
            f"bag {path}: chunk CRCs {bag.crc_note}; require_crc (dp-train --require-crc) "
            "refuses it. Re-record with recorder_node (it writes chunk CRCs), or train "
            "without --require-crc."
        )
    if bag.crc_note.startswith("absent"):
        log.warning("bag %s: chunk CRCs %s", path, bag.crc_note)


def _check_topics(bag: OpenBag, path: Path, config: DataConfig) -> None:
    topics = bag.topics
    wanted: list[tuple[str, str, tuple[str, ...]]] = [
        (topic, "camera_topics", (IMAGE, COMPRESSED_IMAGE)) for topic in config.camera_topics
    ]
    wanted.append((config.joint_state_topic, "joint_state_topic", (JOINT_STATE,)))
    for group in config.groups:
        if group.source == "command":
            field_name = _group_fields(config, group)[0]
            wanted.append((group.topic, field_name, (COMMAND_MSGTYPES[group.type],)))
    if config.episode_split != "bag":
        wanted.append((config.episode_split, "episode_split", ()))
    for topic, field_name, msgtypes in wanted:
        msgtype = topics.get(topic)
        if msgtype is None:
            raise BagReadError(
                f"bag {path} topic {topic}: not in the bag (DataConfig.{field_name}). Topics in "
                f"the bag: {sorted(topics)}. Record it or change the data config."
            )
        if msgtypes and msgtype not in msgtypes:
            raise BagReadError(
                f"bag {path} topic {topic}: has type {msgtype}, expected "
                f"{' or '.join(msgtypes)} (DataConfig.{field_name}). Fix the data config."
            )


class _BagPass:
    """The single pass over one open bag: messages in record order into episode builders
    (one per bag, or one per segment between `episode_split` markers), then the whole-bag
    checks (truncation, unknown joints) and the summary."""

    def __init__(self, bag: OpenBag, path: Path, config: DataConfig, frames: FrameStore) -> None:
        self.bag = bag
        self.path = path
        self.config = config
        self.frames = frames
        self.typestore = _typestore()
        self.split_by_marker = config.episode_split != "bag"
        self.cameras = set(config.camera_topics)
        self.required = [*config.camera_topics, config.joint_state_topic]
        self.command_groups = {g.topic: g for g in config.groups if g.source == "command"}
        self.required += list(self.command_groups)
        self.topics = {*self.required, config.episode_split}
        self.counts = SkipCounts()
        self.offsets = ClockOffsets()
        self.names_seen: set[str] = set()
        self.n_read: Counter[str] = Counter()
        self.n_segments = 0
        self.plans: list[EpisodePlan] = []
        self.skipped: list[SkippedItem] = []
        self.gaps: list[dict[str, Any]] = []
        self.gap_steps = 0
        self.base = TimeBase("record", "")

    def run(self) -> BagScan:
        self.base = self._time_base()
        ep = self._new_builder()
        for conn, record_ns, raw in self.bag.messages(self.topics):
            topic = conn.topic
            index = self.n_read[topic]
            self.n_read[topic] += 1
            if topic == self.config.episode_split:
                self._close_episode(ep)
                ep = self._new_builder()
                continue
            where = f"bag {self.path} topic {topic} message {index}"
            self._add_message(ep, conn.msgtype, topic, record_ns, raw, where)
        self._check_bag()
        self._close_episode(ep)
        return self._result()

    def _deserialize(self, raw: bytes, msgtype: str, where: str) -> Any:
        try:
            return self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as exc:
            raise BagReadError(
                f"{where}: cannot be deserialized as {msgtype} ({exc}); the bag is corrupt"
            ) from exc

    def _time_base(self) -> TimeBase:
        """Decide header or record time from the first message of every required topic."""
        firsts: dict[str, tuple[int | None, int]] = {}
        if self.config.timestamp_source == "header":
            for topic in self.required:
                first = self.bag.first_message(topic)
                if first is not None:
                    conn, record_ns, raw = first
                    where = f"bag {self.path} topic {topic} message 0"
                    msg = self._deserialize(raw, conn.msgtype, where)
                    firsts[topic] = (header_stamp(msg), record_ns)
        offsets = None
        if any(stamp is None for stamp, _ in firsts.values()):
            reference = offset_reference(
                firsts, list(self.command_groups), self.config.joint_state_topic
            )
            if reference is not None:
                offsets = (reference, self._offset_sample(reference))
        return choose_time_base(self.config, firsts, str(self.path), offsets)

    def _offset_sample(self, topic: str) -> list[int]:
        """Header stamp - record time (ns) of the first stamped messages of `topic`."""
        sample: list[int] = []
        for index, (conn, record_ns, raw) in enumerate(self.bag.messages({topic})):
            if index >= OFFSET_SAMPLE:
                break
            msg = self._deserialize(raw, conn.msgtype, f"bag {self.path} topic {topic}")
            stamp = header_stamp(msg)
            if stamp:
                sample.append(stamp - record_ns)
        return sample

    def _new_builder(self) -> EpisodeBuilder:
        self.n_segments += 1
        source = (
            f"{self.path} [episode {self.n_segments}]" if self.split_by_marker else str(self.path)
        )
        return EpisodeBuilder(self.config, source, self.counts, self.frames)

    def _close_episode(self, ep: EpisodeBuilder) -> None:
        ep.finish()
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
        self.plans += result.episodes
        self.skipped += result.skipped
        self.gaps += result.gaps
        self.gap_steps += result.steps_dropped

    def _message_time(self, topic: str, msg: Any, record_ns: int) -> int | None:
        """The message's time on the bag's time base (None: skipped, counted)."""
        stamp = header_stamp(msg)
        if stamp:
            self.offsets.add(topic, stamp - record_ns)
        if self.base.source == "record":
            return record_ns
        if topic in self.base.mapped:
            return record_ns + self.base.offset_ns
        if not stamp:
            self.counts.skip(topic, "header.stamp = 0 in a bag timed by header stamps")
            return None
        return stamp

    def _add_message(
        self, ep: EpisodeBuilder, msgtype: str, topic: str, record_ns: int, raw: bytes, where: str
    ) -> None:
        """Deserialize one camera, joint-state or command message into the episode `ep`."""
        msg = self._deserialize(raw, msgtype, where)
        ep.n_messages += 1
        t = self._message_time(topic, msg, record_ns)
        if t is None:
            return
        if topic in self.cameras:
            if msgtype == IMAGE:  # cheap checks on every frame, not only decoded ones
                check_raw_encoding(msg.encoding, where)
                check_frame_size(ep.sizes, topic, msg.height, msg.width, where)
            ep.add(topic, t, (msg, where))
        elif topic == self.config.joint_state_topic:
            self.names_seen.update(msg.name)
            item = self._joint_item(list(msg.name), msg.position)
            if item is not None:
                ep.add(topic, t, item)
        else:
            group = self.command_groups[topic]
            command = _parse_command(msg, t, group, self.config, where, self.counts)
            if command is not None:
                ep.add(topic, t, command)

    def _joint_item(self, names: list[str], position: Any) -> tuple[list[int], Any] | None:
        """(columns, values) of the configured joints in a JointState, or None (skipped and
        counted: malformed, a joint name repeated in the message, NaN/inf in a selected joint;
        the reason names the joints). The same selection the policy node makes."""
        topic = self.config.joint_state_topic
        try:
            cols, values = select_joints(names, position, self.config.joint_names, topic)
        except JointStateError as exc:
            self.counts.skip(topic, exc.summary)
            return None
        if not len(cols):
            return None  # another publisher's joints only
        return cols.tolist(), values

    def _check_bag(self) -> None:
        """Whole-bag checks once every message is read: truncation, unknown joints."""
        expected = self.bag.expected_counts(self.topics)
        for topic, n in expected.items():
            if self.n_read[topic] < n:
                raise BagReadError(
                    f"bag {self.path} topic {topic}: the bag's index lists {n} messages but only "
                    f"{self.n_read[topic]} could be read; the bag is truncated. Re-record it, "
                    "try `ros2 bag reindex`, or leave it out."
                )
        config = self.config
        missing = [j for j in config.joint_names if j not in self.names_seen]
        if missing and self.n_read[config.joint_state_topic]:
            raise BagReadError(
                f"bag {self.path} topic {config.joint_state_topic} field name: joint(s) "
                f"{missing} never appear; names in the bag: {sorted(self.names_seen)}. Fix "
                "DataConfig.joint_names."
            )

    def _result(self) -> BagScan:
        skipped_episodes = [{"source": s.source, "reason": s.reason} for s in self.skipped]
        skipped_messages = self.counts.by_topic()
        for topic, reasons in skipped_messages.items():
            for reason, n in reasons.items():
                self.skipped.append(
                    SkippedItem(f"{self.path} topic {topic}", f"{n} message(s) skipped: {reason}")
                )
        for item in self.skipped:
            log.warning("skipped %s: %s", item.source, item.reason)
        offsets = self.offsets.to_dict()
        if self.config.timestamp_source == "header" and self.base.source == "record":
            log.warning(
                "bag %s: %s (header stamp - record time: %s)",
                self.path,
                self.base.note,
                {t: f"{o['mean_ms']:.1f} ms" for t, o in offsets.items()} or "no stamps",
            )
        if self.gaps:
            log.warning(
                "bag %s: %d gap(s) longer than max_gap=%.3fs (%s): %d step(s) dropped, the "
                "episode split there",
                self.path,
                len(self.gaps),
                self.config.max_gap_s,
                sorted({g["topic"] for g in self.gaps}),
                self.gap_steps,
            )
        summary = {
            "bag": str(self.path),
            "files": self.bag.files,
            "camera_types": {t: self.bag.topics[t] for t in self.config.camera_topics},
            "time_base": self.base.source,
            "time_base_note": self.base.note,
            "mapped_topics": list(self.base.mapped),
            "clock_offsets_ms": offsets,
            "episodes": len(self.plans),
            "steps": int(sum(len(p) for p in self.plans)),
            "skipped_messages": skipped_messages,
            "skipped_episodes": skipped_episodes,
            "gaps": self.gaps,
            "gap_steps_dropped": self.gap_steps,
            "chunk_crc": self.bag.crc_note,
        }
        return BagScan(episodes=self.plans, skipped=self.skipped, summary=summary)


def _parse_command(
    msg: Any, t: int, group: ActionGroup, config: DataConfig, where: str, counts: SkipCounts
) -> np.ndarray | tuple[int, np.ndarray, np.ndarray] | None:
    """A command of `group` as a (d,) array (Float64MultiArray) or a (start, tfs, positions)
    trajectory, columns in the group's joint order."""
    topic, joints = group.topic, list(group.joints)
    field_name, joints_field = _group_fields(config, group)
    if group.type == "Float64MultiArray":
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(joints),):
            raise BagReadError(
                f"{where} field data: has {data.size} values, expected {len(joints)} (one per "
                f"joint of DataConfig.{joints_field} {joints}, in that order). Fix "
                f"DataConfig.{joints_field} or DataConfig.{field_name}."
            )
        if not np.all(np.isfinite(data)):
            counts.skip(topic, "NaN/inf in the command")
            return None
        return data.copy()
    names = list(msg.joint_names)
    missing = [j for j in joints if j not in names]
    if missing:
        raise BagReadError(
            f"{where} field joint_names: joint(s) {missing} missing (has {names}). "
            f"Fix DataConfig.{joints_field}: a joint commanded by another controller belongs "
            "in its own action group (with that controller's topic)."
        )
    if not msg.points:
        counts.skip(topic, "JointTrajectory without points")
        return None
    cols = [names.index(j) for j in joints]
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
