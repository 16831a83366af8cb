"""Helpers for the policy-node ROS tests: a tiny checkpoint, node processes, an in-test probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import Trigger

from tests.factories import tiny_checkpoint, tiny_config

JOINTS = ["joint1", "joint2", "joint3"]
ACTION_MIN = np.array([-1.0, -0.5, -2.0])
ACTION_MAX = np.array([1.0, 0.5, 2.0])
DT = 0.05
# policy_node arguments for a robot without a URDF (the demonstrated range, warned per joint)
NO_URDF = ("-p", "robot_description_topic:=''")


def make_tiny_checkpoint(
    folder: Path,
    dt: float = DT,
    joints: list[str] | None = None,
    cameras: list[str] | None = None,
    camera_types: list[str] | None = None,
) -> Path:
    """Random-weight checkpoint small enough for fast CPU inference (~15 ms per chunk). With
    `joints` (other than JOINTS) every joint's state and action range is [-1, 1]; `cameras`
    and their recorded `camera_types` (default: /camera/image_raw, type not recorded)."""
    joints = JOINTS if joints is None else list(joints)
    n = len(joints)
    lo, hi = (ACTION_MIN, ACTION_MAX) if joints == JOINTS else (-np.ones(n), np.ones(n))
    config = tiny_config(
        joints,
        cameras=cameras or ["/camera/image_raw"],
        camera_types=camera_types or [],
        dt=dt,
    )
    return tiny_checkpoint(folder, config, action_range=(lo, hi))


class NodeProcess:
    """A node in its own process (`python -m module --ros-args ...`), output to a log file."""

    def __init__(self, module: str, ros_args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", *ros_args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mib(self) -> float:
        """Resident set size from /proc/<pid>/status (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def children(self) -> list[int]:
        """Pids of this process's direct children (e.g. the inference process)."""
        kids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                    kids.append(int(entry.name))
        return kids

    def stop(self, sig: int = signal.SIGINT, timeout: float = 20.0) -> int:
        """Send `sig`, wait; kill after `timeout`. Returns the exit code."""
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


class NodeGroup:
    """Node processes (`procs`) and the in-test `probe` that watches them. Leaving it as a
    context manager (a module fixture's `with`) stops every process with SIGINT and closes the
    probe."""

    probe: Probe
    procs: list[NodeProcess]

    def logs(self) -> str:
        """The tail of every process's log, each under its file name."""
        return "\n".join(f"--- {p.log_path.name}\n{p.log()[-3000:]}" for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.stop(signal.SIGINT)
        self.probe.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Probe:
    """An rclpy node inside the test process (own context, spun on a thread) that records
    topics, reads /diagnostics and calls services."""

    def __init__(self, name: str = "policy_node_test_probe") -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.records: dict[str, list[tuple[float, float, Any]]] = {}
        self.diagnostics: dict[str, list[tuple[float, str, dict[str, str]]]] = {}
        self.subscribe("/diagnostics", DiagnosticArray, self._on_diag)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def now_ros(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def subscribe(
        self, topic: str, msg_type: type, callback: Callable[[Any], None] | None = None
    ) -> None:
        """Record (monotonic receive time, ROS receive time, msg) of every message on `topic`."""
        self.records.setdefault(topic, [])

        def on_msg(msg: Any) -> None:
            self.records[topic].append((time.monotonic(), self.now_ros(), msg))
            if callback is not None:
                callback(msg)

        self.node.create_subscription(msg_type, topic, on_msg, 50)

    def since(self, topic: str, t_mono: float, until: float = float("inf")) -> list[Any]:
        return [m for t, _, m in list(self.records[topic]) if t_mono <= t < until]

    def timed_since(self, topic: str, t_mono: float) -> list[tuple[float, float, Any]]:
        return [r for r in list(self.records[topic]) if r[0] >= t_mono]

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            self.diagnostics.setdefault(status.name, []).append(
                (time.monotonic(), status.message, values)
            )

    def diag(
        self, node_name: str, after: float | None = None, timeout: float = 5.0
    ) -> dict[str, str]:
        """Values (and "message") of the first diagnostics of `node_name` received after
        monotonic time `after` (default: now, i.e. the next one)."""
        key = f"{node_name}: policy"
        after = time.monotonic() if after is None else after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, message, values in list(self.diagnostics.get(key, [])):
                if t > after:
                    return dict(values, message=message)
            time.sleep(0.05)
        raise TimeoutError(f"no /diagnostics from {node_name} within {timeout} s")

    def diags(
        self, node_names: list[str], after: float | None = None, timeout: float = 5.0
    ) -> dict[str, dict[str, str]]:
        """`diag` of several nodes, waited for in parallel (nodes publish at 1 Hz each)."""
        after = time.monotonic() if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            got = {}
            for name in node_names:
                fresh = [
                    r for r in list(self.diagnostics.get(f"{name}: policy", [])) if r[0] > after
                ]
                if fresh:
                    got[name] = dict(fresh[0][2], message=fresh[0][1])
            if len(got) == len(node_names):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"no /diagnostics from {set(node_names) - set(got)}")
            time.sleep(0.05)

    def latest_diag(self, node_name: str) -> dict[str, str]:
        """The newest diagnostics of `node_name` received so far (waits only for the first)."""
        if not self.diagnostics.get(f"{node_name}: policy"):
            return self.diag(node_name, after=0.0)
        _, message, values = self.diagnostics[f"{node_name}: policy"][-1]
        return dict(values, message=message)

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 10.0) -> Any:
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available within {timeout} s")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"service {name} did not answer within {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def trigger(self, name: str) -> Trigger.Response:
        return self.call(Trigger, name, Trigger.Request())

    def set_parameter(self, node_name: str, name: str, value: Any) -> None:
        req = SetParameters.Request()
        req.parameters = [Parameter(name, value=value).to_parameter_msg()]
        resp = self.call(SetParameters, f"/{node_name}/set_parameters", req)
        if not resp.results[0].successful:
            raise RuntimeError(f"setting {node_name}.{name}={value!r}: {resp.results[0].reason}")

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)
