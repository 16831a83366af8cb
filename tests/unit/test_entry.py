"""The node executables' entry points: a Ctrl-C or SIGTERM while the node module is still
importing (torch: seconds) exits 0 without a traceback; `ros2 launch` sends both."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffusion_policy_node.ros import entry

REPO = Path(__file__).resolve().parents[2]
# stands in for a node module whose import takes long (torch)
SLOW_IMPORT = (
    "from diffusion_policy_node.ros import entry\n"
    "entry.install_early_handlers()\n"
    "print('importing', flush=True)\n"
    "import time\n"
    "time.sleep(30)\n"
)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_imports_is_a_clean_exit(sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_IMPORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout.readline().strip() == "importing"
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert time.monotonic() - t0 < 10


def test_the_node_main_gets_the_defaults_back() -> None:
    """run_node / rclpy.init must chain to Python's handlers, not to the exit-at-once one."""
    saved = {s: signal.getsignal(s) for s in entry.EARLY_SIGNALS}
    try:
        entry.install_early_handlers()
        assert all(entry.is_early_handler(signal.getsignal(s)) for s in entry.EARLY_SIGNALS)
        entry.restore_default_handlers()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _console_scripts() -> dict[str, str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    rows = [e.value for e in value.elts]
                    return dict(tuple(p.strip() for p in r.split("=", 1)) for r in rows)
    raise AssertionError("setup.py has no console_scripts")


@pytest.mark.parametrize("name", ["policy_node", "sim_node", "recorder_node", "ros_selftest"])
def test_launched_executables_install_the_handlers_first(name: str) -> None:
    """The executables the launch files start go through ros/entry.py (which imports only the
    standard library) before their node module is imported."""
    module, func = _console_scripts()[name].split(":")
    assert module == "diffusion_policy_node.ros.entry"
    assert callable(getattr(entry, func))
    imported = {
        (n.names[0].name if isinstance(n, ast.Import) else n.module).split(".")[0]
        for n in ast.walk(ast.parse((REPO / "diffusion_policy_node/ros/entry.py").read_text()))
        if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_exit_now_keeps_the_code_and_flushes_the_output() -> None:
    """Python and C stdio output written before exit_now reaches the pipe (rclpy logs with C
    stdio), and the code is the process's exit code."""
    script = (
        "import ctypes, sys\n"
        "from diffusion_policy_node.ros import entry\n"
        "print('python line')\n"
        "ctypes.CDLL(None).printf(b'c line\\n')\n"
        "entry.exit_now(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines() == ["python line", "c line"], proc.stdout
