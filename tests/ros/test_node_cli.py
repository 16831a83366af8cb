"""dp-node: a policy node's Trigger and lifecycle services from the command line (no ros2 CLI),
against a real policy_node process over DDS."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from .policy_node_harness import NO_URDF, NodeProcess, make_tiny_checkpoint

pytestmark = pytest.mark.ros

NODE = "pn_cli"


def dp_node(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.ros.node_cli", *args],
        capture_output=True, text=True, timeout=timeout + 30,
    )  # fmt: skip


def test_dp_node_drives_the_lifecycle_and_the_trigger_services(tmp_path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    sensors = NodeProcess(
        "diffusion_policy_node.ros.testing.fake_sensors", ["-p", "rate_hz:=30.0"],
        tmp_path / "fs.log",
    )  # fmt: skip
    node = NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        ["-r", f"__node:={NODE}", "-p", f"checkpoint:={ckpt}", *NO_URDF, "-p", "autostart:=false",
         "-p", "torch_threads:=1", "-p", "warmup_runs:=1"],
        tmp_path / "node.log",
    )  # fmt: skip
    try:
        state = dp_node("state", "--node", NODE, "--timeout", "60")
        assert state.returncode == 0 and state.stdout.strip() == "unconfigured", state.stderr
        early = dp_node("start", "--node", NODE)  # ~/start before configure: refused, rc 1
        assert early.returncode == 1 and "start refused" in early.stderr, early.stderr
        configure = dp_node("configure", "--node", NODE)
        assert configure.returncode == 0, configure.stderr + node.log()
        assert configure.stdout.strip() == "configure: ok, now inactive"
        activate = dp_node("activate", "--node", NODE)
        assert activate.stdout.strip() == "activate: ok, now active"
        status = dp_node("status", "--node", NODE)
        assert status.returncode == 0 and isinstance(json.loads(status.stdout), dict)
        stop = dp_node("stop", "--node", NODE)
        assert stop.returncode == 0, stop.stderr
        assert dp_node("state", "--node", NODE).stdout.strip() == "inactive"
        assert dp_node("start", "--node", NODE).returncode == 0
        assert dp_node("state", "--node", NODE).stdout.strip() == "active"
    finally:
        for p in (node, sensors):
            p.stop(signal.SIGINT)
    missing = dp_node("status", "--node", "no_such_node", "--timeout", "1", timeout=1)
    assert missing.returncode == 2 and "/no_such_node/status not available" in missing.stderr
