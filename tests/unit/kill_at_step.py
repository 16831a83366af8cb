"""Run a script in a child process and SIGKILL it, by PID, when it prints a given step name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_and_kill_at(
    script: str, args: list[str], stop_at: str, timeout: float = 120.0
) -> list[str]:
    """`python -c script *args` (cwd: the repository), killed once it prints `stop_at` on a
    line of its own; returns the lines seen. The child is reaped before this returns, so its PID
    no longer counts as running."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    seen: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            seen.append(line.strip())
            if seen[-1] == stop_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.wait(timeout=timeout)
    return seen
