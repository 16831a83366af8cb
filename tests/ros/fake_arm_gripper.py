"""A 7-joint arm + 1-joint gripper as a ROS 2 robot, for the action-group DDS test.

    python -m tests.ros.fake_arm_gripper CONFIG.json

CONFIG: {"gripper_type": "JointTrajectory" | "Float64MultiArray", "teleop": bool}

- `/joint_states` (50 Hz) with all 8 joints, following the commands: the arm's
  JointTrajectory on ARM_TOPIC (JTC-like: linear between points, holding the last), the
  gripper's JointTrajectory or Float64MultiArray on GRIPPER_TOPIC[type];
- two cameras (`/scene_camera/image_raw`, `/wrist_camera/image_raw`, rgb8 32x32, 10 Hz) whose
  colours encode the joint positions;
- `/robot_description` (transient local, as robot_state_publisher) with URDF limits;
- with `teleop`, it commands itself (a sine on the arm, an open/close gripper) on the same
  topics at 10 Hz, so a recorder sees a demonstrator's commands.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.ros.node_main import run_node

ARM = [f"arm_joint_{i}" for i in range(1, 8)]
GRIPPER = "finger_joint"
ARM_TOPIC = "/arm_controller/joint_trajectory"
GRIPPER_TOPIC = {
    "JointTrajectory": "/gripper_controller/joint_trajectory",
    "Float64MultiArray": "/gripper_controller/commands",
}
CAMERAS = ["/scene_camera/image_raw", "/wrist_camera/image_raw"]
# URDF limits: arm_joint_1 narrower than the demonstrations (±0.6), so the node must clamp it.
LOWER = [-0.3, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0]
UPPER = [0.3, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0]
VELOCITY = [1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
GRIPPER_LIMIT = (0.0, 0.04, 0.2)
DT = 0.1


def urdf() -> str:
    links = "".join(f'<link name="l{i}"/>' for i in range(9))
    joints = "".join(
        f'<joint name="{n}" type="revolute"><parent link="l{i}"/><child link="l{i + 1}"/>'
        f'<axis xyz="0 0 1"/><limit lower="{lo}" upper="{hi}" velocity="{v}" effort="50"/>'
        "</joint>"
        for i, (n, lo, hi, v) in enumerate(zip(ARM, LOWER, UPPER, VELOCITY, strict=True))
    )
    lo, hi, v = GRIPPER_LIMIT
    joints += (
        f'<joint name="{GRIPPER}" type="prismatic"><parent link="l7"/><child link="l8"/>'
        f'<axis xyz="1 0 0"/><limit lower="{lo}" upper="{hi}" velocity="{v}" effort="20"/>'
        "</joint>"
    )
    return f'<?xml version="1.0"?><robot name="fake_arm_gripper">{links}{joints}</robot>'


def teleop_targets(t: float) -> tuple[np.ndarray, float]:
    """The demonstrator's arm and gripper targets at time t (s)."""
    arm = np.array([0.6 * math.sin(0.8 * t + 0.4 * j) * (0.3 if j else 1.0) for j in range(7)])
    gripper = 0.04 if math.sin(1.5 * t) > 0 else 0.005
    return arm, gripper


