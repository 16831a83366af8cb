"""Synthetic rosbag2 demonstrations with known signals, written with rosbags (mcap or sqlite3).

Signals (t in seconds since T_START_NS, all exact so the tests can compute expected values):
- joint j position: 0.3 * (j + 1) * t + 0.1 * j (linear in time), published with the joints in
  a shuffled order, plus an extra unconfigured joint;
- camera c frame f: a constant image with RGB = frame_color(c, f);
- command m: target joint_position(j, time) + 0.5 + 0.01 * m; a JointTrajectory holds points at
  TRAJ_TFS_S after its start, a Float64MultiArray is the target at its send time.
Record times are header stamps plus a per-topic latency, so "header" and "record" grids differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from diffusion_policy_node.data.config import DataConfig

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T_START_NS = 1_700_000_000_000_000_000
JOINTS = ["shoulder_pan", "shoulder_lift", "elbow", "wrist"]
EXTRA_JOINT = "gripper_finger"
TRAJ_TFS_S = (0.15, 0.25, 0.35, 0.45)
COMMAND_OFFSET = 0.5
CAMERA = "/camera/image_raw"
JOINT_TOPIC = "/joint_states"
JT_TOPIC = "/arm_controller/joint_trajectory"
F64_TOPIC = "/forward_position_controller/commands"
MARKER_TOPIC = "/episode_marker"
GRIPPER_TOPIC = "/gripper_controller/commands"


def joint_position(j: int, t_ns: int | np.ndarray) -> np.ndarray:
    t = (np.asarray(t_ns, np.int64) - T_START_NS) / 1e9
    return 0.3 * (j + 1) * t + 0.1 * j


def joint_positions(t_ns: int) -> np.ndarray:
    return np.array([joint_position(j, t_ns) for j in range(len(JOINTS))], np.float64)


def frame_color(cam: int, frame: int) -> tuple[int, int, int]:
    return (frame % 256, 40 * cam + 20, (7 * frame) % 256)


def command_target(m: int, t_ns: int) -> np.ndarray:
    return joint_positions(t_ns) + COMMAND_OFFSET + 0.01 * m


def gripper_target(m: int) -> float:
    """Gripper command m (Float64MultiArray with one value)."""
    return 0.02 + 0.001 * m


def newest(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the newest time at or before each grid time (reference for the tests)."""
    return np.searchsorted(np.asarray(times), grid, side="right") - 1


@dataclass
class BagSpec:
    storage: str = "mcap"  # or "sqlite3"
    duration_s: float = 2.0
    cameras: tuple[str, ...] = (CAMERA,)
    camera_hz: float = 30.0
    camera_start_s: float = 0.05
    camera_latency_ns: int = 8_000_000
    image_hw: tuple[int, int] = (32, 32)
    encoding: str = "rgb8"  # raw encodings, or "jpeg"/"png" for CompressedImage
    size_change: tuple[int, tuple[int, int]] | None = None  # (from frame, new (h, w))
    joint_hz: float = 200.0
    joint_latency_ns: int = 1_000_000
    joint_order: list[str] | None = None  # None: all joints + extra, shuffled per message
    nan_joint_messages: tuple[int, ...] = ()
    duplicate_joint_messages: tuple[int, ...] = ()  # JOINTS[1] repeated (with 0.0) at the end
    joint_stamp_shift_ns: tuple[tuple[int, int], ...] = ()  # (message, shift of header.stamp)
    camera_dropout_s: tuple[float, float] | None = None  # no frames stamped in [from, to)
    joint_dropout_s: tuple[float, float] | None = None  # no joint states stamped in [from, to)
    command_type: str | None = "JointTrajectory"  # or "Float64MultiArray", None
    command_hz: float = 10.0
    command_start_s: float = 0.12
    command_latency_ns: int = 3_000_000
    command_zero_stamp: bool = False
    command_joint_names: list[str] | None = None
    marker_times_s: tuple[float, ...] = ()
    gripper_hz: float = 0.0  # > 0: gripper commands (Float64MultiArray) on GRIPPER_TOPIC
    seed: int = 0


@dataclass
class BagTruth:
    path: Path
    spec: BagSpec
    camera_header_ns: dict[str, np.ndarray] = field(default_factory=dict)
    camera_record_ns: dict[str, np.ndarray] = field(default_factory=dict)
    joint_header_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    joint_record_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    command_header_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    command_record_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    gripper_header_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _times(start_s: float, hz: float, duration_s: float) -> np.ndarray:
    n = int(np.floor((duration_s - start_s) * hz)) + 1
    return T_START_NS + np.round((start_s + np.arange(n) / hz) * 1e9).astype(np.int64)


