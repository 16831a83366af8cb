"""ROS message <-> numpy conversions used by the nodes (no node logic here).

Images go through `diffusion_policy_node.data.images` (the same decoder and resize the training
pipeline uses), so the policy sees identical pixels at training and at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.data.images import (
    ImageDecodeError,
    check_raw_encoding,
    decode_compressed_image,
    decode_raw_image,
    resize_image,
)

NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------------------------- time
def stamp_to_sec(stamp: Time) -> float:
    """`builtin_interfaces/Time` → float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Float seconds (>= 0) → `builtin_interfaces/Time`."""
    ns = round(t * NS_PER_S)
    if ns < 0:
        raise ValueError(f"cannot express a negative time {t!r} s as builtin_interfaces/Time")
    return Time(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def sec_to_duration(t: float) -> Duration:
    """Float seconds (>= 0) → `builtin_interfaces/Duration`."""
    ns = round(t * NS_PER_S)
    if ns < 0:
        raise ValueError(f"time_from_start must be >= 0, got {t!r} s")
    return Duration(sec=ns // NS_PER_S, nanosec=ns % NS_PER_S)


def duration_to_sec(d: Duration) -> float:
    return d.sec + d.nanosec * 1e-9


def is_zero_stamp(stamp: Time) -> bool:
    return stamp.sec == 0 and stamp.nanosec == 0


# ---------------------------------------------------------------------------------- images
def check_image_msg(msg: Image | CompressedImage, where: str) -> None:
    """Cheap checks that can run in a subscription callback (no decoding): a supported raw
    encoding and non-empty data. Raises `ImageDecodeError` naming `where`."""
    if isinstance(msg, CompressedImage):
        if len(msg.data) == 0:
            raise ImageDecodeError(f"{where}: compressed image ({msg.format!r}) has no data")
    else:
        check_raw_encoding(msg.encoding, where)
        if msg.height == 0 or msg.width == 0 or len(msg.data) == 0:
            raise ImageDecodeError(
                f"{where}: empty image ({msg.width}x{msg.height}, {len(msg.data)} bytes)"
            )


def image_msg_to_rgb(
    msg: Image | CompressedImage, size: tuple[int, int], where: str
) -> np.ndarray:
    """Decode an Image/CompressedImage and resize it to `size` (H, W): (H, W, 3) uint8 RGB.

    Raises `ImageDecodeError` (a ValueError) for unsupported encodings or inconsistent fields.
    """
    if isinstance(msg, CompressedImage):
        rgb = decode_compressed_image(msg.format, msg.data, where)
    else:
        rgb = decode_raw_image(msg.encoding, msg.height, msg.width, msg.step, msg.data, where)
    return resize_image(rgb, size)


def rgb_to_image_msg(rgb: np.ndarray, stamp: Time, frame_id: str = "camera") -> Image:
    """(H, W, 3) uint8 RGB → `sensor_msgs/Image` (rgb8)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got shape {rgb.shape}")
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = rgb.tobytes()
    return msg


# ---------------------------------------------------------------------------------- joints
def joint_state_msg(names: Sequence[str], positions: Sequence[float], stamp: Time) -> JointState:
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(names)
    msg.position = [float(p) for p in positions]
    return msg


# ---------------------------------------------------------------------------------- commands
def trajectory_msg(
    joint_names: Sequence[str],
    stamp: Time,
    times_from_start: Sequence[float],
    positions: np.ndarray,
    velocities: np.ndarray | None = None,
    accelerations: np.ndarray | None = None,
) -> JointTrajectory:
    """`JointTrajectory` with one point per row of `positions` (K, D) at `times_from_start`
    (K,) seconds, with `velocities`/`accelerations` (K, D) when given (JTC then interpolates
    cubic/quintic); K = 0 gives the empty trajectory that makes JTC hold its position."""
    shape = (len(times_from_start), len(joint_names))
    positions = np.asarray(positions, dtype=np.float64).reshape(shape)
    extra = [
        None if v is None else np.asarray(v, dtype=np.float64).reshape(shape)
        for v in (velocities, accelerations)
    ]
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    for j, (t, row) in enumerate(zip(times_from_start, positions, strict=True)):
        point = JointTrajectoryPoint()
        point.positions = row.tolist()
        if extra[0] is not None:
            point.velocities = extra[0][j].tolist()
        if extra[1] is not None:
            point.accelerations = extra[1][j].tolist()
        point.time_from_start = sec_to_duration(float(t))
        msg.points.append(point)
    return msg


def trajectory_from_msg(
    msg: JointTrajectory, joint_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(joint_names, times_from_start (P,), positions (P, D)) of a JointTrajectory, columns
    reordered to `joint_names` when given. ValueError for missing joints or ragged points."""
    names, times, positions, _, _ = trajectory_points_from_msg(msg, joint_names)
    return names, times, positions


def trajectory_points_from_msg(
    msg: JointTrajectory, joint_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`trajectory_from_msg` plus the points' velocities and accelerations (P, D), each None
    when no point carries it. ValueError when some points carry them and others do not."""
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        raise ValueError(f"trajectory joint_names contain duplicates: {names}")
    order = np.arange(len(names))
    if joint_names is not None:
        want = list(joint_names)
        missing = [n for n in want if n not in names]
        extra = [n for n in names if n not in want]
        if missing or extra:
            raise ValueError(
                f"trajectory joint_names {names} do not match the controller's joints {want} "
                f"(missing {missing}, unknown {extra})"
            )
        order = np.array([names.index(n) for n in want], dtype=np.intp)
        names = want
    times = np.array([duration_to_sec(p.time_from_start) for p in msg.points], dtype=np.float64)
    rows = []
    for j, point in enumerate(msg.points):
        if len(point.positions) != len(msg.joint_names):
            raise ValueError(
                f"trajectory point {j} has {len(point.positions)} positions for "
                f"{len(msg.joint_names)} joints"
            )
        rows.append(np.asarray(point.positions, dtype=np.float64)[order])
    positions = np.stack(rows) if rows else np.zeros((0, len(names)))
    derivatives = []
    for field in ("velocities", "accelerations"):
        counts = {len(getattr(p, field)) for p in msg.points}
        if counts <= {0}:
            derivatives.append(None)
            continue
        if counts != {len(msg.joint_names)}:
            raise ValueError(
                f"trajectory points carry {sorted(counts)} {field} for "
                f"{len(msg.joint_names)} joints (each point needs all or none)"
            )
        values = np.array([list(getattr(p, field)) for p in msg.points], dtype=np.float64)
        derivatives.append(values[:, order])
    return names, times, positions, derivatives[0], derivatives[1]


def float64_array_msg(values: np.ndarray) -> Float64MultiArray:
    msg = Float64MultiArray()
    msg.data = np.asarray(values, dtype=np.float64).reshape(-1).tolist()
    return msg


# ---------------------------------------------------------------------------------- diagnostics
def _format_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def diagnostic_status(
    name: str, level: bytes, message: str, values: Mapping[str, object], hardware_id: str = ""
) -> DiagnosticStatus:
    """`DiagnosticStatus` with `values` as KeyValue pairs (None → empty string)."""
    status = DiagnosticStatus()
    status.name = name
    status.level = level
    status.message = message
    status.hardware_id = hardware_id
    status.values = [KeyValue(key=k, value=_format_value(v)) for k, v in values.items()]
    return status
