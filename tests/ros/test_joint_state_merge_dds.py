"""Joint states from two driver processes over DDS (ros2_control's broadcaster for the arm, a
separate gripper driver): policy_node merges them by name and acts, instead of rejecting every
message as "joint(s) missing" and holding forever. A message that repeats a joint name is
skipped, counted and warned about once; a driver that stops makes the node hold naming its
joint.

    arm_driver     fake_sensors: j1..j6 at 100 Hz (+ the camera)
    gripper_driver fake_sensors: finger at 50 Hz
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from std_msgs.msg import Float64MultiArray

from .policy_node_harness import NO_URDF, NodeGroup, NodeProcess, Probe, make_tiny_checkpoint

pytestmark = pytest.mark.ros

ARM = [f"j{i}" for i in range(1, 7)]
GRIPPER = "finger"
NODE = "pn_merge"
TOPIC = "/merge_test/commands"
MOD = "diffusion_policy_node.ros."


def _driver(
    tmp: Path, name: str, joints: list[str], joint_rate_hz: float, *extra: str
) -> NodeProcess:
    """A fake_sensors process named `name` publishing `joints` at `joint_rate_hz`."""
    return NodeProcess(
        MOD + "testing.fake_sensors",
        ["-r", f"__node:={name}", "-p", f"joint_names:={joints}",
         "-p", f"joint_rate_hz:={joint_rate_hz}", *extra],
        tmp / f"{name}.log",
    )  # fmt: skip


class Robot(NodeGroup):
    def __init__(self, tmp: Path) -> None:
        ckpt = make_tiny_checkpoint(tmp / "ckpt", joints=[*ARM, GRIPPER])
        self.probe = Probe("merge_test_probe")
        self.probe.subscribe(TOPIC, Float64MultiArray)
        self.node = NodeProcess(
            MOD + "policy_node",
            [
                "-r", f"__node:={NODE}", "-p", f"checkpoint:={ckpt}", *NO_URDF,
                "-p", "torch_threads:=1", "-p", "warmup_runs:=1", "-p", "max_obs_age:=0.8",
                "-p", "output_mode:=stream", "-p", f"output_topic:={TOPIC}",
            ],
            tmp / "node.log",
        )  # fmt: skip
        self.arm = _driver(tmp, "arm_driver", ARM, 100.0, "-p", "rate_hz:=30.0")
        self.gripper = _driver(
            tmp, "gripper_driver", [GRIPPER], 50.0,
            "-p", "rate_hz:=1.0", "-p", "camera_topics:=[/gripper_driver/unused_image]",
        )  # fmt: skip
        self.procs = [self.node, self.arm, self.gripper]


@pytest.fixture(scope="module")
def robot(tmp_path_factory: pytest.TempPathFactory, ros_domain_id: int):
    with Robot(tmp_path_factory.mktemp("merge")) as r:
        yield r


def _wait_commands(robot: Robot, timeout: float) -> None:
    start = time.monotonic()

    def flowing() -> bool:
        for p in robot.procs:
            if not p.alive():
                raise RuntimeError(f"{p.log_path.name} exited early:\n{robot.logs()}")
        return len(robot.probe.since(TOPIC, start)) >= 5

    try:
        robot.probe.wait_for(flowing, timeout, "commands from the policy node")
    except TimeoutError:
        diag = robot.probe.latest_diag(NODE)
        raise AssertionError(f"no commands; hold_reason {diag.get('hold_reason')!r}") from None


def test_two_publishers_are_merged_and_the_node_acts(robot: Robot) -> None:
    _wait_commands(robot, 90.0)
    diag = robot.probe.diag(NODE)
    assert diag["state"] == "active", diag["message"]
    assert int(diag["bad_joint_states"]) == 0
    (cmd,) = robot.probe.since(TOPIC, time.monotonic() - 1.0)[-1:]
    assert len(cmd.data) == 7


def test_a_duplicate_joint_name_is_skipped_counted_and_warned_once(robot: Robot) -> None:
    _wait_commands(robot, 60.0)
    before = int(robot.probe.diag(NODE)["bad_joint_states"])
    robot.probe.set_parameter("arm_driver", "mode", "duplicate_joint")
    try:
        time.sleep(1.5)
    finally:
        robot.probe.set_parameter("arm_driver", "mode", "normal")
    diag = robot.probe.diag(NODE)
    assert int(diag["bad_joint_states"]) > before + 20  # every 2nd message at 100 Hz
    assert diag["state"] == "active", diag["message"]  # the good half keeps it going
    warns = [ln for ln in robot.node.log().splitlines() if "appear more than once" in ln]
    assert len(warns) == 1, warns
    assert "['j1']" in warns[0] and "WARN" in warns[0]


def test_a_silent_gripper_driver_holds_naming_its_joint(robot: Robot) -> None:
    _wait_commands(robot, 60.0)
    assert robot.probe.trigger("/gripper_driver/pause_joints").success
    try:
        deadline = time.monotonic() + 15.0
        diag = robot.probe.diag(NODE)
        while diag["state"] != "holding" and time.monotonic() < deadline:
            diag = robot.probe.diag(NODE)
        assert diag["state"] == "holding", diag["message"]
        assert f"oldest joint(s): {{'{GRIPPER}':" in diag["hold_reason"]
    finally:
        assert robot.probe.trigger("/gripper_driver/resume_joints").success
    _wait_commands(robot, 30.0)
