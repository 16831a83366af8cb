"""sim_node with task pick_place over DDS: it looks like a ros2_control robot (arm JTC topic,
gripper forward controller, /joint_states with all seven joints, two cameras, /clock, a
transient-local /robot_description). One sim process (real time) shared by the module."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.ros.conversions import sec_to_duration, stamp_to_sec
from diffusion_policy_node.sim.pick_place import HOME_QPOS, STATE_JOINT_NAMES
from diffusion_policy_node.sim.ur5e_description import ARM_JOINTS

from .sim_node_harness import SimSystem

pytestmark = pytest.mark.ros

SIM = "sim_pick_place_under_test"
WIDTH, HEIGHT = 64, 48
CAMERAS = {"/scene_camera/image_raw": "scene_camera", "/wrist_camera/image_raw": "wrist_camera"}
URDF = Path(__file__).resolve().parents[2] / "description" / "urdf" / "ur5e_gripper.urdf"


class System(SimSystem):
    """Gripper commands go through `float_pub` (/gripper_controller/commands)."""

    def __init__(self, tmp: Path) -> None:
        params = ["-p", "task:=pick_place", "-p", f"image_width:={WIDTH}",
                  "-p", f"image_height:={HEIGHT}", "-p", "camera_rate_hz:=10.0"]  # fmt: skip
        gripper = "/gripper_controller/commands"
        super().__init__(tmp, SIM, list(CAMERAS), params, float_topic=gripper)

    def states_after(self, t_mono: float) -> list[np.ndarray]:
        return [q for _, q in self.joints_after(t_mono, STATE_JOINT_NAMES)]

    def wait_state(self, check, t_mono: float, what: str) -> None:
        self.probe.wait_for(lambda: any(check(q) for q in self.states_after(t_mono)), 30.0, what)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    with System(tmp_path_factory.mktemp("sim_pick_place")) as sys_:
        yield sys_


def test_joint_states_both_cameras_and_clock(system: System) -> None:
    t0 = time.monotonic()
    system.wait_joint_states(t0, 30, STATE_JOINT_NAMES)
    assert (*ARM_JOINTS, "gripper_finger_joint") == STATE_JOINT_NAMES
    assert len(STATE_JOINT_NAMES) == 7
    frames = {}
    for topic, camera in CAMERAS.items():
        images = system.probe.since(topic, 0.0)
        for img in images:
            assert (img.width, img.height, img.encoding, img.step) == (
                WIDTH, HEIGHT, "rgb8", 3 * WIDTH
            )  # fmt: skip
            assert img.header.frame_id == camera
        frames[camera] = np.frombuffer(bytes(images[-1].data), np.uint8).reshape(HEIGHT, WIDTH, 3)
        assert frames[camera].std() > 10
    assert not np.array_equal(frames["scene_camera"], frames["wrist_camera"])
    # Both cameras render on the same ticks (one stamp per frame pair).
    stamps = [{stamp_to_sec(m.header.stamp) for m in system.probe.since(t, 0.0)} for t in CAMERAS]
    assert len(stamps[0] & stamps[1]) >= 3
    clocks = [stamp_to_sec(c.clock) for c in system.probe.since("/clock", t0)]
    assert len(clocks) > 10 and np.all(np.diff(clocks) > 0) and min(clocks) > 1.0


def test_robot_description_is_transient_local_and_the_urdf(system: System) -> None:
    infos = system.probe.node.get_publishers_info_by_topic("/robot_description")
    assert len(infos) == 1
    assert infos[0].qos_profile.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL
    got: list[str] = []
    latched = QoSProfile(
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
    # Subscribed long after the one publication: a latched topic still delivers it.
    system.probe.node.create_subscription(
        String, "/robot_description", lambda m: got.append(m.data), latched
    )
    system.probe.wait_for(lambda: bool(got), 20.0, "the latched /robot_description")
    assert got[0] == URDF.read_text()


def test_arm_follows_a_joint_trajectory_and_the_gripper_its_commands(system: System) -> None:
    goal = HOME_QPOS + np.array([0.15, -0.1, 0.1, 0.05, 0.0, -0.2])
    msg = JointTrajectory()
    msg.joint_names = list(reversed(ARM_JOINTS))  # matched by name, not by order
    point = JointTrajectoryPoint()
    point.positions = [float(v) for v in goal[::-1]]
    point.time_from_start = sec_to_duration(0.8)
    msg.points.append(point)
    t_send = time.monotonic()
    system.traj_pub.publish(msg)  # header.stamp 0: start on receipt
    system.wait_state(
        lambda q: np.max(np.abs(q[:6] - goal)) < 2e-3, t_send, "the arm at the trajectory's goal"
    )
    for width in (0.015, 0.04):
        t_send = time.monotonic()
        system.float_pub.publish(Float64MultiArray(data=[width]))
        system.wait_state(
            lambda q, w=width: abs(q[6] - w) < 1e-3, t_send, f"the gripper at {width} m"
        )
    # A command with the wrong length is rejected, not applied.
    t_send = time.monotonic()
    system.float_pub.publish(Float64MultiArray(data=[0.0, 0.0]))
    time.sleep(0.5)
    assert all(abs(q[6] - 0.04) < 1e-3 for q in system.states_after(t_send))


def test_seeded_reset_and_report(system: System) -> None:
    system.probe.set_parameter(SIM, "seed", 21)
    resp = system.probe.trigger(f"/{SIM}/reset")
    assert resp.success, resp.message
    assert json.loads(resp.message)["episode_seed"] == 21
    report = json.loads(system.probe.trigger(f"/{SIM}/report").message)
    assert report["task"] == "pick_place" and report["episode_seed"] == 21
    assert report["target_bin"] in ("left", "right")
    assert not (report["done"] or report["success"] or report["wrong_bin"] or report["dropped"])
    t0 = time.monotonic()
    system.wait_state(
        lambda q: np.max(np.abs(q - [*HOME_QPOS, 0.04])) < 1e-3, t0, "the home pose after reset"
    )
