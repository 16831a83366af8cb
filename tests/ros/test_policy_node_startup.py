"""policy_node refuses to start, with a clear message and a non-zero exit, on a bad set-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .policy_node_harness import make_tiny_checkpoint

pytestmark = pytest.mark.ros


REPO = Path(__file__).resolve().parents[2]


def _run_node(*params: str, timeout: float = 90.0) -> subprocess.CompletedProcess:
    # The shipped parameter file first (it must parse), then the test's overrides.
    args = ["--params-file", str(REPO / "config" / "policy_node.yaml")]
    args += [a for p in params for a in ("-p", p)]
    return subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.ros.policy_node", "--ros-args", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def test_missing_checkpoint_is_a_clear_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_checkpoint"
    proc = _run_node(f"checkpoint:={missing}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert f"checkpoint folder {missing} does not exist" in out
    assert "Traceback" not in out
    # one line: the FATAL that names the reason (no "ERROR configure failed" before it)
    (line,) = [line for line in out.splitlines() if "does not exist" in line]
    assert "[FATAL]" in line and "cannot start" in line, out
    assert "[ERROR]" not in out, out


def test_control_rate_must_match_the_checkpoint(tmp_path: Path) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")  # dt = 0.05 s: 20 Hz
    proc = _run_node(f"checkpoint:={ckpt}", "control_rate_hz:=30.0", "inference_process:=false")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "control_rate_hz=30.0" in out and "dt=0.05" in out
    assert "Traceback" not in out


def test_missing_checkpoint_parameter(tmp_path: Path) -> None:
    proc = _run_node("output_mode:=stream")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "parameter checkpoint=''" in out
