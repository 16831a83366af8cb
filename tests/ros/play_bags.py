"""A short recorded episode for the dp-play tests: the scripted expert on the MuJoCo arm, written
with the repo's bag writer in the shape recorder_node gives (sim-time record stamps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_typestore

from diffusion_policy_node.data.bag_writer import BagWriter
from diffusion_policy_node.sim.arm_task import JOINT_NAMES, ArmTask, ArmTaskConfig
from diffusion_policy_node.sim.expert import ScriptedExpert

CAMERA = "/camera/image_raw"
JOINTS = "/joint_states"
COMMANDS = "/arm_controller/joint_trajectory"
TOPICS = {
    CAMERA: "sensor_msgs/msg/Image",
    JOINTS: "sensor_msgs/msg/JointState",
    COMMANDS: "trajectory_msgs/msg/JointTrajectory",
}
T0 = 1.0  # sim_node's time starts at 1 s
DT = 0.1  # the bundled checkpoint's control period
SENSOR_DT = 0.05
LATENCY_NS = 1_000_000  # record time = stamp + 1 ms, as a recorder on sim time sees it
TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types


def _header(t_ns: int, frame_id: str = "") -> object:
    stamp = T["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def _cdr(msg: object, msgtype: str) -> bytes:
    # rosbags' serializer, as the wire payloads recorder_node stores (rclpy's
    # serialize_message pads the end, which the bag reader refuses).
    return bytes(TS.serialize_cdr(msg, msgtype))


def write_expert_bag(path: Path, seconds: float = 3.0, seed: int = 1000) -> dict[str, int]:
    """Camera (96x96 rgb8) and joint states at 20 Hz, expert trajectories at 10 Hz (one point
    at time_from_start = dt, stamped with the step's time); returns messages per topic."""
    task = ArmTask(ArmTaskConfig(control_dt=DT, time_limit=seconds + 1.0))
    try:
        task.reset(seed)
        expert = ScriptedExpert(task, seed=seed)
        expert.reset()
        with BagWriter(path) as bag:
            for topic, msgtype in TOPICS.items():
                bag.add_topic(topic, msgtype)
            sub = round(DT / SENSOR_DT)
            for k in range(round(seconds / SENSOR_DT)):
                t_ns = round((T0 + k * SENSOR_DT) * 1e9)
                rec = t_ns + LATENCY_NS
                js = T["sensor_msgs/msg/JointState"](
                    header=_header(t_ns),
                    name=list(JOINT_NAMES),
                    position=np.asarray(task.joint_positions(), np.float64),
                    velocity=np.asarray(task.joint_velocities(), np.float64),
                    effort=np.zeros(0),
                )
                bag.write(JOINTS, rec, _cdr(js, TOPICS[JOINTS]))
                rgb = np.ascontiguousarray(task.render(), np.uint8)
                img = T["sensor_msgs/msg/Image"](
                    header=_header(t_ns, "camera"),
                    height=rgb.shape[0],
                    width=rgb.shape[1],
                    encoding="rgb8",
                    is_bigendian=0,
                    step=3 * rgb.shape[1],
                    data=rgb.reshape(-1),
                )
                bag.write(CAMERA, rec, _cdr(img, TOPICS[CAMERA]))
                if k % sub == 0:
                    target = expert.act()
                    point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                        positions=np.asarray(target, np.float64),
                        velocities=np.zeros(0),
                        accelerations=np.zeros(0),
                        effort=np.zeros(0),
                        time_from_start=T["builtin_interfaces/msg/Duration"](
                            sec=0, nanosec=round(DT * 1e9)
                        ),
                    )
                    traj = T["trajectory_msgs/msg/JointTrajectory"](
                        header=_header(t_ns), joint_names=list(JOINT_NAMES), points=[point]
                    )
                    bag.write(COMMANDS, rec, _cdr(traj, TOPICS[COMMANDS]))
                    task.set_joint_targets(target)
                task.step_physics(SENSOR_DT)
            return bag.close()
    finally:
        task.close()