def _header(t_ns: int) -> object:
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=int(t_ns // 10**9), nanosec=int(t_ns % 10**9))
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="base")


def _image_msg(spec: BagSpec, cam: int, frame: int, t_ns: int) -> tuple[str, object]:
    T = TYPESTORE.types
    h, w = spec.image_hw
    if spec.size_change and frame >= spec.size_change[0]:
        h, w = spec.size_change[1]
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[:] = frame_color(cam, frame)
    if spec.encoding in ("jpeg", "png"):
        ok, buf = cv2.imencode("." + spec.encoding, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        assert ok
        msg = T["sensor_msgs/msg/CompressedImage"](
            header=_header(t_ns), format=f"rgb8; {spec.encoding} compressed bgr8", data=buf
        )
        return "sensor_msgs/msg/CompressedImage", msg
    alpha = np.full((h, w, 1), 255, np.uint8)
    channels = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.concatenate([rgb, alpha], axis=2),
        "bgra8": np.concatenate([rgb[:, :, ::-1], alpha], axis=2),
        "mono8": rgb[:, :, :1],
    }
    pixels = channels.get(spec.encoding, rgb)  # any other encoding: rgb bytes, unknown name
    step = pixels.shape[1] * pixels.shape[2] + 4  # row padding, as some drivers add
    data = np.zeros((h, step), np.uint8)
    data[:, : step - 4] = pixels.reshape(h, -1)
    msg = T["sensor_msgs/msg/Image"](
        header=_header(t_ns),
        height=h,
        width=w,
        encoding=spec.encoding,
        is_bigendian=0,
        step=step,
        data=data.reshape(-1),
    )
    return "sensor_msgs/msg/Image", msg


def write_bag(path: Path, spec: BagSpec) -> BagTruth:
    """Write a bag folder at `path` from `spec`; return the message times for reference."""
    T = TYPESTORE.types
    rng = np.random.default_rng(spec.seed)
    truth = BagTruth(path=path, spec=spec)
    out: list[tuple[int, str, str, object]] = []  # (record ns, topic, type, msg)

    for c, topic in enumerate(spec.cameras):
        header = _times(spec.camera_start_s + 0.011 * c, spec.camera_hz, spec.duration_s)
        if spec.camera_dropout_s is not None:
            a, b = (T_START_NS + round(x * 1e9) for x in spec.camera_dropout_s)
            header = header[(header < a) | (header >= b)]
        truth.camera_header_ns[topic] = header
        truth.camera_record_ns[topic] = header + spec.camera_latency_ns
        for f, t in enumerate(header):
            msgtype, msg = _image_msg(spec, c, f, int(t))
            out.append((int(t) + spec.camera_latency_ns, topic, msgtype, msg))

    header = _times(0.0, spec.joint_hz, spec.duration_s)
    if spec.joint_dropout_s is not None:
        a, b = (T_START_NS + round(x * 1e9) for x in spec.joint_dropout_s)
        header = header[(header < a) | (header >= b)]
    truth.joint_header_ns = header
    truth.joint_record_ns = header + spec.joint_latency_ns
    shifts = dict(spec.joint_stamp_shift_ns)
    for m, t in enumerate(header):
        if spec.joint_order is None:
            names = [*JOINTS, EXTRA_JOINT]
            names = [names[i] for i in rng.permutation(len(names))]
        else:
            names = list(spec.joint_order)
        values = {name: float(joint_position(j, int(t))) for j, name in enumerate(JOINTS)}
        values[EXTRA_JOINT] = -1.0
        if m in spec.nan_joint_messages:
            values[JOINTS[1]] = float("nan")
        if m in spec.duplicate_joint_messages:
            names = [*names, JOINTS[1]]
        position = np.array([values.get(n, 0.0) for n in names], np.float64)
        if m in spec.duplicate_joint_messages:
            position[-1] = 0.0  # a buggy driver repeats the joint with another value
        msg = T["sensor_msgs/msg/JointState"](
            header=_header(int(t) + shifts.get(m, 0)),
            name=names,
            position=position,
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        out.append(
            (int(t) + spec.joint_latency_ns, JOINT_TOPIC, "sensor_msgs/msg/JointState", msg)
        )

    if spec.command_type is not None:
        header = _times(spec.command_start_s, spec.command_hz, spec.duration_s)
        truth.command_header_ns = header
        truth.command_record_ns = header + spec.command_latency_ns
        for m, t in enumerate(header):
            out.append(_command(spec, m, int(t)))

    if spec.gripper_hz > 0:
        header = _times(spec.command_start_s + 0.03, spec.gripper_hz, spec.duration_s)
        truth.gripper_header_ns = header
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        for m, t in enumerate(header):
            data = np.array([gripper_target(m)], np.float64)
            msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=data)
            out.append((int(t), GRIPPER_TOPIC, "std_msgs/msg/Float64MultiArray", msg))

    for k, ts in enumerate(spec.marker_times_s):
        t = T_START_NS + round(ts * 1e9)
        out.append((t, MARKER_TOPIC, "std_msgs/msg/String", T["std_msgs/msg/String"](data=str(k))))

    out.sort(key=lambda item: item[0])
    plugin = StoragePlugin.MCAP if spec.storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for _, topic, msgtype, _ in out:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
        for record_ns, topic, msgtype, msg in out:
            writer.write(conns[topic], record_ns, TYPESTORE.serialize_cdr(msg, msgtype))
    return truth


