"""Child ROS 2 node processes for the pipeline commands (`dp-collect`, `dp-eval`).

The commands themselves stay ROS-free: they start `python -m diffusion_policy_node.ros.<module>`
with `--ros-args` and talk to the nodes only through the JSON lines of a driver process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def ros_list(values: Sequence[str]) -> str:
    """A string-array parameter value for `-p name:=[a, b]`."""
    return "[" + ", ".join(values) + "]"


def start_node(module: str, ros_args: Sequence[str], log: Path) -> subprocess.Popen:
    """Start `diffusion_policy_node.ros.<module>` with `--ros-args`, stdout+stderr into `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"diffusion_policy_node.ros.{module}", "--ros-args", *ros_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )


def stop_node(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Ctrl-C, then kill if it has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
