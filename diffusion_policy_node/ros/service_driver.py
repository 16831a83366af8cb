"""Service-call helper for the episode drivers of `dp-collect` and `dp-eval`.

`ServiceDriver` calls std_srvs/Trigger services (and a node's `set_parameters`) with a timeout
and turns every failure into a `DriverError` that names the service; the node is spun by an
executor in another thread (so a driver can also subscribe to topics) and calls wait on their
futures. `driver_parser` and `run_driver_node` are the command-line skeleton both drivers share
(`spinning_node`, the node spun in a background thread, also serves `dp-node`):
one JSON line per episode on stdout, `{"error": ...}` and exit code 1 on a `DriverError`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import rclpy
from rcl_interfaces.srv import ListParameters, SetParameters
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

POLL_S = 0.05


class DriverError(RuntimeError):
    """A service did not answer or refused; the message names it."""


def call_service(
    client: Any, name: str, request: Any, timeout: float, error: type[Exception] = DriverError
) -> Any:
    """Send `request` through `client` (of service `name`, spun elsewhere) and wait for the
    response; `error(text)` naming the service when it is not there or does not answer within
    `timeout` seconds."""
    if not client.wait_for_service(timeout_sec=timeout):
        raise error(f"service {name} not available within {timeout:g} s; is it running?")
    future = client.call_async(request)
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    done.wait(timeout)
    if not future.done() or future.result() is None:
        raise error(f"service {name} did not answer within {timeout:g} s")
    return future.result()


class ServiceDriver:
    """Calls services of other nodes from `node`; see the module docstring."""

    def __init__(self, node: Node, timeout: float, executor: Executor) -> None:
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
        return call_service(self._client(srv_type, name), name, request, timeout)

    def trigger(
        self, name: str, must_succeed: bool = True, timeout: float | None = None
    ) -> tuple[bool, str]:
        resp = self.call(Trigger, name, Trigger.Request(), timeout)
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

    def has_parameter(self, node_name: str, name: str) -> bool:
        """Whether `node_name` declares parameter `name` (its `list_parameters` service)."""
        req = ListParameters.Request()  # no prefixes, depth 0: every parameter
        resp = self.call(ListParameters, f"/{node_name.strip('/')}/list_parameters", req)
        return name in resp.result.names

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


def driver_parser(prog: str, description: str, seed: int) -> argparse.ArgumentParser:
    """Options every episode driver takes (its own ones are added by the caller)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--seed", type=int, default=seed, help="seed of the first episode")
    parser.add_argument("--sim", default="sim_node", help="sim node name")
    parser.add_argument("--timeout", type=float, default=60.0, help="service timeout (s)")
    parser.add_argument(
        "--episode-timeout", type=float, default=120.0, help="wall seconds per episode"
    )
    return parser


@contextlib.contextmanager
def spinning_node(node_name: str, ros_args: Sequence[str] = ()) -> Iterator[tuple[Node, Executor]]:
    """rclpy initialised with `ros_args`, a node `node_name` and its executor spinning in a
    background thread; on exit the spinning stops before the node and the context go away (a
    wait set destroyed under a running spin aborts the process)."""
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node(node_name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield node, executor
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()


def run_driver_node(
    node_name: str,
    ros_args: list[str],
    episodes: Callable[[Node, Executor], Iterator[dict[str, Any]]],
) -> int:
    """Create `node_name`, spin it in a background thread and print every record `episodes`
    yields as one JSON line; returns the exit code."""
    with spinning_node(node_name, ros_args) as (node, executor):
        try:
            for record in episodes(node, executor):
                print(json.dumps(record), flush=True)
            return 0
        except DriverError as exc:
            print(json.dumps({"error": str(exc)}), flush=True)
            return 1
        except KeyboardInterrupt:
            return 130
