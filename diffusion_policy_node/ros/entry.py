"""Console entry points of the node executables: signal handling first, heavy imports after.

Importing a node module takes seconds (torch, MuJoCo, rclpy). A Ctrl-C or SIGTERM in that
time would otherwise print a KeyboardInterrupt traceback and exit 1 (or die by the signal);
`ros2 launch` sends both when it shuts down. Until the node's `main` takes over
(`node_main.run_node`), either signal ends the process at once with exit code 0: nothing has
started yet that needs cleaning up. Once `main` has returned the process ends at once
(`exit_now`), without the interpreter's seconds-long teardown. This module imports only the
standard library.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable

EARLY_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _exit_at_once(signum: int, frame: object) -> None:
    """Before the node exists: a clean, silent exit."""
    try:
        sys.stderr.flush()
        sys.stdout.flush()
    finally:
        os._exit(0)


_exit_at_once.replaceable = True  # type: ignore[attr-defined]  # node_main may replace it


def install_early_handlers() -> None:
    """SIGINT and SIGTERM exit 0 until `restore_default_handlers` (main thread only; a
    signal the embedding program ignores stays ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in EARLY_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _exit_at_once)


def is_early_handler(handler: object) -> bool:
    return bool(getattr(handler, "replaceable", False))


def restore_default_handlers() -> None:
    """Python's defaults again (KeyboardInterrupt, SIGTERM kills), so that rclpy.init chains
    to them rather than to an immediate exit."""
    if threading.current_thread() is not threading.main_thread():
        return
    defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
    for sig, default in defaults.items():
        if is_early_handler(signal.getsignal(sig)):
            signal.signal(sig, default)


def exit_now(code: int) -> None:
    """End the process with `code` once the node's main has returned, skipping the
    interpreter's teardown: with torch loaded that alone takes 1-4 s, and `ros2 launch` (and
    an operator) expect a stopped node to be gone within 2 s. The node has already released
    what it holds (worker, bag, rclpy); what remains are buffered output streams, flushed here,
    C stdio included (rclpy's console logging)."""
    with contextlib.suppress(OSError, ValueError):  # a closed or broken stream
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(OSError, AttributeError):  # no C library to flush
        ctypes.CDLL(None).fflush(None)
    os._exit(code)


def _run(module: str) -> int:
    install_early_handlers()
    main: Callable[[], int] = importlib.import_module(module).main
    exit_now(main())
    return 0  # not reached


def policy_node() -> int:
    return _run("diffusion_policy_node.ros.policy_node")


def sim_node() -> int:
    return _run("diffusion_policy_node.ros.sim_node")


def recorder_node() -> int:
    return _run("diffusion_policy_node.ros.recorder_node")


def ros_selftest() -> int:
    return _run("diffusion_policy_node.ros.selftest")