def _command(spec: BagSpec, m: int, t: int) -> tuple[int, str, str, object]:
    T = TYPESTORE.types
    record = t + spec.command_latency_ns
    if spec.command_type == "Float64MultiArray":
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=command_target(m, t))
        return record, F64_TOPIC, "std_msgs/msg/Float64MultiArray", msg
    # A zero stamp means "start when received": the trajectory is anchored at the record time.
    start = record if spec.command_zero_stamp else t
    names = spec.command_joint_names or list(reversed(JOINTS))
    points = []
    for tfs_s in TRAJ_TFS_S:
        tfs = round(tfs_s * 1e9)
        target = command_target(m, start + tfs)
        positions = np.array([target[JOINTS.index(n)] for n in names], np.float64)
        duration = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=tfs)
        points.append(
            T["trajectory_msgs/msg/JointTrajectoryPoint"](
                positions=positions,
                velocities=np.zeros(0),
                accelerations=np.zeros(0),
                effort=np.zeros(0),
                time_from_start=duration,
            )
        )
    header = _header(0) if spec.command_zero_stamp else _header(t)
    msg = T["trajectory_msgs/msg/JointTrajectory"](header=header, joint_names=names, points=points)
    return record, JT_TOPIC, "trajectory_msgs/msg/JointTrajectory", msg


def expected_jt_action(truth: BagTruth, grid: np.ndarray, dt_ns: int, use_header: bool):
    """Reference JointTrajectory actions: what a joint_trajectory_controller receiving the
    commands at the reader's time of each message commands at g + dt. The newest message by
    then is linear between its points (holding the last); before its first point it goes
    linearly from what the controller commanded at its receipt (the previous messages; the
    measured joints for the first) to that point."""
    # The points were generated relative to the header stamp (the record time if it is zero).
    content_start = (
        truth.command_record_ns if truth.spec.command_zero_stamp else truth.command_header_ns
    )
    times = content_start if use_header else truth.command_record_ns
    joint_times = truth.joint_header_ns if use_header else truth.joint_record_ns
    tfs = np.round(np.array(TRAJ_TFS_S) * 1e9).astype(np.int64)

    def commanded(t: int, received: int) -> np.ndarray:
        """Position commanded at t by the first `received` messages."""
        m = int(newest(times[:received], [t])[0])
        if m < 0:
            j = max(int(newest(joint_times, [t])[0]), 0)
            return joint_positions(int(truth.joint_header_ns[j]))
        # The reader times the points from its time of the message (its start and receipt).
        receipt = int(times[m])
        points = np.stack([command_target(m, int(content_start[m]) + int(f)) for f in tfs])
        s = t - receipt
        if s >= tfs[0]:
            return np.array([np.interp(s, tfs, points[:, k]) for k in range(points.shape[1])])
        before = commanded(receipt, m)
        return before + s / tfs[0] * (points[0] - before)

    return np.stack(
        [commanded(int(g) + dt_ns, int(newest(times, [int(g) + dt_ns])[0]) + 1) for g in grid]
    )


