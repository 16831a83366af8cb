"""What the launch files (launch/*.py) share: argument checks and the exit policy of nodes.

- `checked_arguments({name: check})`, placed after the DeclareLaunchArgument actions and before
  the nodes: checks the *types* and paths of launch arguments (`use_sim_time:=maybe`,
  `seed:=abc`, `params_file:=/missing.yaml`) and fails the launch with one line naming each bad
  argument, its value and what is allowed, before any node starts. Booleans are
  case-insensitive (`True`, `TRUE`) and rewritten to `true`/`false` for what reads them
  afterwards. What a value means (device names, modes) is the node's to check.
- `package_node(executable, ...)`: a launch_ros Node of this package with `exit_policy`: when
  it exits non-zero (a FATAL start-up error, a crash) the launch shuts down and `ros2 launch`
  exits 1 ("Caught exception in launch: policy_node exited with code 1 ..."); when it exits 0
  the launch shuts down normally (or keeps going, `shutdown_on_success=False`).
- `xacro_description(xacro_file, controllers_file)` and `gazebo_robot(...)`: the Gazebo
  bring-up both gazebo*.launch.py files share (gz sim, robot_state_publisher, the spawn, the
  bridge, then the controller spawners once the robot exists).

`launch`/`launch_ros` (a full ROS 2 install) are imported only inside the functions that build
launch actions; the checks and the exit policy are plain Python, tested without them.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "LaunchArgumentError",
    "NodeExitError",
    "boolean",
    "check_arguments",
    "checked_arguments",
    "existing_file",
    "existing_folder",
    "exit_policy",
    "gazebo_robot",
    "integer",
    "number",
    "package_node",
    "xacro_description",
]

PACKAGE = "diffusion_policy_node"

Check = Callable[[str, str], str]  # (argument name, text) -> normalised text, or raise


class LaunchArgumentError(ValueError):
    """Launch arguments that cannot work; the message is one line naming each of them."""


class NodeExitError(RuntimeError):
    """A node that matters exited with a non-zero code: the launch stops and fails."""


def boolean(name: str, text: str) -> str:
    """true/false in any case (`True`, `FALSE`), normalised to lower case."""
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise LaunchArgumentError(f"{name}:={text!r} is not a boolean; allowed: true or false")
    return lowered


def integer(low: int | None = None, high: int | None = None) -> Check:
    """A whole number, optionally within [low, high]."""

    def check(name: str, text: str) -> str:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        outside = value is not None and (
            (low is not None and value < low) or (high is not None and value > high)
        )
        if value is None or outside:
            raise LaunchArgumentError(f"{name}:={text!r} is not {_integer_words(low, high)}")
        return str(value)

    return check


def number(low: float | None = None) -> Check:
    """A finite number, optionally >= low."""

    def check(name: str, text: str) -> str:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (low is not None and value < low):
            bound = f" >= {low:g}" if low is not None else ""
            raise LaunchArgumentError(f"{name}:={text!r} is not a number{bound}")
        return repr(value)

    return check


def existing_file(name: str, text: str) -> str:
    """A file that exists (a parameters YAML, a world)."""
    if not os.path.isfile(text):
        raise LaunchArgumentError(
            f"{name}:={text!r}: no such file; pass the path of an existing file"
        )
    return text


def existing_folder(name: str, text: str) -> str:
    """A folder that exists (a checkpoint)."""
    if not os.path.isdir(text):
        raise LaunchArgumentError(
            f"{name}:={text!r}: no such folder; pass the path of an existing folder"
        )
    return text


def _integer_words(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an integer in [{low}, {high}]"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer <= {high}"
    return "an integer"


def check_arguments(values: Mapping[str, str], checks: Mapping[str, Check]) -> dict[str, str]:
    """{name: normalised text} of the checked arguments present in `values`; raises
    LaunchArgumentError listing every bad one on one line."""
    normalised, problems = {}, []
    for name, check in checks.items():
        if name not in values:
            continue
        try:
            normalised[name] = check(name, str(values[name]))
        except LaunchArgumentError as exc:
            problems.append(str(exc))
    if problems:
        raise LaunchArgumentError("; ".join(problems))
    return normalised


def checked_arguments(checks: Mapping[str, Check]) -> Any:
    """An OpaqueFunction that checks the launch configurations (see `check_arguments`) and sets
    the normalised values back, so that later substitutions read `true`, not `True`."""
    from launch.actions import OpaqueFunction, SetLaunchConfiguration

    def apply(context: Any) -> list[Any]:
        values = check_arguments(context.launch_configurations, checks)
        return [SetLaunchConfiguration(name, value) for name, value in values.items()]

    return OpaqueFunction(function=apply)


def describe_exit(name: str, returncode: int) -> str:
    """'sim_node exited with code 1' / 'sim_node was killed by SIGKILL'."""
    if returncode < 0:
        try:
            how = signal.Signals(-returncode).name
        except ValueError:
            how = f"signal {-returncode}"
        return f"{name} was killed by {how}"
    return f"{name} exited with code {returncode}"


class _ExitPolicy:
    def __init__(self, name: str, shutdown_on_success: bool) -> None:
        self.name = name
        self.shutdown_on_success = shutdown_on_success

    def __call__(self, event: Any, context: Any) -> list[Any] | None:
        code = event.returncode
        if code:
            # Raised inside launch's event handling: launch logs it as one ERROR line, shuts
            # everything down and returns 1 (LaunchService.run_async).
            raise NodeExitError(
                f"{describe_exit(self.name, code)}; shutting the launch down (its log is above)"
            )
        if not self.shutdown_on_success:
            return None
        from launch.actions import Shutdown

        return [Shutdown(reason=f"{self.name} finished")]


def exit_policy(name: str, shutdown_on_success: bool = True) -> Callable[[Any, Any], Any]:
    """An `on_exit=` for a launch process: non-zero exit -> the launch fails and stops; zero ->
    the launch shuts down (or, `shutdown_on_success=False`, goes on: a spawner that is done)."""
    return _ExitPolicy(name, shutdown_on_success)


def package_node(
    executable: str, *, shutdown_on_success: bool = True, lifecycle: bool = False, **kwargs: Any
) -> Any:
    """launch_ros Node of this package (`name` defaults to the executable, output to the
    screen) whose exit ends the launch (`exit_policy`); `lifecycle`: a launch_ros
    LifecycleNode, whose transitions `lifecycle_bringup` can drive."""
    from launch_ros.actions import LifecycleNode, Node

    kwargs.setdefault("name", executable)
    kwargs.setdefault("output", "screen")
    if lifecycle:
        kwargs.setdefault("namespace", "")  # LifecycleNode requires it (Humble)
    return (LifecycleNode if lifecycle else Node)(
        package=PACKAGE,
        executable=executable,
        on_exit=exit_policy(kwargs["name"], shutdown_on_success),
        **kwargs,
    )


def lifecycle_bringup(node: Any, condition: Any = None) -> list[Any]:
    """Launch actions that configure the lifecycle `node` once it is up and activate it once
    it is inactive (the managed bring-up); `condition` gates both (e.g. autostart off)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition: int, **kwargs: Any) -> Any:
        return EmitEvent(
            event=ChangeState(
                lifecycle_node_matcher=matches_action(node), transition_id=transition
            ),
            **kwargs,
        )

    activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            goal_state="inactive",
            entities=[change(Transition.TRANSITION_ACTIVATE)],
        ),
        condition=condition,
    )
    return [activate, change(Transition.TRANSITION_CONFIGURE, condition=condition)]


