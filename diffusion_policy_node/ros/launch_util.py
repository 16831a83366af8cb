"""What the launch files (launch/*.py) share: argument checks and the exit policy of nodes.

- `checked_arguments({name: check})`, placed after the DeclareLaunchArgument actions and before
  the nodes: checks the *types* and paths of launch arguments (`use_sim_time:=maybe`,
  `seed:=abc`, `params_file:=/missing.yaml`) and fails the launch with one line naming each bad
  argument, its value and what is allowed, before any node starts. Booleans are
  case-insensitive (`True`, `TRUE`) and rewritten to `true`/`false` for what reads them
  afterwards. What a value means (device names, modes) is the node's to check.
- `optional(check)`: an argument whose default is "" ("not given": it changes nothing, see
  `given_arguments`); `given_arguments` / `params_file_value` / `robot_parameters`: the
  precedence of settings, command-line arguments > `params_file` > the checkpoint.
- `package_node(executable, ...)`: a launch_ros Node of this package with `exit_policy`
  (decided by `exit_decision`): a node that exits on its own with a non-zero code (a FATAL
  start-up error, a crash) shuts the launch down and `ros2 launch` exits 1 with one line
  ("Caught exception in launch ...: policy_node exited with code 1 ..."); one that exits 0
  shuts the launch down normally (or not, `shutdown_on_success=False`); a process that exits
  while the launch is shutting down (Ctrl-C, another node's exit) was stopped by the launch,
  whatever its code, and is no failure.
- `lifecycle_bringup(node)`: the managed bring-up (`BRINGUP_ACTIVATE`, `BRINGUP_FAILED`,
  `bringup_step`): configure once the node is up, activate once on configuring -> inactive (a
  later deactivate by an operator or `~/stop` stays), end the launch (exit 1) when that
  configure fails.
- The Gazebo bring-up of both gazebo*.launch.py files is `ros/gazebo_launch.py`.

`launch`/`launch_ros` (a full ROS 2 install) are imported only inside the functions that build
launch actions; the checks, the precedence, the exit policy and the bring-up's state filter are
plain Python, tested without them.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

__all__ = [
    "BRINGUP_ACTIVATE",
    "BRINGUP_FAILED",
    "ExitDecision",
    "LaunchArgumentError",
    "NodeExitError",
    "boolean",
    "bringup_step",
    "check_arguments",
    "checked_arguments",
    "existing_file",
    "existing_folder",
    "exit_decision",
    "exit_policy",
    "given_arguments",
    "integer",
    "lifecycle_bringup",
    "number",
    "optional",
    "package_node",
    "params_file_value",
    "recorder_fallback",
    "rosbag2_available",
    "sim_task_files",
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


def not_given(text: str) -> bool:
    """An optional argument left out: its default "", or an explicitly empty value (`''` or
    `""`: what `name:=''` gives on a shell that keeps the quotes)."""
    return text.strip() in ("", "''", '""')


def optional(check: Check) -> Check:
    """`check` for an argument whose default "" means "not given" (left as "")."""

    def check_given(name: str, text: str) -> str:
        return "" if not_given(text) else check(name, text)

    check_given.__name__ = f"optional({getattr(check, '__name__', 'check')})"
    return check_given


def given_arguments(values: Mapping[str, str], names: Iterable[str]) -> dict[str, str]:
    """{name: value} of the arguments in `names` that were given a value (see `not_given`):
    only those override the node's parameters; one not given changes nothing."""
    return {
        name: str(values[name])
        for name in names
        if name in values and not not_given(str(values[name]))
    }


