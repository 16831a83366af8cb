"""Labels of a JointTrajectory stream whose send times jitter: no staircases.

An expert publishes a one-point arm trajectory (to be reached 0.1 s later) every 0.1 s, its
timer jittering by up to +-15 ms (a busy machine), header-stamped when sent; the arm moves at a
constant speed. The grid starts on the first command, so it sits on the command times: reading
the newest command at each step repeats one (a stair) whenever a command is a little late and
skips one when it is early. The labels are what a joint_trajectory_controller fed the commands
commands at t + dt: a smooth ramp, no repeated step.
"""

from __future__ import annotations

import numpy as np

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.data.config import DataConfig

from .data_fixtures import TYPESTORE, arm_group, grouped_config, write_records

T0 = 1_700_000_000_000_000_000
DT_NS = 100_000_000
SPEED = 0.2  # rad/s of the commanded ramp
ARM = ["a1", "a2"]


def _header(t_ns: int):
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="")


def _ramp(t_ns: int) -> np.ndarray:
    s = (t_ns - T0) * 1e-9
    return np.array([SPEED * s, -SPEED * s])


def write_recording(path, n_commands: int = 40, jitter_ms: float = 15.0, seed: int = 0) -> None:
    T = TYPESTORE.types
    rng = np.random.default_rng(seed)
    out = []  # (record ns, topic, type, msg)
    for k in range(n_commands * 10 + 20):  # joint states, 100 Hz: the ramp, 0.1 s behind
        t = T0 + k * 10_000_000
        msg = T["sensor_msgs/msg/JointState"](
            header=_header(t), name=list(ARM), position=_ramp(t - DT_NS),
            velocity=np.zeros(0), effort=np.zeros(0),
        )  # fmt: skip
        out.append((t + 1_000_000, "/joint_states", "sensor_msgs/msg/JointState", msg))
    for f in range(n_commands + 2):  # camera, 10 Hz
        t = T0 + f * DT_NS
        msg = T["sensor_msgs/msg/Image"](
            header=_header(t), height=8, width=8, encoding="rgb8", is_bigendian=0, step=24,
            data=np.full(8 * 8 * 3, f % 256, np.uint8),
        )  # fmt: skip
        out.append((t + 2_000_000, "/camera/image_raw", "sensor_msgs/msg/Image", msg))
    for m in range(n_commands):  # sent at m * 0.1 s + jitter, to arrive 0.1 s after m * 0.1 s
        nominal = T0 + 50_000_000 + m * DT_NS
        sent = nominal + (0 if m == 0 else int(rng.uniform(-jitter_ms, jitter_ms) * 1e6))
        tfs = nominal + DT_NS - sent
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=_ramp(nominal + DT_NS), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](
                sec=0, nanosec=tfs),
        )  # fmt: skip
        jt = T["trajectory_msgs/msg/JointTrajectory"](
            header=_header(sent), joint_names=list(ARM), points=[point]
        )
        out.append((sent + 1_000_000, "/arm_controller/joint_trajectory",
                    "trajectory_msgs/msg/JointTrajectory", jt))  # fmt: skip
    write_records(path, out)


def config() -> DataConfig:
    return grouped_config(ARM, [arm_group(ARM)])


def newest_command_labels(bag, grid: np.ndarray) -> np.ndarray:
    """The other reading: the point of the newest command sent at or before each step."""
    from rosbags.highlevel import AnyReader

    sent, points = [], []
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == "/arm_controller/joint_trajectory"]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            sent.append(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
            points.append(np.asarray(msg.points[0].positions))
    idx = np.searchsorted(np.array(sent), grid, side="right") - 1
    return np.stack(points)[idx]


def test_jittering_commands_give_smooth_labels_at_t_plus_dt(tmp_path, capsys):
    repeated, steps, stairs = 0, 0, 0
    for seed in range(4):
        bag = tmp_path / f"bag{seed}"
        write_recording(bag, seed=seed)
        (ep,) = read_bag(bag, config()).episodes
        newest = newest_command_labels(bag, ep.times_ns)
        stairs += int(np.sum(np.abs(np.diff(newest[:, 0])) < 1e-9))
        assert len(ep) >= 30
        d = np.diff(ep.action[:, 0])
        repeated += int(np.sum(np.abs(d) < 1e-9))
        steps += len(d)
        # every step moves about SPEED * dt: no stair (0) and no skip (2 steps at once)
        np.testing.assert_allclose(d, SPEED * 0.1, atol=0.3 * SPEED * 0.1)
        # the label of step t is where the commands put the arm at t + dt (the ramp, up to
        # the jitter of the command in force: 15 ms at SPEED)
        np.testing.assert_allclose(
            ep.action[1:],
            np.stack([_ramp(int(t) + DT_NS) for t in ep.times_ns[1:]]),
            atol=SPEED * 0.016,
        )
    with capsys.disabled():
        print(
            f"\nrepeated label steps of {steps}: newest command at t {stairs}, "
            f"controller's command at t + dt {repeated}"
        )
    assert stairs > 0.05 * steps  # the recording does make stairs when read the other way
    assert repeated == 0, f"{repeated} of {steps} label steps repeat the previous one"
