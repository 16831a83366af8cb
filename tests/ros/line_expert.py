"""A stand-in for a user's scripted expert (`dp-collect --expert-cmd`): a separate process that
publishes the bundled arm's JointTrajectory commands at 10 Hz of the robot's /clock until SIGINT.

    python -m tests.ros.line_expert --seed 3 --hold 0.5 -1.0

It moves joint1 from 0 towards 0.1 * (seed + 1) rad (joint2 and joint3 hold `--hold`) and
prints the episode it was started for (DP_SEED / DP_EPISODE / DP_ROBOT), so the test sees what
dp-collect gave it.
"""

from __future__ import annotations

import argparse
import os
import sys

import rclpy
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from rclpy.parameter import Parameter
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.ros.node_main import run_node


def expert(seed: int, hold: list[float]) -> Node:
    """The expert's node: joint1 from 0 towards 0.1 * (seed + 1) rad at 0.2 rad/s, joint2 and
    joint3 at `hold`, one JointTrajectory every 0.1 s of the robot's /clock."""
    # On the robot's /clock, as its stamps and the recorder's (dp-collect --sim-time).
    node = rclpy.create_node(
        "line_expert", parameter_overrides=[Parameter("use_sim_time", value=True)]
    )
    pub = node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", 10)
    target = 0.1 * (seed + 1)
    state = {"k": 0}

    def tick() -> None:
        state["k"] += 1
        point = JointTrajectoryPoint(
            positions=[min(0.02 * state["k"], target), *hold],
            time_from_start=Duration(sec=0, nanosec=100_000_000),
        )
        msg = JointTrajectory(joint_names=["joint1", "joint2", "joint3"], points=[point])
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)

    node.create_timer(0.1, tick)
    return node


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--hold", type=float, nargs=2, required=True, help="joint2, joint3 (rad)")
    args = parser.parse_args()
    env = {k: os.environ.get(k) for k in ("DP_SEED", "DP_EPISODE", "DP_ROBOT")}
    print(f"line_expert seed {args.seed} env {env}", flush=True)
    return run_node(
        lambda: expert(args.seed, args.hold),
        "line_expert",
        argv=sys.argv[:1],
        on_exit=lambda node: print("line_expert: stopped", flush=True),
    )


if __name__ == "__main__":
    sys.exit(main())
