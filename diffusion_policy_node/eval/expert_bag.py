"""A short recorded episode to try `dp-play` on: the scripted expert on the bundled MuJoCo arm,
written with the package's bag writer in the shape recorder_node gives on sim time (header
stamps from 1 s, record time 1 ms later; camera and joint states at 20 Hz, one
JointTrajectory command per 0.1 s control step).

    python -m diffusion_policy_node.eval.expert_bag runs/play_bag [--seconds 3] [--seed 1000]
    dp-play runs/play_bag --compare models/sim_arm_diffusion --out runs/play
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

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


def _header(types: Any, t_ns: int, frame_id: str = "") -> object:
    stamp = types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def write_expert_bag(path: Path, seconds: float = 3.0, seed: int = 1000) -> dict[str, int]:
    """Camera (96x96 rgb8) and joint states at 20 Hz, expert trajectories at 10 Hz (one point
    at time_from_start = dt, stamped with the step's time); returns messages per topic."""
    task = ArmTask(ArmTaskConfig(control_dt=DT, time_limit=seconds + 1.0))
    try:
        task.reset(seed)
        expert = ScriptedExpert(task, seed=seed)
        expert.reset()
        with BagWriter(path) as bag:
            T = bag.typestore.types

            def _cdr(msg: object, msgtype: str) -> bytes:
                # the typestore's serializer, as the wire payloads recorder_node stores
                # (rclpy's serialize_message pads the end, which the bag reader refuses)
                return bytes(bag.typestore.serialize_cdr(msg, msgtype))

            for topic, msgtype in TOPICS.items():
                bag.add_topic(topic, msgtype)
            sub = round(DT / SENSOR_DT)
            for k in range(round(seconds / SENSOR_DT)):
                t_ns = round((T0 + k * SENSOR_DT) * 1e9)
                rec = t_ns + LATENCY_NS
                js = T["sensor_msgs/msg/JointState"](
                    header=_header(T, t_ns),
                    name=list(JOINT_NAMES),
                    position=np.asarray(task.joint_positions(), np.float64),
                    velocity=np.asarray(task.joint_velocities(), np.float64),
                    effort=np.zeros(0),
                )
                bag.write(JOINTS, rec, _cdr(js, TOPICS[JOINTS]))
                rgb = np.ascontiguousarray(task.render(), np.uint8)
                img = T["sensor_msgs/msg/Image"](
                    header=_header(T, t_ns, "camera"),
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
                        header=_header(T, t_ns), joint_names=list(JOINT_NAMES), points=[point]
                    )
                    bag.write(COMMANDS, rec, _cdr(traj, TOPICS[COMMANDS]))
                    task.set_joint_targets(target)
                task.step_physics(SENSOR_DT)
            return bag.close()
    finally:
        task.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffusion_policy_node.eval.expert_bag",
        description="Write one scripted-expert episode of the bundled arm as a rosbag2 bag.",
    )
    parser.add_argument("out", type=Path, help="bag folder to write (must not exist)")
    parser.add_argument("--seconds", type=float, default=3.0, help="episode length (sim s)")
    parser.add_argument("--seed", type=int, default=1000, help="layout seed")
    args = parser.parse_args(argv)
    if args.out.exists():
        parser.error(f"{args.out} exists")
    counts = write_expert_bag(args.out, seconds=args.seconds, seed=args.seed)
    print(json.dumps({"bag": str(args.out), "messages": counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
