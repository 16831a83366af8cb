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

import argparse
import json
import sys
import time
from typing import Any

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

POLL_S = 0.05
SETTLE_S = 0.15


class CollectError(RuntimeError):
    """A service did not answer or refused; the message names it."""


class Driver:
    """Service client for one sim node and one recorder node."""

    def __init__(self, node: Node, sim: str, recorder: str, timeout: float) -> None:
        self.node = node
        self.sim = sim.strip("/")
        self.recorder = recorder.strip("/")
        self.timeout = timeout
        self._clients: dict[str, Any] = {}

    def _client(self, srv_type: type, name: str) -> Any:
        client = self._clients.get(name)
        if client is None:
            client = self.node.create_client(srv_type, name)
            self._clients[name] = client
        return client

    def call(self, srv_type: type, name: str, request: Any, timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        client = self._client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise CollectError(f"service {name} not available within {timeout} s; is it running?")
        future = client.call_async(request)
        rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        if not future.done() or future.result() is None:
            raise CollectError(f"service {name} did not answer within {timeout} s")
        return future.result()

    def trigger(self, name: str, must_succeed: bool = True) -> tuple[bool, str]:
        resp = self.call(Trigger, name, Trigger.Request())
        if must_succeed and not resp.success:
            raise CollectError(f"{name} refused: {resp.message}")
        return bool(resp.success), str(resp.message)

    def trigger_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.trigger(name)[1])

    def set_seed(self, seed: int) -> None:
        req = SetParameters.Request()
        req.parameters = [Parameter("seed", value=int(seed)).to_parameter_msg()]
        resp = self.call(SetParameters, f"/{self.sim}/set_parameters", req)
        if not resp.results[0].successful:
            raise CollectError(f"setting /{self.sim} seed={seed}: {resp.results[0].reason}")

    def start_recording(self) -> dict[str, Any]:
        """~/start, retried while the recorder still waits for publishers to appear."""
        deadline = time.monotonic() + self.timeout
        while True:
            ok, message = self.trigger(f"/{self.recorder}/start", must_succeed=False)
            if ok:
                return json.loads(message)
            if "no publisher seen yet" not in message or time.monotonic() > deadline:
                raise CollectError(f"/{self.recorder}/start refused: {message}")
            time.sleep(0.2)

    def wait_done(self, episode_timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + episode_timeout
        while True:
            report = self.trigger_json(f"/{self.sim}/report")
            if report.get("done"):
                return report
            if time.monotonic() > deadline:
                raise CollectError(
                    f"episode not done after {episode_timeout} s wall time (report {report}); "
                    "the machine may be too slow for this real-time factor"
                )
            time.sleep(POLL_S)

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
        raise CollectError(f"/{self.recorder} kept receiving messages for {self.timeout} s")

    def episode(self, index: int, seed: int, episode_timeout: float) -> dict[str, Any]:
        self.set_seed(seed)
        reset = self.trigger_json(f"/{self.sim}/reset")
        bag = self.start_recording()
        self.trigger(f"/{self.sim}/unpause")
        report = self.wait_done(episode_timeout)
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
    parser = argparse.ArgumentParser(prog="collect_driver", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    parser.add_argument("--sim", default="sim_node", help="sim node name")
    parser.add_argument("--recorder", default="recorder_node", help="recorder node name")
    parser.add_argument("--timeout", type=float, default=60.0, help="service timeout (s)")
    parser.add_argument(
        "--episode-timeout", type=float, default=120.0, help="wall seconds per episode"
    )
    args, ros_args = parser.parse_known_args(argv)
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("dp_collect_driver")
    driver = Driver(node, args.sim, args.recorder, args.timeout)
    try:
        for i in range(args.episodes):
            record = driver.episode(i, args.seed + i, args.episode_timeout)
            print(json.dumps(record), flush=True)
        return 0
    except CollectError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
