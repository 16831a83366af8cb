"""`jtc_consumer` (test tool, not a product node): a stand-in for ros2_control's
joint_trajectory_controller topic interface, for trying the policy node without a robot.

    jtc_consumer --ros-args -p topic:=/arm_controller/joint_trajectory -p record_path:=out.jsonl

Executes `trajectory_msgs/JointTrajectory` messages with `runtime.TrajectoryFollower` (JTC
semantics: a new message replaces the old one, header.stamp zero means now, linear
interpolation, hold after the last point, an empty message holds the current position). A
message whose time_from_start is not strictly increasing, whose joints do not match, or that
holds NaN/inf is rejected and logged, like JTC does. The interpolated command is published as
JointState on `~/commanded` at `sample_rate_hz` (the simulation reuses this as its position
target) and, with `record_path`, every received/rejected message and every sampled command is
written as one JSON line (flushed), so tests in another process can check what arrived.
"""

from __future__ import annotations

import json
import sys
from typing import IO

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.ros.conversions import (
    is_zero_stamp,
    joint_state_msg,
    stamp_to_sec,
    trajectory_points_from_msg,
)
from diffusion_policy_node.ros.node_main import run_node
from diffusion_policy_node.ros.parameters import ParamSpec, declare_parameters
from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "topic", "string", "/arm_controller/joint_trajectory", "JointTrajectory topic to execute."
    ),
    ParamSpec("joint_names", "string_array", [], "Controller joints; unset: the first message's."),
    ParamSpec(
        "initial_positions",
        "double_array",
        [],
        "Position before any trajectory; unset: zeros.",
    ),
    ParamSpec("sample_rate_hz", "double", 100.0, "Command sample rate."),
    ParamSpec("record_path", "string", "", "JSON-lines record; empty: none."),
)


class JtcConsumer(Node):
    """See the module docstring. `commanded(t)` gives the position command at time `t`."""

    def __init__(self, node_name: str = "jtc_consumer") -> None:
        super().__init__(node_name)
        g = declare_parameters(self, PARAMS)
        names, initial = g["joint_names"], g["initial_positions"]
        self.joint_names: list[str] | None = list(names) or None
        self._initial = np.asarray(initial, dtype=np.float64) if len(initial) else None
        if (
            self.joint_names
            and self._initial is not None
            and self._initial.shape != (len(self.joint_names),)
        ):
            raise ValueError(
                f"parameter initial_positions has {self._initial.size} values for "
                f"{len(self.joint_names)} joint_names"
            )
        self.follower = TrajectoryFollower(dof=len(self.joint_names) if self.joint_names else None)
        self.received = 0
        self.rejected = 0
        path = g["record_path"]
        self._record: IO[str] | None = open(path, "a", buffering=1) if path else None  # noqa: SIM115
        topic = g["topic"]
        self.create_subscription(JointTrajectory, topic, self._on_trajectory, 10)
        self._pub = self.create_publisher(JointState, "~/commanded", 10)
        rate = float(g["sample_rate_hz"])
        if not rate > 0:
            raise ValueError(f"parameter sample_rate_hz={rate}: must be > 0")
        self.create_timer(1.0 / rate, self._on_sample)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _write(self, record: dict) -> None:
        if self._record is not None:
            self._record.write(json.dumps(record) + "\n")

    def _current(self, now: float, dof: int) -> np.ndarray:
        cur = self.follower.sample(now)
        if cur is not None:
            return cur
        if self._initial is not None:
            return self._initial
        return np.zeros(dof)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        now = self._now()
        stamp = None if is_zero_stamp(msg.header.stamp) else stamp_to_sec(msg.header.stamp)
        try:
            names, times, positions, vel, acc = trajectory_points_from_msg(msg, self.joint_names)
            if self.joint_names is None and names:
                self.joint_names = names
            dof = len(self.joint_names) if self.joint_names else positions.shape[1]
            current = self._current(now, dof)
            self.follower.set_trajectory(
                times,
                positions,
                start_time=stamp,
                now=now,
                current_position=current,
                velocities=vel,
                accelerations=acc,
                from_desired=True,
            )
        except ValueError as exc:
            self.rejected += 1
            self.get_logger().error(f"trajectory rejected: {exc}")
            self._write({"event": "rejected", "t": now, "reason": str(exc)})
            return
        self.received += 1
        self._write(
            {
                "event": "trajectory",
                "t": now,
                "stamp": stamp,
                "joint_names": list(msg.joint_names),
                "times": times.tolist(),
                "positions": positions.tolist(),
            }
        )

    def _on_sample(self) -> None:
        now = self._now()
        cmd = self.commanded(now)
        if cmd is None:
            return
        stamp = self.get_clock().now().to_msg()
        self._pub.publish(joint_state_msg(self.joint_names or [], cmd, stamp))
        self._write({"event": "command", "t": now, "positions": cmd.tolist()})

    def commanded(self, t: float) -> np.ndarray | None:
        """Position command at `t` (None before the first trajectory)."""
        return self.follower.sample(t)

    def close(self) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None


def main(argv: list[str] | None = None) -> int:
    return run_node(
        JtcConsumer,
        "jtc_consumer",
        argv,
        on_exit=JtcConsumer.close,
        description=__doc__,
        parameters=PARAMS,
    )


if __name__ == "__main__":
    sys.exit(main())
