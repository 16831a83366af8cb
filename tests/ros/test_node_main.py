"""`ros.node_main.run_node`, the main() of every node executable: start-up errors are one line
and exit 1, and Ctrl-C pressed again during shutdown (the terminal's SIGINT next to
`ros2 launch`'s) exits quietly instead of a KeyboardInterrupt traceback from the clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .policy_node_harness import make_tiny_checkpoint

pytestmark = pytest.mark.ros

# A node whose clean-up blocks in Thread.join for a while, like policy_node joining its
# inference worker or sim_node its simulation thread.
SLOW_CLEANUP_NODE = """
import sys
import threading
import time

from rclpy.node import Node

from diffusion_policy_node.ros.node_main import run_node


def make():
    node = Node("slow_cleanup")
    timer = None

    def spinning():  # once the executor runs, so that Ctrl-C finds the node built
        timer.cancel()
        print("ready", flush=True)

    timer = node.create_timer(0.01, spinning)
    return node


def cleanup(node):
    print("cleaning up", flush=True)
    worker = threading.Thread(target=time.sleep, args=(3.0,))
    worker.start()
    worker.join()
    print("cleaned up", flush=True)
    return 0


sys.exit(run_node(make, "slow_cleanup", sys.argv, on_exit=cleanup))
"""


@contextlib.contextmanager
def _running(argv: list[str], **env: str) -> Iterator[subprocess.Popen]:
    """The process, killed (by its PID) if the test leaves it running."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **env),
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _wait_for_line(proc: subprocess.Popen, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"{text!r} not printed; stderr:\n{proc.communicate()[1]}")


def test_second_sigint_during_cleanup_is_quiet(tmp_path: Path) -> None:
    script = tmp_path / "slow_cleanup_node.py"
    script.write_text(textwrap.dedent(SLOW_CLEANUP_NODE))
    with _running([sys.executable, str(script)]) as proc:
        _wait_for_line(proc, "ready")
        proc.send_signal(signal.SIGINT)
        _wait_for_line(proc, "cleaning up")
        time.sleep(0.2)  # inside Thread.join
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "cleaned up" in out  # the clean-up ran to its end
    assert proc.returncode == 0
    assert err.count("already shutting down") == 1


# The log line after which the node spins (policy_node configures inside its factory).
SPINNING = {"sim_node": "[sim_node]: sim_node:", "policy_node": "[policy_node]: activate"}


@pytest.mark.parametrize("executable", ["sim_node", "policy_node"])
def test_real_nodes_exit_quietly_on_two_sigints(tmp_path: Path, executable: str) -> None:
    args = [f"{Path(sys.executable).parent / executable}", "--ros-args"]
    if executable == "policy_node":
        ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
        args += ["-p", f"checkpoint:={ckpt}", "-p", "control_rate_hz:=20.0"]
        args += ["-p", "robot_description_topic:=''"]  # no URDF: demonstrated limits
    else:
        args += ["-p", "real_time_factor:=1.0", "-p", "image_width:=32", "-p", "image_height:=32"]
    with _running(args) as proc:
        deadline = time.monotonic() + 90
        started = False
        while time.monotonic() < deadline and proc.poll() is None:
            if SPINNING[executable] in proc.stderr.readline():
                started = True
                break
        assert started, f"{executable} did not start"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 0, err


# A node whose callback turns the KeyboardInterrupt of a Ctrl-C into another exception, as
# rclpy's pybind11 message conversion does when the signal lands inside it ("Unable to convert
# call argument '0' to Python object", seen from take_message in executor.spin()). With
# CONVERTING_MODE=bug it raises the same exception without any Ctrl-C.
CONVERTING_NODE = """
import os
import sys
import time

from rclpy.node import Node
from rclpy.signals import uninstall_signal_handlers

from diffusion_policy_node.ros.node_main import run_node

MODE = os.environ["CONVERTING_MODE"]


def make():
    # Without rclpy's handler nothing shuts the context down behind the executor: the race
    # that let the exception arrive while rclpy.ok() is still true, made certain.
    uninstall_signal_handlers()
    node = Node("converting")

    def callback():
        if MODE == "bug":
            raise RuntimeError("a real bug")
        print("ready", flush=True)
        try:
            time.sleep(30.0)
        except KeyboardInterrupt:
            raise RuntimeError("Unable to convert call argument '0' to Python object") from None

    node.create_timer(0.01, callback)
    return node


sys.exit(run_node(make, "converting", sys.argv))
"""


def test_an_exception_caused_by_ctrl_c_is_a_clean_exit_and_a_real_one_is_not(
    tmp_path: Path,
) -> None:
    script = tmp_path / "converting_node.py"
    script.write_text(textwrap.dedent(CONVERTING_NODE))
    with _running([sys.executable, str(script)], CONVERTING_MODE="interrupt") as proc:
        _wait_for_line(proc, "ready")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    with _running([sys.executable, str(script)], CONVERTING_MODE="bug") as proc:
        _, err = proc.communicate(timeout=30)
    assert "RuntimeError: a real bug" in err
    assert proc.returncode != 0
