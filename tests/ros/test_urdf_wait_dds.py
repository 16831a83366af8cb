"""The robot's URDF is waited for, not skipped: a robot_state_publisher that comes up 4 s after
the node (with use_sim_time and no /clock) still gives the joint limits — the node used to fall
back to the demonstrated range after 2 s —; a topic that never comes fails configure naming it;
a URDF whose commanded joint has no <limit> fails configure naming the joint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .policy_node_harness import JOINTS, NodeProcess, make_tiny_checkpoint

pytestmark = pytest.mark.ros

TOPIC = "/late_robot_description"


def _urdf(third: str) -> str:
    links = "".join(f'<link name="l{i}"/>' for i in range(4))
    joints = "".join(
        f'<joint name="{n}" type="revolute"><parent link="l{i}"/><child link="l{i + 1}"/>'
        f'<limit lower="-0.9" upper="0.9" velocity="1.0" effort="5"/></joint>'
        for i, n in enumerate(JOINTS[:2])
    )
    return f'<robot name="r">{links}{joints}{third}</robot>'


GOOD_THIRD = (
    f'<joint name="{JOINTS[2]}" type="prismatic"><parent link="l2"/><child link="l3"/>'
    '<limit lower="0.0" upper="0.04" velocity="0.2" effort="5"/></joint>'
    '<ros2_control name="rc" type="system"><hardware><plugin>x</plugin></hardware>'
    "</ros2_control>"
)
NO_LIMIT_THIRD = (
    f'<joint name="{JOINTS[2]}" type="prismatic"><parent link="l2"/><child link="l3"/></joint>'
)


def _node(ckpt: Path, log: Path, *params: str) -> NodeProcess:
    args = ["-p", f"checkpoint:={ckpt}", "-p", "inference_process:=false"]
    args += ["-p", "warmup_runs:=1", "-p", "torch_threads:=1"]
    return NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        args + [a for p in params for a in ("-p", p)],
        log,
    )


def _wait_exit_or(node: NodeProcess, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and node.alive() and text not in node.log():
        time.sleep(0.2)


def test_a_late_robot_description_is_waited_for_under_sim_time(tmp_path, ros_domain_id):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    urdf = tmp_path / "robot.urdf"
    urdf.write_text(_urdf(GOOD_THIRD))
    node = _node(
        ckpt, tmp_path / "node.log", "use_sim_time:=true", f"robot_description_topic:={TOPIC}"
    )
    late = subprocess.Popen(
        [sys.executable, "-m", "tests.ros.late_description", TOPIC, "4.0", str(urdf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        _wait_exit_or(node, "policy_node configured", 90.0)
        log = node.log()
        assert "policy_node configured" in log, log
        assert f"joint limits (URDF from topic {TOPIC}): position from urdf: " in log, log
        assert "demonstrated range" not in log
        assert "Unknown tag" not in log  # the ros2_control tag prints nothing
    finally:
        node.stop(signal.SIGINT)
        late.send_signal(signal.SIGINT)
        late.wait(10)


def test_a_robot_description_that_never_comes_fails_configure_naming_the_topic(
    tmp_path, ros_domain_id
):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    node = _node(
        ckpt,
        tmp_path / "node.log",
        "robot_description_topic:=/nobody/robot_description",
        "robot_description_timeout:=2.0",
    )
    code = node.proc.wait(90)
    log = node.log()
    assert code == 1, log
    assert "no robot description on topic /nobody/robot_description within" in log, log
    assert "robot_description_timeout=2 s (no publisher)" in log


def test_a_urdf_joint_without_limit_fails_configure_naming_it(tmp_path, ros_domain_id):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    urdf = tmp_path / "robot.urdf"
    urdf.write_text(_urdf(NO_LIMIT_THIRD))
    node = _node(ckpt, tmp_path / "node.log", f"robot_description_file:={urdf}")
    code = node.proc.wait(90)
    log = node.log()
    assert code == 1, log
    assert f"joint '{JOINTS[2]}': is prismatic but has no <limit> in the URDF" in log, log
