"""Service-call helper for the episode drivers of `dp-collect` and `dp-eval`.

`ServiceDriver` calls std_srvs/Trigger services (and a node's `set_parameters`) with a timeout
and turns every failure into a `DriverError` that names the service. It works either by spinning
the node itself while it waits (`executor=None`) or, when an executor already spins the node in
another thread (the driver also subscribes to topics), by waiting on the future.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

POLL_S = 0.05


class DriverError(RuntimeError):
    """A service did not answer or refused; the message names it."""


class ServiceDriver:
    """Calls services of other nodes from `node`; see the module docstring."""

    def __init__(self, node: Node, timeout: float, executor: Executor | None = None) -> None:
        self.node = node
        self.timeout = timeout
        self.executor = executor
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
            raise DriverError(f"service {name} not available within {timeout} s; is it running?")
        future = client.call_async(request)
        if self.executor is None:
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
        else:
            done = threading.Event()
            future.add_done_callback(lambda _f: done.set())
            done.wait(timeout)
        if not future.done() or future.result() is None:
            raise DriverError(f"service {name} did not answer within {timeout} s")
        return future.result()

    def trigger(self, name: str, must_succeed: bool = True) -> tuple[bool, str]:
        resp = self.call(Trigger, name, Trigger.Request())
        if must_succeed and not resp.success:
            raise DriverError(f"{name} refused: {resp.message}")
        return bool(resp.success), str(resp.message)

    def trigger_json(self, name: str) -> dict[str, Any]:
        return json.loads(self.trigger(name)[1])

    def set_parameter(self, node_name: str, name: str, value: Any) -> None:
        node_name = node_name.strip("/")
        req = SetParameters.Request()
        req.parameters = [Parameter(name, value=value).to_parameter_msg()]
        resp = self.call(SetParameters, f"/{node_name}/set_parameters", req)
        if not resp.results[0].successful:
            raise DriverError(f"setting /{node_name} {name}={value!r}: {resp.results[0].reason}")

    def wait_episode_done(self, sim: str, episode_timeout: float) -> dict[str, Any]:
        """Poll the sim's `~/report` until `done`; its last report."""
        deadline = time.monotonic() + episode_timeout
        while True:
            report = self.trigger_json(f"/{sim.strip('/')}/report")
            if report.get("done"):
                return report
            if time.monotonic() > deadline:
                raise DriverError(
                    f"episode not done after {episode_timeout} s wall time (report {report}); "
                    "the machine may be too slow for this real-time factor"
                )
            time.sleep(POLL_S)
