"""The `main()` every single-node executable shares: `--help`, init, spin, clean exit on
Ctrl-C/SIGTERM.

Start-up errors are one FATAL line and exit code 1, never a traceback: a bad parameter (wrong
type, out of range; also rclpy's own, `use_sim_time:=maybe`), an unreadable `--params-file`,
the node's own `fatal` exceptions. Once shutdown has begun, further Ctrl-C (a second one, or
the terminal's next to `ros2 launch`'s) no longer interrupts the clean-up.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from diffusion_policy_node.ros.entry import restore_default_handlers
from diffusion_policy_node.ros.parameters import (
    ParamSpec,
    describe_parameter_exception,
    parameters_help,
)

N = TypeVar("N", bound=Node)


def command_line(
    name: str, description: str | None, parameters: Sequence[ParamSpec] = ()
) -> argparse.ArgumentParser:
    """The parser of a node executable: no options of its own (everything is a ROS parameter),
    `--help` shows `description` and the parameter table."""
    return argparse.ArgumentParser(
        prog=name,
        description=description,
        epilog=parameters_help(parameters) if parameters else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{name} [-h] [--ros-args ...]",
    )


def _ros_args_error(exc: Exception) -> str:
    """rcl's message for unusable ROS arguments without its C source locations."""
    text = re.sub(r", at [^,]*\.c:\d+", "", str(exc))
    return f"bad ROS arguments: {text}"


def _fatal(name: str, text: str) -> None:
    """One FATAL line under the node's name (also before rclpy is initialised)."""
    print(f"[FATAL] [{name}]: cannot start: {text}", file=sys.stderr, flush=True)


def _note_interrupts() -> threading.Event:
    """An Event set by every SIGINT and SIGTERM, which then raise KeyboardInterrupt as
    Python's default SIGINT handler does (in the main thread; elsewhere the Event is never
    set): an exception that escapes the executor after a Ctrl-C is the interrupt, not a bug,
    and a SIGTERM (`ros2 launch`'s escalation, a supervisor) interrupts a start-up that waits
    (configure's warm-up) as Ctrl-C does, instead of only shutting the context down."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return interrupted
    restore_default_handlers()  # the console script's exit-at-once handlers (ros/entry.py)
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return interrupted  # SIG_IGN, or the embedding program's own handler: leave it alone

    def on_sigint(signum: int, frame: object) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_sigint)
    return interrupted


def _ignore_further_interrupts(name: str) -> None:
    """From now on SIGINT only says that the node is already shutting down (once): a second
    Ctrl-C must not raise KeyboardInterrupt inside the clean-up (a thread join, a child
    process wait). `ros2 launch` escalates to SIGTERM/SIGKILL when the clean-up hangs."""
    if threading.current_thread() is not threading.main_thread():
        return
    told = False

    def already_stopping(signum: int, frame: object) -> None:
        nonlocal told
        if not told:
            told = True
            print(f"[{name}]: already shutting down", file=sys.stderr, flush=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) not in (signal.SIG_IGN, signal.SIG_DFL):
            signal.signal(sig, already_stopping)


def run_node(
    factory: Callable[[], N],
    name: str,
    argv: list[str] | None = None,
    fatal: tuple[type[BaseException], ...] = (ValueError,),
    on_exit: Callable[[N], int | None] | None = None,
    description: str | None = None,
    parameters: Sequence[ParamSpec] = (),
) -> int:
    """Build the node with `factory` and spin it until shutdown; returns the exit code.

    `-h`/`--help` (outside `--ros-args`) prints `description` and `parameters` and returns 0
    without starting ROS; any other non-ROS argument is a usage error (2). Exceptions of the
    `fatal` types (bad parameters, unusable files) are logged under `name` and give exit code 1;
    `on_exit(node)` runs before the node is destroyed, also after Ctrl-C, and may return a
    non-zero exit code (e.g. a worker thread failed). Meant as a process's main: from the start
    of the shutdown on, SIGINT no longer interrupts (it stays ignored after the return).
    """
    args = list(sys.argv if argv is None else argv)
    try:
        command_line(name, description, parameters).parse_args(remove_ros_args(args)[1:])
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except rclpy_implementation.RCLError as exc:  # e.g. --params-file: missing or bad YAML
        _fatal(name, _ros_args_error(exc))
        return 1
    interrupted = _note_interrupts()  # before rclpy.init: rclpy's handler chains to it
    rclpy.init(args=args)
    node: N | None = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        _ignore_further_interrupts(name)
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # rclpy's own parameters (use_sim_time), declared while the Node is constructed
        rclpy.logging.get_logger(name).fatal(f"cannot start: {describe_parameter_exception(exc)}")
        code = 1
    except fatal as exc:
        if node is None and (interrupted.is_set() or not rclpy.ok()):
            pass  # Ctrl-C / SIGTERM while the node was starting (configure): a clean exit
        elif node is not None:
            # Not a start-up error: raised while spinning. SIGTERM shuts the context down under
            # the executor's feet and rclpy may raise RCLError (a RuntimeError) from the wait
            # set: a clean exit; anything else is a bug and is raised.
            if rclpy.ok() and not interrupted.is_set():
                raise
        else:
            rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
            code = 1
    except Exception:
        # SIGTERM shuts the context down under the executor's feet; some rclpy versions then
        # raise RCLError from the wait set instead of ExternalShutdownException. A Ctrl-C
        # that lands while rclpy's pybind11 code converts a message comes out as that
        # conversion's RuntimeError ("Unable to convert call argument ...") instead of
        # KeyboardInterrupt: also a clean exit.
        if rclpy.ok() and not interrupted.is_set():
            raise
    finally:
        _ignore_further_interrupts(name)
        if node is not None:
            if on_exit is not None:
                code = on_exit(node) or code
            node.destroy_node()
        rclpy.try_shutdown()
        if threading.current_thread() is threading.main_thread():
            # Python's own teardown resets a handler function to SIG_DFL (a late Ctrl-C would
            # then kill the process with -SIGINT), but keeps SIG_IGN.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return code
