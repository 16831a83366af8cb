"""One sim_node process under test and a probe node that reads its topics: what the sim_node
tests of both tasks share."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.ros.conversions import stamp_to_sec

from .policy_node_harness import NodeGroup, NodeProcess, Probe


class SimSystem(NodeGroup):
    """sim_node named `name` started with `params` (`-p` pairs etc.), a probe subscribed to
    /joint_states, /clock and `cameras`, a JointTrajectory publisher on the arm's topic and a
    Float64MultiArray publisher on `float_topic` (a forward controller's). Ready once every
    camera has published 3 images; `close()` fails if the sim exited with an error."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        cameras: Sequence[str],
        params: Sequence[str],
        float_topic: str,
    ) -> None:
        self.probe = Probe(f"{name}_probe")
        self.probe.subscribe("/joint_states", JointState)
        self.probe.subscribe("/clock", Clock)
        for topic in cameras:
            self.probe.subscribe(topic, Image)
        self.sim = NodeProcess(
            "diffusion_policy_node.ros.sim_node",
            ["-r", f"__node:={name}", *params, "-p", "qos_depth:=1000"],  # a starved probe
            tmp / "sim.log",  # thread must not lose messages
        )
        self.procs = [self.sim]
        node = self.probe.node
        self.traj_pub = node.create_publisher(
            JointTrajectory, "/arm_controller/joint_trajectory", 10
        )
        self.float_pub = node.create_publisher(Float64MultiArray, float_topic, 10)
        try:
            self.probe.wait_for(
                lambda: all(len(self.probe.records[t]) >= 3 for t in cameras), 90.0, "images"
            )
        except TimeoutError:
            self.close()
            raise

    def joints_after(self, t_mono: float, names: Sequence[str]) -> list[tuple[float, np.ndarray]]:
        """(stamp, positions in `names` order) of the joint states received after t_mono."""
        out = []
        for msg in self.probe.since("/joint_states", t_mono):
            pos = dict(zip(msg.name, msg.position, strict=True))
            out.append((stamp_to_sec(msg.header.stamp), np.array([pos[n] for n in names])))
        return out

    def wait_joint_states(
        self, t_mono: float, count: int, names: Sequence[str]
    ) -> list[JointState]:
        """At least `count` joint-state messages received after t_mono (waits up to 30 s);
        fails unless each names `names` in that order with a position and a velocity each."""
        self.probe.wait_for(
            lambda: len(self.probe.since("/joint_states", t_mono)) >= count,
            30.0,
            f"{count} joint states",
        )
        msgs = self.probe.since("/joint_states", t_mono)
        for m in msgs:
            assert tuple(m.name) == tuple(names), f"joint names {m.name}, expected {names}"
            sizes = (len(m.position), len(m.velocity))
            assert sizes == (len(names), len(names)), f"positions, velocities: {sizes}"
        return msgs

    def close(self) -> None:
        """Stop the sim and the probe; fail if the sim exited with an error."""
        rc = self.sim.stop()
        self.probe.close()
        if rc != 0:
            raise AssertionError(f"sim_node exited with {rc}:\n{self.sim.log()[-3000:]}")
