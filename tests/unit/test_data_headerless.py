"""A header-less gripper topic beside stamped ones: the stamped topics keep their stamps and the
gripper is mapped onto their clock.

The recording: an expert publishes a one-point arm JointTrajectory (stamped) and a gripper
Float64MultiArray (no header) together every 0.1 s, joint states at 100 Hz and a camera at
10 Hz; the recorder receives each message 0-80 ms after it was sent (a busy executor), so the
record times jitter. The test measures the fraction of repeated consecutive arm action steps
(a staircase in the labels) on both time bases.
"""

from __future__ import annotations

import numpy as np

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.data.config import DataConfig

from .data_fixtures import GRIPPER_TOPIC, TYPESTORE, arm_group, grouped_config, write_records

T0 = 1_700_000_000_000_000_000
DT_NS = 100_000_000
ARM = ["a1", "a2"]
GRIPPER_CLOSES_AT = 25  # command index from which the gripper is closed


def _header(t_ns: int):
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="")


def _arm(m: int) -> np.ndarray:
    return np.array([0.01 * m, -0.02 * m])


def write_recording(path, n_commands: int = 50, jitter_ms: float = 80.0, seed: int = 0) -> None:
    T = TYPESTORE.types
    rng = np.random.default_rng(seed)
    out = []  # (record ns, topic, type, msg)
    last: dict[str, int] = {}

    def received(t: int, topic: str) -> int:
        """Sent at t, received 0..jitter_ms later, in order per topic (one subscription)."""
        last[topic] = max(t + int(rng.uniform(0, jitter_ms) * 1e6), last.get(topic, 0))
        return last[topic]

    for k in range(n_commands * 10 + 10):  # joint states, 100 Hz, from t = 0
        t = T0 + k * 10_000_000
        m = max(k // 10 - 1, 0)
        msg = T["sensor_msgs/msg/JointState"](
            header=_header(t),
            name=[*ARM, "finger"],
            position=np.array([*_arm(m), 1.0 if m > GRIPPER_CLOSES_AT else 0.0]),
            velocity=np.zeros(0),
            effort=np.zeros(0),
        )
        out.append((received(t, "js"), "/joint_states", "sensor_msgs/msg/JointState", msg))
    for f in range(n_commands + 1):  # camera, 10 Hz
        t = T0 + f * DT_NS + 60_000_000
        msg = T["sensor_msgs/msg/Image"](
            header=_header(t), height=8, width=8, encoding="rgb8", is_bigendian=0, step=24,
            data=np.full(8 * 8 * 3, f % 256, np.uint8),
        )  # fmt: skip
        out.append((received(t, "cam"), "/camera/image_raw", "sensor_msgs/msg/Image", msg))
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    for m in range(n_commands):  # the expert's commands, both at the same instant
        t = T0 + 20_000_000 + m * DT_NS
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=_arm(m), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=T["builtin_interfaces/msg/Duration"](
                sec=0, nanosec=DT_NS),
        )  # fmt: skip
        jt = T["trajectory_msgs/msg/JointTrajectory"](
            header=_header(t), joint_names=list(ARM), points=[point]
        )
        out.append((received(t, "arm"), "/arm_controller/joint_trajectory",
                    "trajectory_msgs/msg/JointTrajectory", jt))  # fmt: skip
        grip = np.array([1.0 if m >= GRIPPER_CLOSES_AT else 0.0])
        msg = T["std_msgs/msg/Float64MultiArray"](layout=layout, data=grip)
        out.append((received(t, "grip"), "/gripper_controller/commands",
                    "std_msgs/msg/Float64MultiArray", msg))  # fmt: skip
    write_records(path, out)


def config(timestamp_source: str) -> DataConfig:
    gripper = {"name": "gripper", "joints": ["finger"], "topic": GRIPPER_TOPIC,
               "type": "Float64MultiArray"}  # fmt: skip
    return grouped_config(
        [*ARM, "finger"], [arm_group(ARM), gripper], timestamp_source=timestamp_source
    )


def repeated_fraction(action: np.ndarray) -> float:
    """Fraction of consecutive steps whose arm action repeats the previous one."""
    arm = action[:, : len(ARM)]
    return float(np.mean(np.all(arm[1:] == arm[:-1], axis=1)))


def test_a_headerless_gripper_keeps_the_arm_on_header_time(tmp_path, capsys):
    before, after = [], []
    for seed in range(6):  # six recordings with different receipt jitter
        bag = tmp_path / f"bag{seed}"
        write_recording(bag, seed=seed)
        contents = read_bag(bag, config("header"))
        (ep,) = contents.episodes
        summary = contents.summary
        assert summary["time_base"] == "header"
        assert summary["mapped_topics"] == ["/gripper_controller/commands"]
        assert "/gripper_controller/commands has no header" in summary["time_base_note"]
        # Before: the whole bag on record time, as a header-less topic used to force.
        (by_record,) = read_bag(bag, config("record")).episodes
        before.append(repeated_fraction(by_record.action))
        after.append(repeated_fraction(ep.action))
        # Each arm label is the command sent at its grid step (one per step, in order).
        steps = np.round(ep.action[:, 0] / 0.01).astype(int)
        assert np.all(np.diff(steps) == 1)
        # The gripper, mapped by the arm commands' median offset, closes within a step of its
        # command (its receipt jitter is at most 80 ms, the median offset about -40 ms).
        close = int(np.argmax(ep.action[:, 2] > 0.5))
        assert abs(steps[close] - GRIPPER_CLOSES_AT) <= 1
    with capsys.disabled():
        print(
            "\nrepeated consecutive arm action steps per recording: record time "
            f"{[round(f, 3) for f in before]}, header + mapped gripper "
            f"{[round(f, 3) for f in after]}"
        )
    # The arm labels are what the trajectory controller commanded at t + dt from every
    # command received by then (test_data_command_jitter.py), so even on record time the
    # receipt jitter makes no stairs; record time still shifts the labels by the latency.
    assert after == [0.0] * 6
    assert before == [0.0] * 6


def test_a_zero_stamp_still_puts_the_bag_on_record_time(tmp_path):
    write_recording(tmp_path / "bag")
    cfg = config("header")
    offsets = {"/arm_controller/joint_trajectory": (0, 5), "/joint_states": (7, 5)}
    from diffusion_policy_node.data.timebase import choose_time_base

    base = choose_time_base(cfg, {**offsets, "/g": (None, 5)}, "bag", ("/joint_states", [2]))
    assert base.source == "record" and "has header.stamp = 0" in base.note