def make_config(spec: BagSpec | None = None, **overrides) -> DataConfig:
    """A DataConfig matching `spec` (defaults: 10 Hz grid, 8-step horizon, 16x16 images)."""
    spec = spec or BagSpec()
    command_type = spec.command_type or "JointTrajectory"
    values = dict(
        camera_topics=list(spec.cameras),
        image_size=(16, 16),
        joint_state_topic=JOINT_TOPIC,
        joint_names=list(JOINTS),
        action_source="command" if spec.command_type else "next_state",
        command_topic=F64_TOPIC if command_type == "Float64MultiArray" else JT_TOPIC,
        command_type=command_type,
        timestamp_source="header",
        dt=0.1,
        episode_split=MARKER_TOPIC if spec.marker_times_s else "bag",
        n_obs_steps=2,
        horizon=8,
        n_action_steps=4,
    )
    values.update(overrides)
    return DataConfig(**values)


def arm_group(joints: list[str]) -> dict[str, object]:
    """The action group of an arm commanded with JointTrajectory on JT_TOPIC."""
    return {"name": "arm", "joints": list(joints), "topic": JT_TOPIC, "type": "JointTrajectory"}


def grouped_config(
    joint_names: list[str], action_groups: list[dict[str, object]], **overrides
) -> DataConfig:
    """A DataConfig of `action_groups` over `joint_names`: one 8x8 camera on CAMERA, a 10 Hz
    grid, an 8-step horizon with 4 action steps."""
    values = dict(
        camera_topics=[CAMERA],
        image_size=(8, 8),
        joint_names=list(joint_names),
        dt=0.1,
        horizon=8,
        n_action_steps=4,
        action_groups=action_groups,
    )
    values.update(overrides)
    return DataConfig(**values)


def write_records(path: Path, records: list[tuple[int, str, str, object]]) -> None:
    """An mcap bag of `records`: (record time ns, topic, message type, message), written in
    record-time order."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = {}
        for record_ns, topic, msgtype, msg in sorted(records, key=lambda item: item[0]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(conns[topic], record_ns, TYPESTORE.serialize_cdr(msg, msgtype))


def copy_messages(src: Path, dst: Path, keep=lambda index: True) -> int:
    """Rewrite bag `src` as a new mcap bag folder `dst` (rosbags Writer) with the messages whose
    index (in record order) passes `keep`; returns how many were written."""
    from rosbags.rosbag2 import Reader

    n = 0
    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as out:
        conns = {
            c.id: out.add_connection(c.topic, c.msgtype, typestore=TYPESTORE)
            for c in reader.connections
        }
        for index, (conn, record_ns, raw) in enumerate(reader.messages()):
            if keep(index):
                out.write(conns[conn.id], record_ns, raw)
                n += 1
    return n


def split_bag(src: Path, dst: Path, n_parts: int = 2, metadata: bool = False) -> list[Path]:
    """Cut bag `src` into `n_parts` mcap files dst/<name>_<k>.mcap, in record order, as rosbag2
    splits a recording; with `metadata`, also write the metadata.yaml listing them."""
    import shutil

    import yaml
    from rosbags.rosbag2 import Reader

    with Reader(src) as reader:
        total = reader.message_count
    dst.mkdir(parents=True)
    bounds = [round(k * total / n_parts) for k in range(n_parts + 1)]
    parts, infos = [], []
    for k in range(n_parts):
        tmp = dst.parent / f".{dst.name}_part{k}"
        copy_messages(src, tmp, lambda i, k=k: bounds[k] <= i < bounds[k + 1])
        part = dst / f"{dst.name}_{k}.mcap"
        shutil.move(next(tmp.glob("*.mcap")), part)
        infos.append(yaml.safe_load((tmp / "metadata.yaml").read_text()))
        shutil.rmtree(tmp)
        parts.append(part)
    if metadata:
        info = infos[0]["rosbag2_bagfile_information"]
        info["relative_file_paths"] = [p.name for p in parts]
        counts: dict[str, int] = {}
        for other in infos:
            for entry in other["rosbag2_bagfile_information"]["topics_with_message_count"]:
                name = entry["topic_metadata"]["name"]
                counts[name] = counts.get(name, 0) + entry["message_count"]
        for entry in info["topics_with_message_count"]:
            entry["message_count"] = counts[entry["topic_metadata"]["name"]]
        info["message_count"] = sum(counts.values())
        files = []
        for part, other in zip(parts, infos, strict=True):
            (file_info,) = other["rosbag2_bagfile_information"]["files"]
            files.append({**file_info, "path": part.name})
        info["files"] = files
        last = infos[-1]["rosbag2_bagfile_information"]
        end = last["starting_time"]["nanoseconds_since_epoch"] + last["duration"]["nanoseconds"]
        info["duration"]["nanoseconds"] = end - info["starting_time"]["nanoseconds_since_epoch"]
        (dst / "metadata.yaml").write_text(yaml.safe_dump(infos[0]))
    return parts
