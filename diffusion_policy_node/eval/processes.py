"""Child ROS 2 node processes and episode drivers for the pipeline commands (`dp-collect`,
`dp-eval`).

The commands themselves stay ROS-free: they start `python -m diffusion_policy_node.ros.<module>`
with `--ros-args` and talk to the nodes only through the JSON lines of a driver process.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


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


def sim_node_args(
    node_name: str,
    *,
    expert: bool,
    real_time_factor: float,
    camera_rate: float,
    image_size: Sequence[int],
    time_limit: float,
    seed: int,
) -> list[str]:
    """`--ros-args` of a sim_node for a driven run: paused at start and after every episode."""
    height, width = image_size
    return [
        "-r", f"__node:={node_name}",
        "-p", f"expert:={'true' if expert else 'false'}",
        "-p", "start_paused:=true", "-p", "pause_on_done:=true",
        "-p", f"real_time_factor:={float(real_time_factor)}",
        "-p", f"camera_rate_hz:={float(camera_rate)}",
        "-p", f"image_height:={height}", "-p", f"image_width:={width}",
        "-p", f"time_limit:={float(time_limit)}",
        "-p", f"seed:={seed}",
    ]  # fmt: skip


def driver_command(module: str, args: argparse.Namespace, sim_node: str, *extra: str) -> list[str]:
    """`python -m diffusion_policy_node.ros.<module>` (an episode driver) with the options every
    driver takes (--episodes, --seed, --sim; --episode-timeout from `add_episode_args`'s
    --timeout), then `extra`."""
    return [
        sys.executable, "-m", f"diffusion_policy_node.ros.{module}",
        "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--sim", sim_node, "--episode-timeout", str(args.timeout),
        *extra,
    ]  # fmt: skip


def add_episode_args(parser: argparse.ArgumentParser) -> None:
    """The simulation options every driven run shares."""
    parser.add_argument("--camera-rate", type=float, default=30.0, help="camera Hz (sim time)")
    parser.add_argument("--time-limit", type=float, default=10.0, help="episode limit (sim s)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="wall seconds allowed per episode"
    )


def check_episode_args(args: argparse.Namespace, max_real_time_factor: float) -> None:
    """ValueError naming the option for a bad --episodes, --seed or --real-time-factor."""
    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: must be >= 1")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    if not (0 <= args.real_time_factor <= max_real_time_factor):
        raise ValueError(
            f"--real-time-factor {args.real_time_factor}: must be in [0, {max_real_time_factor:g}]"
        )


def run_driver(
    cmd: Sequence[str],
    logs: Path,
    episodes_path: Path,
    on_record: Callable[[dict[str, Any]], dict[str, Any]],
    append: bool = False,
    on_prompt: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None, str | None]:
    """Run an episode driver (`ros/*_driver.py`) and read its JSON lines.

    Every episode record goes through `on_record` (which may add fields and report progress)
    and is written to `episodes_path`; a `{"error": ...}` line or a non-zero exit becomes the
    error. With `on_prompt`, the driver's stdin is a pipe and every `{"prompt": ...}` line it
    writes is answered with the JSON line `on_prompt(line)` returns (`eval.operator`).
    Returns (records, the final `{"done": ...}` line or None, error or None).
    """
    records: list[dict[str, Any]] = []
    final: dict[str, Any] | None = None
    error = None
    with (
        open(logs / "driver.log", "w") as driver_log,
        open(episodes_path, "a" if append else "w") as episodes_file,
    ):
        driver = subprocess.Popen(
            list(cmd),
            stdin=None if on_prompt is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=driver_log,
            text=True,
        )
        if on_prompt is not None and driver.stdin is None:  # a PIPE: never None
            raise RuntimeError("the episode driver has no stdin pipe")
        try:
            for line in driver.stdout or ():
                record = json.loads(line)
                if on_prompt is not None and "prompt" in record:
                    driver.stdin.write(json.dumps(on_prompt(record)) + "\n")
                    driver.stdin.flush()
                elif "error" in record:
                    error = record["error"]
                elif record.get("done"):
                    final = record
                else:
                    record = on_record(record)
                    records.append(record)
                    episodes_file.write(json.dumps(record) + "\n")
                    episodes_file.flush()
        finally:
            if driver.stdin is not None:
                driver.stdin.close()
        if driver.wait() != 0 and error is None:
            error = f"episode driver exited with {driver.returncode}; see {logs}/driver.log"
    return records, final, error