def params_file_value(path: str, node_name: str, key: str) -> Any:
    """The value a ROS parameters YAML gives `key` for `node_name` (sections `/**`, then
    `node_name` / `/node_name`, the later winning as rcl applies them), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        raise LaunchArgumentError(f"params_file:={path!r}: cannot read it: {exc}") from exc
    found = None
    for section in ("/**", node_name, f"/{node_name}"):
        params = ((doc or {}).get(section) or {}).get("ros__parameters") or {}
        if isinstance(params, dict) and key in params:
            found = params[key]
    return found


# robot.launch.py's arguments that override params_file when given (and only then).
ROBOT_OVERRIDES = ("use_sim_time", "autostart", "device", "output_mode")


def robot_parameters(
    values: Mapping[str, str], *, node_name: str = "policy_node"
) -> tuple[dict[str, Any], bool]:
    """(the parameters robot.launch.py passes after `params_file`, autostart): the checkpoint,
    and only the arguments given on the command line (`use_sim_time`, `autostart` as booleans,
    `device`, `output_mode` as strings), so that the precedence is command line > `params_file`
    > the checkpoint. `autostart` is the effective one: the argument, else the params file's,
    else true (the node's default)."""
    given = given_arguments(values, ROBOT_OVERRIDES)
    params: dict[str, Any] = {"checkpoint": str(values["checkpoint"])}
    for name in ("use_sim_time", "autostart"):
        if name in given:
            params[name] = boolean(name, given[name]) == "true"
    for name in ("device", "output_mode"):
        if name in given:
            params[name] = given[name]
    autostart = params.get("autostart")
    if autostart is None:
        from_file = params_file_value(str(values["params_file"]), node_name, "autostart")
        autostart = True if from_file is None else bool(from_file)
    return params, autostart


# sim.launch.py: each task's checkpoint and sim_node parameters (paths in the package share).
SIM_TASK_FILES = {
    "reach": {"checkpoint": "models/sim_arm_diffusion", "sim_params_file": "config/sim_node.yaml"},
    "pick_place": {
        "checkpoint": "models/ur5e_pick_place",
        "sim_params_file": "config/robots/ur5e_gripper/sim_node.yaml",
    },
}


def sim_task_files(values: Mapping[str, str], share: str) -> dict[str, str]:
    """{checkpoint, sim_params_file} for sim.launch.py: each as given on the command line,
    else the `task`'s own (SIM_TASK_FILES) in the package share `share`."""
    task = str(values.get("task", "reach"))
    if task not in SIM_TASK_FILES:
        raise LaunchArgumentError(f"task:={task!r}: allowed: {' | '.join(SIM_TASK_FILES)}")
    given = given_arguments(values, ("checkpoint", "sim_params_file"))
    return {
        name: given.get(name, os.path.join(share, relative))
        for name, relative in SIM_TASK_FILES[task].items()
    }


def rosbag2_available(find_spec: Callable[[str], Any] | None = None) -> bool:
    """Whether `ros2 bag` exists: rosbag2's ros2cli verb (the `ros2bag` package) is installed
    (a full ROS 2 install has it; the PyPI wheels do not)."""
    import importlib.util

    return (find_spec or importlib.util.find_spec)("ros2bag") is not None


def recorder_fallback(values: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """record.launch.py without rosbag2: (recorder_node's parameters, the one line saying so).
    `output` demos/episode_0000 -> the bag demos/episode_0000_0000 (recorder_node numbers its
    bags), recording at once; Ctrl-C closes it."""
    output = os.path.normpath(str(values["output"]))
    folder, prefix = os.path.dirname(output) or ".", os.path.basename(output)
    params = {
        "topics": str(values["topics"]).split(),
        "output_dir": folder,
        "bag_prefix": prefix,
        "storage": str(values.get("storage", "mcap")),
        "use_sim_time": str(values.get("use_sim_time", "false")) == "true",
        "start_on_launch": True,
    }
    bag = os.path.join(folder, f"{prefix}_0000")
    line = (
        "rosbag2 is not installed (no `ros2 bag`): recording with recorder_node instead, into "
        f"{bag} (the next free index) once every topic has a publisher; Ctrl-C closes the bag"
    )
    return params, line


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


@dataclass(frozen=True)
class ExitDecision:
    """What the launch does when a process exits: "ignore", "shutdown" (normally, exit 0) or
    "fail" (shut down, `ros2 launch` exits 1 with `message`)."""

    action: str
    message: str


def exit_decision(
    name: str, returncode: int, *, launch_stopping: bool, shutdown_on_success: bool = True
) -> ExitDecision:
    """The exit policy. A process that exits while the launch is shutting down (Ctrl-C, or
    after another node's exit) was stopped by the launch: no failure, whatever its code (a
    talker's 130, a SIGTERM escalation), and no second shutdown. Otherwise it exited on its own:
    non-zero fails the launch; zero ends it (`shutdown_on_success`) or not (a spawner done)."""
    if launch_stopping:
        return ExitDecision("ignore", f"{describe_exit(name, returncode)} (stopped by the launch)")
    if returncode:
        why = describe_exit(name, returncode)
        return ExitDecision("fail", f"{why}; shutting the launch down (its log is above)")
    if shutdown_on_success:
        return ExitDecision("shutdown", f"{name} finished")
    return ExitDecision("ignore", f"{name} finished")


class _ExitPolicy:
    def __init__(self, name: str, shutdown_on_success: bool) -> None:
        self.name = name
        self.shutdown_on_success = shutdown_on_success

    def __call__(self, event: Any, context: Any) -> list[Any] | None:
        decision = exit_decision(
            self.name,
            event.returncode,
            launch_stopping=bool(getattr(context, "is_shutdown", False)),
            shutdown_on_success=self.shutdown_on_success,
        )
        if decision.action == "fail":
            # Raised inside launch's event handling: launch logs it as one ERROR line, shuts
            # everything down and returns 1 (LaunchService.run_async).
            raise NodeExitError(decision.message)
        if decision.action == "ignore":
            return None
        from launch.actions import Shutdown

        return [Shutdown(reason=decision.message)]


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


# The managed bring-up's transitions (launch_ros StateTransition labels: start -> goal).
BRINGUP_ACTIVATE = ("configuring", "inactive")  # configure succeeded: activate, once
BRINGUP_FAILED = ("configuring", "unconfigured")  # configure failed: end the launch (exit 1)


def bringup_step(start_state: str, goal_state: str) -> str | None:
    """What the managed bring-up does on a transition event: "activate" when configure has
    succeeded, "fail" when it failed, nothing otherwise (deactivating -> inactive: an operator's
    deactivate or `~/stop` must stay; cleanup, shutdown: theirs too)."""
    if (start_state, goal_state) == BRINGUP_ACTIVATE:
        return "activate"
    if (start_state, goal_state) == BRINGUP_FAILED:
        return "fail"
    return None


def configure_failed_message(name: str) -> str:
    """The launch's one line when the managed bring-up's configure fails."""
    return f"{name}: configure failed (the reason is in its log above); shutting the launch down"


def lifecycle_bringup(node: Any, name: str = "policy_node", condition: Any = None) -> list[Any]:
    """Launch actions that configure the lifecycle `node` once it is up, activate it once when
    that configure succeeds (configuring -> inactive, `BRINGUP_ACTIVATE`) and end the launch
    with exit 1 when it fails (`BRINGUP_FAILED`); `condition` gates all of them. Both handlers
    fire once: afterwards the lifecycle belongs to the operator."""
    from launch.actions import EmitEvent, OpaqueFunction, RegisterEventHandler
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

    def fail(context: Any) -> None:
        if not getattr(context, "is_shutdown", False):
            raise NodeExitError(configure_failed_message(name))

    def on(transition: tuple[str, str], entities: list[Any]) -> Any:
        start_state, goal_state = transition
        return RegisterEventHandler(
            OnStateTransition(
                target_lifecycle_node=node,
                start_state=start_state,
                goal_state=goal_state,
                entities=entities,
                handle_once=True,
            ),
            condition=condition,
        )

    return [
        on(BRINGUP_ACTIVATE, [change(Transition.TRANSITION_ACTIVATE)]),
        on(BRINGUP_FAILED, [OpaqueFunction(function=fail)]),
        change(Transition.TRANSITION_CONFIGURE, condition=condition),
    ]
