"""The `main()` every single-node executable shares: init, spin, clean exit on Ctrl-C/SIGTERM."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

N = TypeVar("N", bound=Node)


def run_node(
    factory: Callable[[], N],
    name: str,
    argv: list[str] | None = None,
    fatal: tuple[type[BaseException], ...] = (ValueError,),
    on_exit: Callable[[N], None] | None = None,
) -> int:
    """Build the node with `factory` and spin it until shutdown; returns the exit code.

    Exceptions of the `fatal` types (bad parameters, unusable files) are logged under `name` and
    give exit code 1; `on_exit(node)` runs before the node is destroyed, also after Ctrl-C.
    """
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node: N | None = None
    try:
        node = factory()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except fatal as exc:
        rclpy.logging.get_logger(name).fatal(str(exc))
        return 1
    finally:
        if node is not None:
            if on_exit is not None:
                on_exit(node)
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