class FakeRobot(Node):
    def __init__(self, gripper_type: str, teleop: bool) -> None:
        super().__init__("fake_arm_gripper")
        self.gripper_type = gripper_type
        self.lock = threading.Lock()
        self.q = np.zeros(8)
        self.arm_traj: tuple[float, list[float], np.ndarray] | None = None  # start, tfs, pos
        self.gripper_traj: tuple[float, list[float], np.ndarray] | None = None
        self.js_pub = self.create_publisher(JointState, "/joint_states", 10)
        sensor = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)
        self.cam_pubs = [self.create_publisher(Image, t, sensor) for t in CAMERAS]
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.create_publisher(String, "/robot_description", latched).publish(String(data=urdf()))
        self.create_subscription(JointTrajectory, ARM_TOPIC, self.on_arm, 10)
        gtopic = GRIPPER_TOPIC[gripper_type]
        if gripper_type == "JointTrajectory":
            self.create_subscription(JointTrajectory, gtopic, self.on_gripper_traj, 10)
        else:
            self.create_subscription(Float64MultiArray, gtopic, self.on_gripper_array, 10)
        self.create_timer(0.02, self.step)
        self.create_timer(DT, self.cameras)
        if teleop:
            self.arm_pub = self.create_publisher(JointTrajectory, ARM_TOPIC, 10)
            msg_type = JointTrajectory if gripper_type == "JointTrajectory" else Float64MultiArray
            self.gripper_pub = self.create_publisher(msg_type, gtopic, 10)
            self.create_timer(DT, self.teleop)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _traj(self, msg: JointTrajectory, names: list[str]) -> tuple[float, list, np.ndarray]:
        cols = [list(msg.joint_names).index(n) for n in names]
        tfs = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        pos = np.array([[p.positions[c] for c in cols] for p in msg.points])
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        return (stamp or self.now(), tfs, pos)

    def on_arm(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.arm_traj = self._traj(msg, ARM) if msg.points else None

    def on_gripper_traj(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.gripper_traj = self._traj(msg, [GRIPPER]) if msg.points else None

    def on_gripper_array(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.q[7] = float(msg.data[0])

    @staticmethod
    def _sample(traj: tuple[float, list, np.ndarray], t: float) -> np.ndarray:
        start, tfs, pos = traj
        s = t - start
        return np.array([np.interp(s, tfs, pos[:, j]) for j in range(pos.shape[1])])

    def step(self) -> None:
        t = self.now()
        with self.lock:
            if self.arm_traj is not None:
                self.q[:7] = self._sample(self.arm_traj, t)
            if self.gripper_traj is not None:
                self.q[7] = self._sample(self.gripper_traj, t)[0]
            q = self.q.copy()
        msg = JointState(name=[*ARM, GRIPPER], position=q.tolist())
        msg.header.stamp = self.get_clock().now().to_msg()
        self.js_pub.publish(msg)

    def cameras(self) -> None:
        with self.lock:
            q = self.q.copy()
        stamp = self.get_clock().now().to_msg()
        for c, pub in enumerate(self.cam_pubs):
            rgb = np.zeros((32, 32, 3), np.uint8)
            rgb[:, :, 0] = int(127 + 200 * q[c])
            rgb[:, :, 1] = int(5000 * q[7])
            rgb[:16, :, 2] = 255 * c
            msg = Image(height=32, width=32, encoding="rgb8", step=96, data=rgb.tobytes())
            msg.header.stamp = stamp
            pub.publish(msg)

    def teleop(self) -> None:
        t = self.now()
        arm, gripper = teleop_targets(t + DT)
        stamp = self.get_clock().now().to_msg()
        point = JointTrajectoryPoint(positions=arm.tolist())
        point.time_from_start.nanosec = int(DT * 1e9)
        msg = JointTrajectory(joint_names=ARM, points=[point])
        msg.header.stamp = stamp
        self.arm_pub.publish(msg)
        if self.gripper_type == "JointTrajectory":
            gpoint = JointTrajectoryPoint(positions=[gripper])
            gpoint.time_from_start.nanosec = int(DT * 1e9)
            gmsg = JointTrajectory(joint_names=[GRIPPER], points=[gpoint])
            gmsg.header.stamp = stamp
            self.gripper_pub.publish(gmsg)
        else:
            self.gripper_pub.publish(Float64MultiArray(data=[gripper]))


def main() -> int:
    config = json.loads(Path(sys.argv[1]).read_text())
    return run_node(
        lambda: FakeRobot(config["gripper_type"], bool(config.get("teleop"))),
        "fake_arm_gripper",
        argv=sys.argv[:1],
    )


if __name__ == "__main__":
    sys.exit(main())
