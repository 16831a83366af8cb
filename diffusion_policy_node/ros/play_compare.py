"""`dp-play --compare`: a policy node fed by the playback, its commands recorded on the playback
clock and compared with the bag's recorded actions (see ros/play_node.py's docstring).

`CommandRecorder` turns every command message of the checkpoint's action groups into a
`train.replay.NodeCommand` stamped with its receive time on the playback clock; `Comparison`
starts (or attaches to) the policy node, holds the clock at the bag's start until the node is
active and subscribed, and writes the report: `train.replay.compare_node_commands` on the bag's
episodes (the checkpoint's data settings), MAE/RMSE per joint, compare.json, compare.png.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.action_groups import ActionGroup
from diffusion_policy_node.eval.graph_requirements import requirements_of
from diffusion_policy_node.policy.checkpoint import read_config
from diffusion_policy_node.ros.conversions import is_zero_stamp, stamp_to_sec
from diffusion_policy_node.train.replay import (
    NodeCommand,
    _data_config,
    compare_node_commands,
    plot_comparison,
)


class BagPlayer(Protocol):
    """What the comparison needs of `ros.play_node.BagPlayer` (which imports this module)."""

    bag_topics: dict[str, str]
    counts: dict[str, int]
    publishers: dict[str, Any]
    start_ns: int | None
    topics: list[str]

    def now_ns(self) -> int: ...

    def hold(self, t_ns: int, seconds: float | None, until: Any = None) -> bool: ...


NS = 1_000_000_000
POLICY_NODE = "dp_play_policy"


class CommandRecorder:
    """Subscribes to the command topics of the action groups; every message becomes a
    `NodeCommand` stamped with its receive time on the playback clock."""

    def __init__(self, node: Node, player: BagPlayer, groups: Sequence[ActionGroup]) -> None:
        self._cmd = NodeCommand
        self.player = player
        self.commands: dict[str, list[Any]] = {g.name: [] for g in groups}
        self.rejected: dict[str, int] = {g.name: 0 for g in groups}
        self._lock = threading.Lock()
        for g in groups:
            msg_type = JointTrajectory if g.is_trajectory else Float64MultiArray
            node.create_subscription(
                msg_type, g.topic, lambda msg, g=g: self._on_msg(g, msg), QoSProfile(depth=100)
            )

    def _on_msg(self, group: ActionGroup, msg: Any) -> None:
        receive_ns = self.player.now_ns()
        try:
            cmd = self._convert(group, msg, receive_ns)
        except ValueError:
            with self._lock:
                self.rejected[group.name] += 1
            return
        with self._lock:
            self.commands[group.name].append(cmd)

    def _convert(self, group: ActionGroup, msg: Any, receive_ns: int) -> Any:
        d = len(group.joints)
        if not group.is_trajectory:
            data = np.asarray(msg.data, np.float64)
            if data.shape != (d,):
                raise ValueError(f"{group.topic}: {data.size} values, expected {d}")
            return self._cmd(receive_ns, None, np.zeros(0), data.reshape(1, d))
        names = list(msg.joint_names)
        start = (
            None if is_zero_stamp(msg.header.stamp) else round(stamp_to_sec(msg.header.stamp) * NS)
        )
        if not msg.points:  # a hold: the controller stops where it is
            return self._cmd(receive_ns, start, np.zeros(0), np.zeros((0, d)))
        missing = [j for j in group.joints if j not in names]
        if missing:
            raise ValueError(f"{group.topic}: joints {missing} missing")
        cols = [names.index(j) for j in group.joints]
        tfs = np.array(
            [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        )
        positions = np.array([np.asarray(p.positions, np.float64)[cols] for p in msg.points])
        return self._cmd(receive_ns, start, tfs, positions)

    def snapshot(self) -> dict[str, list[Any]]:
        with self._lock:
            return {k: list(v) for k, v in self.commands.items()}


def _status(node: Node, name: str, timeout: float) -> dict[str, Any] | None:
    """The JSON of /<name>/status, or None when it does not answer within `timeout`."""
    client = node.create_client(Trigger, f"/{name}/status")
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return None
        future = client.call_async(Trigger.Request())
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(timeout) or future.result() is None:
            return None
        return json.loads(future.result().message)
    finally:
        node.destroy_client(client)


class Comparison:
    """`--compare`: the checkpoint, its policy node and the recorded commands."""

    def __init__(self, args: argparse.Namespace, bags: list[Path]) -> None:
        self.args = args
        self.bags = bags
        self.checkpoint = Path(args.compare)
        self.config, meta = read_config(self.checkpoint)
        self.data_config = _data_config(args.data_config, meta)
        self.req = requirements_of(self.config, meta)
        self.groups = self.req.groups
        self.out = Path(args.out or f"runs/play-{time.strftime('%Y%m%d-%H%M%S')}")
        self.policy_name = args.attach.strip("/") or POLICY_NODE
        self.proc: subprocess.Popen | None = None

    @property
    def inputs(self) -> list[str]:
        return [*self.req.cameras, self.req.joint_state_topic]

    def start_policy(self) -> None:
        if self.args.attach:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "diffusion_policy_node.ros.policy_node", "--ros-args",
            "-r", f"__node:={self.policy_name}",
            "-p", f"checkpoint:={self.checkpoint.resolve()}",
            "-p", "use_sim_time:=true",
            *(["-p", f"robot_description_file:={Path(self.args.urdf).resolve()}"]
              if getattr(self.args, "urdf", None) else []),
            *(a for item in self.args.policy_param for a in ("-p", item)),
        ]  # fmt: skip
        with open(self.out / "policy_node.log", "w") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )

    def stop_policy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait_ready(self, node: Node, player: BagPlayer) -> None:
        """Hold the clock at the bag's start until the policy node is active and subscribed to
        the played camera and joint-state topics; RuntimeError naming what it waits for."""
        unrecorded = [
            g.topic
            for g in self.groups
            if g.source == "command" and g.topic not in player.bag_topics
        ]
        if unrecorded:
            raise ValueError(
                f"the bag has no recorded commands on {unrecorded} to compare with; it has "
                f"{sorted(player.bag_topics)}"
            )
        missing = [t for t in self.inputs if t not in player.publishers]
        if missing:
            raise ValueError(
                f"the checkpoint reads {missing}, which the bag does not have (or --topics "
                f"left out); the bag has {player.topics}"
            )
        deadline = time.monotonic() + self.args.ready_timeout
        state = {"lifecycle": None}

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"policy_node exited with {self.proc.returncode}; see "
                    f"{self.out}/policy_node.log"
                )
            if time.monotonic() > deadline:
                unheard = [
                    t for t in self.inputs if player.publishers[t].get_subscription_count() == 0
                ]
                raise RuntimeError(
                    f"policy node /{self.policy_name} not ready after {self.args.ready_timeout} s "
                    f"(lifecycle {state['lifecycle']}, not subscribed to {unheard})"
                )
            if state["lifecycle"] != "active":
                status = _status(node, self.policy_name, 0.5)
                state["lifecycle"] = None if status is None else status.get("lifecycle")
                return False
            return all(player.publishers[t].get_subscription_count() > 0 for t in self.inputs)

        player.hold(player.start_ns or 0, None, until=ready)

    def report(
        self, recorder: CommandRecorder, player: BagPlayer, wall_s: float
    ) -> dict[str, Any]:
        from diffusion_policy_node.data.bag_reader import read_bag

        commands = recorder.snapshot()
        episodes, offsets = [], {}
        for bag in self.bags:
            contents = read_bag(bag, self.data_config)
            episodes += contents.episodes
            offsets[str(bag)] = contents.summary.get("clock_offsets_ms")
        if not episodes:
            raise ValueError(f"no episode in {[str(b) for b in self.bags]} with the data settings")
        if not any(commands.values()):
            raise RuntimeError(
                f"the policy node published no command on {[g.topic for g in self.groups]} "
                f"while the bag played; see {self.out}/policy_node.log"
            )
        cmp = compare_node_commands(
            episodes, self.groups, commands, list(self.config.joint_names), self.config.dt
        )
        if cmp.errors.count == 0:
            raise RuntimeError("the policy node's commands all came after the recorded actions")
        per_joint = cmp.errors.per_joint()
        png = plot_comparison(
            self.out / "compare.png",
            cmp.errors.joint_names,
            cmp.recorded,
            cmp.commanded,
            per_joint,
            title=f"{self.checkpoint}: policy_node on the playback (sim time) vs recorded, "
            f"rate {self.args.rate:g}",
        )
        first = [c[0].receive_ns for c in commands.values() if c]
        report = {
            "mode": "ros",
            "checkpoint": str(self.checkpoint),
            "policy_node": self.policy_name,
            "bags": [str(b) for b in self.bags],
            "rate": self.args.rate,
            "episodes": len(episodes),
            "steps": cmp.steps,
            "compared": cmp.errors.count,
            "coverage": round(cmp.errors.count / cmp.steps, 4),
            "mae": cmp.errors.mae,
            "rmse": cmp.errors.rmse,
            "per_joint": per_joint,
            "commands": {k: len(v) for k, v in commands.items()},
            "rejected_commands": dict(recorder.rejected),
            "first_command_after_s": round((min(first) - (player.start_ns or 0)) / NS, 3),
            "clock_offsets_ms": offsets,
            "played": dict(player.counts),
            "png": str(png),
            "wall_s": round(wall_s, 1),
            "sources": cmp.sources,
        }
        (self.out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
        return report
