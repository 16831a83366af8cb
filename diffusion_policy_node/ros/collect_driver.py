"""The ROS side of `dp-collect`: drive a running sim_node (expert mode) and recorder_node through
their services, one recorded episode at a time. Prints one JSON line per episode on stdout.

    python -m diffusion_policy_node.ros.collect_driver --episodes 5 --seed 100 \\
        --sim dp_collect_sim --recorder dp_collect_recorder

Per episode: set the sim's `seed` parameter, `~/reset` (the sim is paused), recorder `~/start`,
sim `~/unpause`, poll sim `~/report` until `done` (the sim pauses itself: `pause_on_done`), wait
until the recorder's message counts stop changing (the last messages are in flight), `~/stop`.
`train/collect.py` starts the processes and decides which bags to keep.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from rclpy.executors import Executor
from rclpy.node import Node

from diffusion_policy_node.ros.service_driver import (
    DriverError,
    ServiceDriver,
    driver_parser,
    run_driver_node,
)

SETTLE_S = 0.15


class Driver(ServiceDriver):
    """Drives one sim node and one recorder node through their services."""

    def __init__(
        self, node: Node, executor: Executor, sim: str, recorder: str, timeout: float
    ) -> None:
        super().__init__(node, timeout, executor)
        self.sim = sim.strip("/")
        self.recorder = recorder.strip("/")

    def start_recording(self) -> dict[str, Any]:
        """~/start, retried while the recorder still waits for publishers to appear."""
        deadline = time.monotonic() + self.timeout
        while True:
            ok, message = self.trigger(f"/{self.recorder}/start", must_succeed=False)
            if ok:
                return json.loads(message)
            if "no publisher seen yet" not in message or time.monotonic() > deadline:
                raise DriverError(f"/{self.recorder}/start refused: {message}")
            time.sleep(0.2)

    def wait_settled(self) -> None:
        """Until the recorder's message counts are the same in two polls SETTLE_S apart."""
        deadline = time.monotonic() + self.timeout
        last = None
        while time.monotonic() < deadline:
            counts = self.trigger_json(f"/{self.recorder}/status")["messages"]
            if counts == last:
                return
            last = counts
            time.sleep(SETTLE_S)
        raise DriverError(f"/{self.recorder} kept receiving messages for {self.timeout} s")

    def episode(self, index: int, seed: int, episode_timeout: float) -> dict[str, Any]:
        self.set_parameter(self.sim, "seed", int(seed))
        reset = self.trigger_json(f"/{self.sim}/reset")
        bag = self.start_recording()
        self.trigger(f"/{self.sim}/unpause")
        report = self.wait_episode_done(self.sim, episode_timeout)
        self.wait_settled()
        stopped = self.trigger_json(f"/{self.recorder}/stop")
        return {
            "episode": index,
            "seed": seed,
            "side": reset.get("side"),
            "success": bool(report["success"]),
            "collided": bool(report["collided"]),
            "time": report["time"],
            "real_time_factor": report.get("real_time_factor"),
            "bag": bag["bag"],
            "messages": stopped["messages"],
        }


def main(argv: list[str] | None = None) -> int:
    parser = driver_parser("collect_driver", __doc__.splitlines()[0], seed=0)
    parser.add_argument("--recorder", default="recorder_node", help="recorder node name")
    args, ros_args = parser.parse_known_args(argv)

    def episodes(node: Node, executor: Executor) -> Iterator[dict[str, Any]]:
        driver = Driver(node, executor, args.sim, args.recorder, args.timeout)
        for i in range(args.episodes):
            yield driver.episode(i, args.seed + i, args.episode_timeout)

    return run_driver_node("dp_collect_driver", ros_args, episodes)


if __name__ == "__main__":
    sys.exit(main())