def xacro_description(xacro_file: Any, controllers_file: Any) -> Any:
    """The robot_description parameter: `xacro <xacro_file> controllers_file:=<controllers>`,
    passed as a string."""
    from launch.substitutions import Command, FindExecutable, PathJoinSubstitution
    from launch_ros.parameter_descriptions import ParameterValue

    return ParameterValue(
        Command(
            [
                PathJoinSubstitution([FindExecutable(name="xacro")]),
                " ",
                xacro_file,
                " controllers_file:=",
                controllers_file,
            ]
        ),
        value_type=str,
    )


def gazebo_robot(
    *,
    world: Any,
    robot_description: Any,
    bridge_config: Any,
    entity: str,
    joint_state_broadcaster: Any,
    controllers: list[Any],
) -> list[Any]:
    """Launch actions of a robot in gz sim with ros2_control, in this order: gz sim running
    `world`, robot_state_publisher (`robot_description`, simulation time), `ros_gz_sim create`
    spawning it as `entity`, ros_gz_bridge with `bridge_config`; once the spawn is done the
    `joint_state_broadcaster` spawner, once that is done the `controllers` spawners (actions
    the launch file builds). Every process has the `exit_policy`."""
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(
            PathJoinSubstitution([FindPackageShare("ros_gz_sim"), "launch", "gz_sim.launch.py"])
        ),
        launch_arguments={"gz_args": [" -r -v 1 ", world]}.items(),
    )
    spawn = Node(
        package="ros_gz_sim",
        executable="create",
        output="screen",
        arguments=["-topic", "robot_description", "-name", entity, "-allow_renaming", "true"],
        on_exit=exit_policy("ros_gz_sim create", shutdown_on_success=False),
    )
    return [
        gz_sim,
        Node(
            package="robot_state_publisher",
            executable="robot_state_publisher",
            output="screen",
            parameters=[{"robot_description": robot_description, "use_sim_time": True}],
            on_exit=exit_policy("robot_state_publisher"),
        ),
        spawn,
        Node(
            package="ros_gz_bridge",
            executable="parameter_bridge",
            output="screen",
            parameters=[{"config_file": bridge_config, "use_sim_time": True}],
            on_exit=exit_policy("ros_gz_bridge"),
        ),
        # Controllers start once the robot (and with it gz_ros2_control) exists.
        RegisterEventHandler(
            OnProcessExit(target_action=spawn, on_exit=[joint_state_broadcaster])
        ),
        RegisterEventHandler(
            OnProcessExit(target_action=joint_state_broadcaster, on_exit=list(controllers))
        ),
    ]
