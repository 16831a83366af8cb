"""The `main()` every single-node executable shares: `--help`, init, spin, clean exit on
Ctrl-C/SIGTERM."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from diffusion_policy_node.ros.parameters import ParamSpec, parameters_help

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
    non-zero exit code (e.g. a worker thread failed).
    """
    args = list(sys.argv if argv is None else argv)
    try:
        command_line(name, description, parameters).parse_args(remove_ros_args(args)[1:])
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    rclpy.init(args=args)
    node: N | None = None
    code = 0
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except fatal as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        code = 1
    except Exception:
        # SIGTERM shuts the context down under the executor's feet; some rclpy versions then
        # raise RCLError from the wait set instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            if on_exit is not None:
                code = on_exit(node) or code
            node.destroy_node()
        rclpy.try_shutdown()
    return code
