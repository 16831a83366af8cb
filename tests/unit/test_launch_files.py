"""Launch files and the Gazebo description, checked without ROS launch installed.

The launch files are parsed with `ast` (not imported): every package file they reference must
exist and be installed, every executable must be a console script of setup.py or a known
external one, every parameter passed to our nodes must be declared by the node, every
LaunchConfiguration must be declared with a description, checked (types, paths) before any
node starts, and every process must end the launch when it fails (`ros.launch_util`). The
URDF/xacro, controllers YAML and bridge YAML must agree with the MuJoCo sim's joints and
topics. Where `launch_ros` is importable, the descriptions are also built for real.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from diffusion_policy_node.ros import launch_util
from diffusion_policy_node.ros.launch_util import LaunchArgumentError, NodeExitError
from diffusion_policy_node.sim.arm_task import HOME_QPOS, JOINT_LIMIT, JOINT_NAMES

REPO = Path(__file__).resolve().parents[2]
PKG = "diffusion_policy_node"
LAUNCH_FILES = [
    "robot.launch.py",
    "sim.launch.py",
    "record.launch.py",
    "gazebo.launch.py",
    "gazebo_pick_place.launch.py",
    "selftest.launch.py",
]
KNOWN_EXTERNAL_EXECUTABLES = {
    ("ros_gz_sim", "create"),
    ("ros_gz_bridge", "parameter_bridge"),
    ("controller_manager", "spawner"),
    ("robot_state_publisher", "robot_state_publisher"),
}
KNOWN_EXTERNAL_SHARES = {"ros_gz_sim"}
KNOWN_COMMANDS = {"ros2"}
BUILTIN_PARAMETERS = {"use_sim_time"}  # declared by rclpy itself
DESCRIPTION = REPO / "description"


# ----------------------------------------------------------------------------- AST helpers
def _name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _name(n.func) == name]


def _kwarg(call: ast.Call, key: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def _const(node: ast.AST | None) -> object:
    return node.value if isinstance(node, ast.Constant) else None


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


GAZEBO_LAUNCH = REPO / PKG / "ros" / "gazebo_launch.py"


def _launch_tree(launch_file: str) -> ast.Module:
    """The launch file's AST, with the functions of `ros/gazebo_launch.py` it calls (and those
    they call in turn) appended: what they declare, check and start is checked as the file's."""
    tree = _parse(REPO / "launch" / launch_file)
    builders = {n.name: n for n in _parse(GAZEBO_LAUNCH).body if isinstance(n, ast.FunctionDef)}
    todo = [tree]
    while todo:
        called = {_name(c.func) for c in ast.walk(todo.pop()) if isinstance(c, ast.Call)}
        for name in sorted(called & set(builders)):
            todo.append(builders.pop(name))
            tree.body.append(todo[-1])
    return tree


def _own_share_names(tree: ast.Module) -> set[str]:
    """Variables bound to FindPackageShare("diffusion_policy_node")."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and _name(node.value.func) == "FindPackageShare"
            and _const(node.value.args[0]) == PKG
        ):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _is_own_share(node: ast.AST, share_names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in share_names
    return (
        isinstance(node, ast.Call)
        and _name(node.func) == "FindPackageShare"
        and _const(node.args[0]) == PKG
    )


def package_paths(tree: ast.Module) -> list[str]:
    """Relative paths of every PathJoinSubstitution([<our share>, "a", "b", ...])."""
    share_names = _own_share_names(tree)
    paths = []
    for call in _calls(tree, "PathJoinSubstitution"):
        parts = call.args[0]
        if not isinstance(parts, ast.List) or not parts.elts:
            continue
        if not _is_own_share(parts.elts[0], share_names):
            continue
        rest = [_const(e) for e in parts.elts[1:]]
        assert all(isinstance(p, str) for p in rest), (
            f"line {call.lineno}: a package path with a non-literal part cannot be checked"
        )
        paths.append("/".join(rest))  # type: ignore[arg-type]
    return paths


def node_calls(tree: ast.Module) -> list[tuple[str, str, ast.Call]]:
    """(package, executable, call) of every launch_ros Node and `package_node` call."""
    out = []
    for call in _calls(tree, "Node"):
        package, executable = _const(_kwarg(call, "package")), _const(_kwarg(call, "executable"))
        assert isinstance(package, str) and isinstance(executable, str), (
            f"line {call.lineno}: Node needs literal package= and executable="
        )
        out.append((package, executable, call))
    for call in _calls(tree, "package_node"):
        executable = _const(call.args[0]) if call.args else None
        assert isinstance(executable, str), f"line {call.lineno}: package_node needs a literal"
        out.append((PKG, executable, call))
    return out


def controller_types(doc: dict) -> dict[str, str]:
    """{controller name: type} of the controller_manager section of a controllers YAML."""
    manager = doc["controller_manager"]["ros__parameters"]
    return {name: c["type"] for name, c in manager.items() if isinstance(c, dict)}


def gazebo_controllers(launch_file: str) -> list[str]:
    """The `controllers=[...]` the launch file's gazebo_policy_launch call spawns (besides
    joint_state_broadcaster, which `gazebo_robot` always spawns first)."""
    tree = _parse(REPO / "launch" / launch_file)
    (call,) = _calls(tree, "gazebo_policy_launch")
    names = _kwarg(call, "controllers")
    assert isinstance(names, ast.List), f"{launch_file}: controllers= needs a list literal"
    spawner = _calls(_parse(GAZEBO_LAUNCH), "_spawner")
    assert "joint_state_broadcaster" in {_const(c.args[0]) for c in spawner}
    return [str(_const(e)) for e in names.elts]


def passed_parameters(call: ast.Call) -> set[str]:
    """Keys of the dict literals in parameters=[...] and of `-p key:=value` arguments."""
    keys: set[str] = set()
    params = _kwarg(call, "parameters")
    if isinstance(params, ast.List):
        for item in params.elts:
            if isinstance(item, ast.Dict):
                keys |= {str(_const(k)) for k in item.keys}
    args = _kwarg(call, "arguments")
    if isinstance(args, ast.List):
        items = [_const(e) for e in args.elts]
        for flag, value in itertools.pairwise(items):
            if flag == "-p" and isinstance(value, str):
                keys.add(value.split(":=")[0])
    return keys


# ----------------------------------------------------------------------------- package facts
def setup_tree() -> ast.Module:
    return _parse(REPO / "setup.py")


def console_scripts() -> dict[str, str]:
    """name -> "module:function" from setup.py's console_scripts."""
    for node in ast.walk(setup_tree()):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if _const(key) == "console_scripts" and isinstance(value, ast.List):
                    entries = [str(_const(e)) for e in value.elts]
                    return dict(tuple(p.strip() for p in e.split("=", 1)) for e in entries)
    raise AssertionError("setup.py has no console_scripts")


def installed_folders() -> set[str]:
    return {str(_const(c.args[0])) for c in _calls(setup_tree(), "share_tree")}


def module_param_keys(relpath: str) -> set[str]:
    """Names of the `ParamSpec(...)` rows of a node module's parameter table."""
    names = {str(_const(c.args[0])) for c in _calls(_parse(REPO / PKG / relpath), "ParamSpec")}
    names.discard("None")
    assert names, f"{relpath} declares no ParamSpec parameters"
    return names


def policy_param_keys() -> set[str]:
    """Parameters policy_node declares (ros/policy_node_params.py), else the keys of its YAML."""
    params_py = REPO / PKG / "ros" / "policy_node_params.py"
    if params_py.exists():
        names = {str(_const(c.args[0])) for c in _calls(_parse(params_py), "ParamSpec")}
        names.discard("None")
        if names:
            return names
    return set(yaml_params("policy_node.yaml", "policy_node"))


def yaml_params(name: str, node: str) -> dict:
    doc = yaml.safe_load((REPO / "config" / name).read_text())
    return doc[node]["ros__parameters"]


NODE_PARAMS = {
    "policy_node": policy_param_keys,
    "sim_node": lambda: module_param_keys("ros/sim_node.py"),
    "recorder_node": lambda: module_param_keys("ros/recorder_node.py"),
}


# ----------------------------------------------------------------------------- launch files
@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_referenced_package_files_exist_and_are_installed(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    folders = installed_folders()
    for rel in package_paths(tree):
        # A file, or a checkpoint folder (models/<name>/config.yaml + weights).
        exists = (REPO / rel).is_file() or (REPO / rel / "config.yaml").is_file()
        assert exists, f"{launch_file}: {rel} does not exist in the package"
        assert rel.split("/")[0] in folders, f"{launch_file}: {rel} is not installed by setup.py"
    for call in _calls(tree, "FindPackageShare"):
        package = _const(call.args[0])
        assert package == PKG or package in KNOWN_EXTERNAL_SHARES, (
            f"{launch_file}:{call.lineno}: unknown package share {package!r}"
        )


def test_launch_files_reference_what_they_should() -> None:
    refs = {f: set(package_paths(_launch_tree(f))) for f in LAUNCH_FILES}
    assert "config/policy_node.yaml" in refs["robot.launch.py"]
    assert "config/policy_node.yaml" in refs["sim.launch.py"]
    # each sim task's own checkpoint and sim_node parameters, chosen by sim_task_files
    assert _calls(_launch_tree("sim.launch.py"), "sim_task_files")
    assert set(launch_util.SIM_TASK_FILES) == {"reach", "pick_place"}
    for files in launch_util.SIM_TASK_FILES.values():
        for rel in files.values():
            assert (REPO / rel).is_file() or (REPO / rel / "config.yaml").is_file(), rel
            assert rel.split("/")[0] in installed_folders(), rel
    assert {
        "description/urdf/dp_arm.urdf.xacro",
        "description/config/dp_arm_controllers.yaml",
        "description/config/gz_bridge.yaml",
        "description/worlds/dp_reach.sdf",
    } <= refs["gazebo.launch.py"]


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_executables_exist(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    scripts = console_scripts()
    for package, executable, call in node_calls(tree):
        if package == PKG:
            assert executable in scripts, (
                f"{launch_file}:{call.lineno}: {executable} is not a console script in setup.py"
            )
        else:
            assert (package, executable) in KNOWN_EXTERNAL_EXECUTABLES, (
                f"{launch_file}:{call.lineno}: unknown external executable {package}/{executable}"
            )
    for call in _calls(tree, "ExecuteProcess"):
        cmd = _kwarg(call, "cmd")
        assert isinstance(cmd, ast.List) and _const(cmd.elts[0]) in KNOWN_COMMANDS


def test_console_scripts_point_at_functions() -> None:
    for name, target in console_scripts().items():
        module, func = target.split(":")
        path = REPO / Path(*module.split(".")).with_suffix(".py")
        assert path.is_file(), f"console script {name}: {path} missing"
        defs = {n.name for n in _parse(path).body if isinstance(n, ast.FunctionDef)}
        assert func in defs, f"console script {name}: {module} defines no {func}()"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_node_parameters_are_declared(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    for package, executable, call in node_calls(tree):
        if package != PKG:
            continue
        declared = NODE_PARAMS.get(executable, set)() | BUILTIN_PARAMETERS
        unknown = passed_parameters(call) - declared
        assert not unknown, f"{launch_file}:{call.lineno}: {executable} declares no {unknown}"
    if _calls(tree, "robot_parameters"):  # the arguments robot_parameters passes on
        unknown = {"checkpoint", *launch_util.ROBOT_OVERRIDES} - policy_param_keys()
        unknown -= BUILTIN_PARAMETERS
        assert not unknown, f"{launch_file}: policy_node declares no {unknown}"


@pytest.mark.parametrize(
    "yaml_name, node", [("policy_node.yaml", "policy_node"), ("sim_node.yaml", "sim_node"),
                        ("recorder_node.yaml", "recorder_node")],
)  # fmt: skip
def test_parameter_files_match_declarations(yaml_name: str, node: str) -> None:
    keys = set(yaml_params(yaml_name, node))
    assert keys, f"config/{yaml_name} sets no parameters"
    unknown = keys - NODE_PARAMS[node]() - BUILTIN_PARAMETERS
    assert not unknown, f"config/{yaml_name}: {node} declares no {sorted(unknown)}"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_launch_arguments_are_declared_with_descriptions(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    declared = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        declared[_const(call.args[0])] = _const(_kwarg(call, "description"))
    assert declared, f"{launch_file} declares no arguments"
    for name, description in declared.items():
        assert isinstance(description, str) and description, f"{launch_file}: {name} undescribed"
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    # read in an OpaqueFunction: values["name"], and what robot_parameters(values) reads
    used |= {
        _const(n.slice) for n in ast.walk(tree) if isinstance(n, ast.Subscript) and
        isinstance(n.value, ast.Name) and n.value.id == "values"
    }  # fmt: skip
    if _calls(tree, "robot_parameters"):
        used |= {"checkpoint", "params_file", *launch_util.ROBOT_OVERRIDES}
    if _calls(tree, "sim_task_files"):
        used |= {"task", "checkpoint", "sim_params_file"}
    for call in _calls(tree, "given_arguments"):  # given_arguments(values, ["device"])
        if isinstance(call.args[1], ast.List):
            used |= {_const(e) for e in call.args[1].elts}
    assert used <= set(declared), f"{launch_file}: undeclared {used - set(declared)}"
    assert set(declared) <= used, f"{launch_file}: unused {set(declared) - used}"
    tree_text = (REPO / "launch" / launch_file).read_text()
    assert "def generate_launch_description() -> LaunchDescription" in tree_text


def test_launch_descriptions_load() -> None:
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not installed (the PyPI ROS wheels have no launch); the AST "
                    "checks above cover the files")  # fmt: skip
    from launch import LaunchDescription

    for launch_file in LAUNCH_FILES:
        spec = importlib.util.spec_from_file_location(
            launch_file[:-3], REPO / "launch" / launch_file
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        description = module.generate_launch_description()
        assert isinstance(description, LaunchDescription)
        assert description.get_launch_arguments()


# ----------------------------------------------------------------------------- failing loudly
# Which check each launch argument needs, by name (types and paths; values are the node's).
REQUIRED_CHECKS = {
    "use_sim_time": "boolean",
    "checkpoint": "existing_folder",
    "params_file": "existing_file",
    "sim_params_file": "existing_file",
    "world": "existing_file",
    "seed": "integer",
    "real_time_factor": "number",
    "count": "integer",
}
PARAM_SOURCES = {
    "policy_node": "ros/policy_node_params.py",
    "sim_node": "ros/sim_node.py",
    "recorder_node": "ros/recorder_node.py",
}


def _description_entities(tree: ast.Module) -> list[ast.AST]:
    """The list literal passed to LaunchDescription(...), with names resolved to their
    assignment (`spawn = Node(...)` ... `LaunchDescription([..., spawn])`)."""
    assigned = {
        t.id: node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    (call,) = _calls(tree, "LaunchDescription")
    items = call.args[0]
    assert isinstance(items, ast.List)
    return [assigned.get(e.id, e) if isinstance(e, ast.Name) else e for e in items.elts]


def _checks(tree: ast.Module) -> dict[str, str]:
    """{argument: check name} of the file's one checked_arguments({...}) call."""
    calls = _calls(tree, "checked_arguments")
    assert len(calls) == 1, "expected one checked_arguments({...}) call"
    table = calls[0].args[0]
    assert isinstance(table, ast.Dict)

    def check_name(v: ast.AST) -> str:
        if isinstance(v, ast.Call) and _name(v.func) == "optional":  # optional(boolean)
            return check_name(v.args[0])
        return _name(v.func) if isinstance(v, ast.Call) else _name(v)

    return {str(_const(k)): check_name(v) for k, v in zip(table.keys, table.values, strict=True)}


def _param_kinds(executable: str) -> dict[str, str]:
    tree = _parse(REPO / PKG / PARAM_SOURCES[executable])
    return {str(_const(c.args[0])): str(_const(c.args[1])) for c in _calls(tree, "ParamSpec")}


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_arguments_are_checked_before_anything_starts(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    declared = {_const(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    checks = _checks(tree)
    assert set(checks) <= declared, f"{launch_file}: checks undeclared {set(checks) - declared}"
    for name in declared & set(REQUIRED_CHECKS):
        assert checks.get(name) == REQUIRED_CHECKS[name], (
            f"{launch_file}: {name} must be checked with {REQUIRED_CHECKS[name]}"
        )
    for name, check in checks.items():
        assert callable(getattr(launch_util, check, None)), f"{launch_file}: {name}: {check}?"
    kinds = [
        _name(e.func) if isinstance(e, ast.Call) else type(e).__name__
        for e in _description_entities(tree)
    ]
    at = kinds.index("checked_arguments")
    assert set(kinds[:at]) == {"DeclareLaunchArgument"}, f"{launch_file}: {kinds}"
    assert "DeclareLaunchArgument" not in kinds[at + 1 :], f"{launch_file}: {kinds}"


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_every_process_ends_the_launch_when_it_fails(launch_file: str) -> None:
    tree = _launch_tree(launch_file)
    assert not [
        call.lineno
        for package, _, call in node_calls(tree)
        if package == PKG and _name(call.func) == "Node"
    ], f"{launch_file}: start this package's nodes with package_node (it sets the exit policy)"
    processes = [call for _, _, call in node_calls(tree) if _name(call.func) == "Node"]
    processes += _calls(tree, "ExecuteProcess")
    for call in processes:
        on_exit = _kwarg(call, "on_exit")
        assert isinstance(on_exit, ast.Call) and _name(on_exit.func) == "exit_policy", (
            f"{launch_file}:{call.lineno}: needs on_exit=exit_policy(...)"
        )


@pytest.mark.parametrize("launch_file", LAUNCH_FILES)
def test_string_parameters_are_passed_as_strings(launch_file: str) -> None:
    """`device:=0` must reach policy_node as the string '0' (its own one-line error), not be
    turned into an integer by launch_ros's YAML parsing of substitutions."""
    tree = _launch_tree(launch_file)
    for package, executable, call in node_calls(tree):
        if package != PKG or executable not in PARAM_SOURCES:
            continue
        kinds = _param_kinds(executable)
        params = _kwarg(call, "parameters")
        for item in params.elts if isinstance(params, ast.List) else []:
            if not isinstance(item, ast.Dict):
                continue
            for key, value in zip(item.keys, item.values, strict=True):
                if kinds.get(_const(key)) != "string" or isinstance(value, ast.Constant):
                    continue
                assert (
                    isinstance(value, ast.Call)
                    and _name(value.func) == "ParameterValue"
                    and _name(_kwarg(value, "value_type")) == "str"
                ), f"{launch_file}:{value.lineno}: pass {_const(key)} as ParameterValue(str)"


def _record_flag(use_sim_time: str) -> str:
    """What record.launch.py's PythonExpression gives for `use_sim_time:=<text>` after the
    argument check (which the launch runs before the process's substitutions)."""
    tree = _launch_tree("record.launch.py")
    assert _checks(tree)["use_sim_time"] == "boolean"
    value = launch_util.check_arguments(
        {"use_sim_time": use_sim_time}, {"use_sim_time": launch_util.boolean}
    )["use_sim_time"]
    (expression,) = _calls(tree, "PythonExpression")
    parts = [
        value if isinstance(e, ast.Name) and e.id == "use_sim_time" else _const(e)
        for e in expression.args[0].elts
    ]
    assert all(isinstance(p, str) for p in parts)
    return eval("".join(parts))  # the same evaluation as launch's PythonExpression


@pytest.mark.parametrize(
    "text, flag", [("true", "--use-sim-time"), ("True", "--use-sim-time"),
                   ("TRUE", "--use-sim-time"), ("false", ""), ("False", "")],
)  # fmt: skip
def test_record_use_sim_time_in_any_case(text: str, flag: str) -> None:
    assert _record_flag(text) == flag


def test_bad_arguments_are_one_line_naming_each(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("x: {}\n")
    checks = {
        "use_sim_time": launch_util.boolean,
        "params_file": launch_util.existing_file,
        "checkpoint": launch_util.existing_folder,
        "seed": launch_util.integer(0, 10),
        "real_time_factor": launch_util.number(low=0.0),
    }
    good = {"use_sim_time": "True", "params_file": str(params), "checkpoint": str(tmp_path),
            "seed": "3", "real_time_factor": "2", "other": "not checked"}  # fmt: skip
    assert launch_util.check_arguments(good, checks) == {
        "use_sim_time": "true",
        "params_file": str(params),
        "checkpoint": str(tmp_path),
        "seed": "3",
        "real_time_factor": "2.0",
    }
    bad = {"use_sim_time": "maybe", "params_file": "/nonexistent.yaml",
           "checkpoint": str(params), "seed": "abc", "real_time_factor": "fast"}  # fmt: skip
    with pytest.raises(LaunchArgumentError) as info:
        launch_util.check_arguments(bad, checks)
    text = str(info.value)
    assert "\n" not in text
    for expected in [
        "use_sim_time:='maybe' is not a boolean; allowed: true or false",
        "params_file:='/nonexistent.yaml': no such file",
        f"checkpoint:='{params}': no such folder",
        "seed:='abc' is not an integer in [0, 10]",
        "real_time_factor:='fast' is not a number >= 0",
    ]:
        assert expected in text, text
    with pytest.raises(LaunchArgumentError, match=r"seed:='11' is not an integer in \[0, 10\]"):
        launch_util.check_arguments({"seed": "11"}, checks)
    with pytest.raises(LaunchArgumentError, match="real_time_factor:='-1' is not a number >= 0"):
        launch_util.check_arguments({"real_time_factor": "-1"}, checks)


@pytest.fixture
def launch_actions(monkeypatch) -> type:
    """`launch.actions.Shutdown`: the real one where ROS launch is installed, else a stand-in."""
    try:
        from launch.actions import Shutdown

        return Shutdown
    except ImportError:  # (the repository's launch/ folder is a namespace package here)
        pass

    class Shutdown:
        def __init__(self, reason: str) -> None:
            self.reason = reason

    package, actions = types.ModuleType("launch"), types.ModuleType("launch.actions")
    actions.Shutdown = Shutdown  # type: ignore[attr-defined]
    package.actions = actions  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "launch", package)
    monkeypatch.setitem(sys.modules, "launch.actions", actions)
    return Shutdown


def test_exit_policy(launch_actions: type) -> None:
    def exited(code: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(returncode=code)

    running = types.SimpleNamespace(is_shutdown=False)
    policy = launch_util.exit_policy("sim_node")
    with pytest.raises(NodeExitError, match=r"^sim_node exited with code 1; shutting the launch"):
        policy(exited(1), running)
    with pytest.raises(NodeExitError, match=r"^sim_node was killed by SIGKILL"):
        policy(exited(-9), running)
    (shutdown,) = policy(exited(0), running)
    assert isinstance(shutdown, launch_actions)
    talker = launch_util.exit_policy("talker", shutdown_on_success=False)
    assert talker(exited(0), running) is None
    with pytest.raises(NodeExitError, match=r"^talker exited with code 2"):
        talker(exited(2), running)


@pytest.mark.parametrize("code", [0, 1, 130, -2, -9, -15])
def test_exit_policy_while_the_launch_stops(launch_actions: type, code: int) -> None:
    """A process that exits while the launch shuts down (Ctrl-C; the listener of the selftest
    finished and the talker got SIGINT, 130) was stopped by the launch: no failure, and no
    second Shutdown (launch_ros: "Cannot shutdown a ROS adapter that is not running")."""
    stopping = types.SimpleNamespace(is_shutdown=True)
    for shutdown_on_success in (True, False):
        policy = launch_util.exit_policy("policy_node", shutdown_on_success)
        assert policy(types.SimpleNamespace(returncode=code), stopping) is None


def test_exit_decision() -> None:
    decide = launch_util.exit_decision
    assert decide("n", 1, launch_stopping=False).action == "fail"
    assert decide("n", 1, launch_stopping=False).message == (
        "n exited with code 1; shutting the launch down (its log is above)"
    )
    assert decide("n", -11, launch_stopping=False).message.startswith("n was killed by SIGSEGV")
    assert decide("n", 0, launch_stopping=False).action == "shutdown"
    assert decide("n", 0, launch_stopping=False, shutdown_on_success=False).action == "ignore"
    for code in (0, 1, 130, -9):
        assert decide("n", code, launch_stopping=True).action == "ignore"


# ----------------------------------------------------------------------------- bring-up
@pytest.mark.parametrize(
    "start, goal, step",
    [("configuring", "inactive", "activate"), ("configuring", "unconfigured", "fail"),
     ("deactivating", "inactive", None), ("activating", "active", None),
     ("cleaningup", "unconfigured", None), ("shuttingdown", "finalized", None),
     ("activating", "inactive", None), ("errorprocessing", "unconfigured", None)],
)  # fmt: skip
def test_bringup_step(start: str, goal: str, step: str | None) -> None:
    """Activate once configure succeeds, never when an operator's deactivate or ~/stop lands
    in inactive; end the launch when configure fails."""
    assert launch_util.bringup_step(start, goal) == step


@pytest.fixture
def bringup_handlers(monkeypatch) -> list[dict]:
    """Stand-ins for the launch/launch_ros classes lifecycle_bringup builds (whether or not
    ROS launch is installed): every OnStateTransition's keyword arguments."""
    handlers: list[dict] = []

    class Recorded:
        def __init__(self, *args, **kwargs) -> None:
            self.args, self.kwargs = args, kwargs

    class OnStateTransition(Recorded):
        def __init__(self, **kwargs) -> None:
            super().__init__(**kwargs)
            handlers.append(kwargs)

    modules = {
        "launch": {},
        "launch.actions": {"EmitEvent": Recorded, "OpaqueFunction": Recorded,
                           "RegisterEventHandler": Recorded},
        "launch.events": {"matches_action": lambda action: action},
        "launch_ros": {},
        "launch_ros.event_handlers": {"OnStateTransition": OnStateTransition},
        "launch_ros.events": {},
        "launch_ros.events.lifecycle": {"ChangeState": Recorded},
    }  # fmt: skip
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
    return handlers


def test_lifecycle_bringup_filters_on_start_and_goal_state(bringup_handlers: list) -> None:
    """launch_ros's OnStateTransition matches every filter it is given: the start state must be
    one of them, else deactivating -> inactive re-activates the node (the operator's stop is
    undone within milliseconds)."""
    actions = launch_util.lifecycle_bringup(object())
    assert len(actions) == 3
    by_goal = {h["goal_state"]: h for h in bringup_handlers}
    assert set(by_goal) == {"inactive", "unconfigured"}
    assert by_goal["inactive"]["start_state"] == "configuring"
    assert by_goal["unconfigured"]["start_state"] == "configuring"
    assert all(h["handle_once"] for h in bringup_handlers)
    for handler in bringup_handlers:
        assert launch_util.bringup_step(handler["start_state"], handler["goal_state"])
    (fail,) = by_goal["unconfigured"]["entities"]
    with pytest.raises(NodeExitError, match=r"^policy_node: configure failed"):
        fail.kwargs["function"](types.SimpleNamespace(is_shutdown=False))
    assert fail.kwargs["function"](types.SimpleNamespace(is_shutdown=True)) is None


# ----------------------------------------------------------------------------- precedence
def _params_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "policy_node.yaml"
    path.write_text(text)
    return str(path)


def test_arguments_not_given_change_nothing(tmp_path: Path) -> None:
    """robot.launch.py: command line > params_file > checkpoint; an argument not given (its
    default "", or an explicit empty `''`) is not passed, so params_file's value stands."""
    params_file = _params_file(
        tmp_path, "policy_node:\n  ros__parameters:\n    device: cpu\n    output_mode: stream\n"
    )
    values = {"checkpoint": "/ckpt", "params_file": params_file, "use_sim_time": "",
              "autostart": "", "device": "", "output_mode": "''"}  # fmt: skip
    params, autostart = launch_util.robot_parameters(values)
    assert params == {"checkpoint": "/ckpt"}
    assert autostart is True
    values.update(device="cuda", output_mode="chunk", use_sim_time="True", autostart="FALSE")
    params, autostart = launch_util.robot_parameters(values)
    assert params == {"checkpoint": "/ckpt", "device": "cuda", "output_mode": "chunk",
                      "use_sim_time": True, "autostart": False}  # fmt: skip
    assert autostart is False


def test_sim_task_picks_its_own_files() -> None:
    """sim.launch.py task:=pick_place alone runs the pick-place checkpoint and sim parameters;
    a checkpoint or sim_params_file given on the command line wins."""
    files = launch_util.sim_task_files({"task": "pick_place", "checkpoint": ""}, "/share")
    assert files == {
        "checkpoint": "/share/models/ur5e_pick_place",
        "sim_params_file": "/share/config/robots/ur5e_gripper/sim_node.yaml",
    }
    assert launch_util.sim_task_files({}, "/s")["checkpoint"] == "/s/models/sim_arm_diffusion"
    given = {"task": "pick_place", "checkpoint": "/mine", "sim_params_file": ""}
    assert launch_util.sim_task_files(given, "/s")["checkpoint"] == "/mine"
    with pytest.raises(LaunchArgumentError, match="task:='fly'"):
        launch_util.sim_task_files({"task": "fly"}, "/s")


def test_record_without_rosbag2_uses_recorder_node() -> None:
    assert launch_util.rosbag2_available(lambda name: None) is False
    assert launch_util.rosbag2_available(lambda name: object()) is True
    values = {"output": "demos/episode_0000", "topics": "/a /b", "storage": "mcap",
              "use_sim_time": "true"}  # fmt: skip
    params, line = launch_util.recorder_fallback(values)
    assert params == {"topics": ["/a", "/b"], "output_dir": "demos",
                      "bag_prefix": "episode_0000", "storage": "mcap", "use_sim_time": True,
                      "start_on_launch": True}  # fmt: skip
    assert "\n" not in line and line.startswith("rosbag2 is not installed")
    assert "recorder_node" in line and "demos/episode_0000_0000" in line
    declared = module_param_keys("ros/recorder_node.py") | BUILTIN_PARAMETERS
    assert set(params) <= declared


def test_managed_bringup_follows_the_params_file(tmp_path: Path) -> None:
    wildcard = _params_file(tmp_path, "/**:\n  ros__parameters:\n    autostart: false\n")
    values = {"checkpoint": "/ckpt", "params_file": wildcard, "autostart": ""}
    assert launch_util.robot_parameters(values) == ({"checkpoint": "/ckpt"}, False)
    assert launch_util.robot_parameters({**values, "autostart": "true"})[1] is True
    assert launch_util.params_file_value(wildcard, "policy_node", "device") is None
    package_file = str(REPO / "config" / "policy_node.yaml")
    assert launch_util.robot_parameters({"checkpoint": "/c", "params_file": package_file}) == (
        {"checkpoint": "/c"}, True)  # fmt: skip


def test_optional_checks() -> None:
    checks = {"use_sim_time": launch_util.optional(launch_util.boolean)}
    assert launch_util.check_arguments({"use_sim_time": ""}, checks) == {"use_sim_time": ""}
    assert launch_util.check_arguments({"use_sim_time": "True"}, checks) == {
        "use_sim_time": "true"
    }
    with pytest.raises(LaunchArgumentError, match="use_sim_time:='maybe' is not a boolean"):
        launch_util.check_arguments({"use_sim_time": "maybe"}, checks)


# ----------------------------------------------------------------------------- description
def _xacro_root() -> ET.Element:
    return ET.parse(DESCRIPTION / "urdf" / "dp_arm.urdf.xacro").getroot()


def test_urdf_joints_match_the_sim() -> None:
    root = _xacro_root()
    assert root.tag == "robot"
    props = {
        p.get("name"): p.get("value") for p in root.iter("{http://www.ros.org/wiki/xacro}property")
    }
    movable = [j for j in root.findall("joint") if j.get("type") not in (None, "fixed")]
    assert [j.get("name") for j in movable] == list(JOINT_NAMES)
    for joint in movable:
        assert joint.get("type") == "revolute"
        assert joint.find("axis").get("xyz") == "0 0 1"
        limit = joint.find("limit")
        assert (limit.get("lower"), limit.get("upper")) == ("${-joint_limit}", "${joint_limit}")
    assert float(props["joint_limit"]) == JOINT_LIMIT
    assert [float(props[k]) for k in ("l1", "l2", "l3")] == [0.20, 0.17, 0.13]
    control = root.find("ros2_control")
    assert control.find("hardware/plugin").text == "gz_ros2_control/GazeboSimSystem"
    joints = control.findall("joint")
    assert [j.get("name") for j in joints] == list(JOINT_NAMES)
    for k, joint in enumerate(joints):
        assert [c.get("name") for c in joint.findall("command_interface")] == ["position"]
        states = [s.get("name") for s in joint.findall("state_interface")]
        assert states == ["position", "velocity"]
        initial = joint.find("state_interface/param").text.strip("${}")
        assert float(props[initial]) == pytest.approx(HOME_QPOS[k], abs=1e-12)
    sensor = root.find("gazebo/sensor")
    assert sensor.get("type") == "camera"
    assert sensor.find("topic").text == "/camera/image_raw"


def test_controllers_yaml_matches_the_sim() -> None:
    doc = yaml.safe_load((DESCRIPTION / "config" / "dp_arm_controllers.yaml").read_text())
    assert controller_types(doc) == {
        "arm_controller": "joint_trajectory_controller/JointTrajectoryController",
        "joint_state_broadcaster": "joint_state_broadcaster/JointStateBroadcaster",
    }
    arm = doc["arm_controller"]["ros__parameters"]
    assert arm["joints"] == list(JOINT_NAMES)
    assert arm["command_interfaces"] == ["position"]
    assert arm["interpolate_from_desired_state"] is True
    # gazebo.launch.py spawns exactly these controllers (after joint_state_broadcaster).
    assert {"joint_state_broadcaster", *gazebo_controllers("gazebo.launch.py")} == {
        "arm_controller",
        "joint_state_broadcaster",
    }


def test_bridge_and_world() -> None:
    entries = yaml.safe_load((DESCRIPTION / "config" / "gz_bridge.yaml").read_text())
    by_topic = {e["ros_topic_name"]: e for e in entries}
    assert by_topic["/clock"]["ros_type_name"] == "rosgraph_msgs/msg/Clock"
    assert by_topic["/clock"]["gz_type_name"] == "gz.msgs.Clock"
    camera = by_topic["/camera/image_raw"]
    assert (camera["ros_type_name"], camera["gz_type_name"]) == (
        "sensor_msgs/msg/Image",
        "gz.msgs.Image",
    )
    assert camera["gz_topic_name"] == _xacro_root().find("gazebo/sensor/topic").text
    assert all(e["direction"] == "GZ_TO_ROS" for e in entries)
    world = ET.parse(DESCRIPTION / "worlds" / "dp_reach.sdf").getroot()
    plugins = {p.get("name") for p in world.iter("plugin")}
    assert "gz::sim::systems::Sensors" in plugins  # cameras render only with it
    assert {m.get("name") for m in world.iter("model")} >= {"target", "obstacle"}


def test_robot_launch_drives_the_lifecycle_when_autostart_is_off() -> None:
    # Checked statically (launch_ros is not installed here): the node is managed; the launch
    # drives the bring-up only when robot_parameters says autostart is off.
    tree = _launch_tree("robot.launch.py")
    (node,) = [c for c in _calls(tree, "package_node") if _const(c.args[0]) == "policy_node"]
    assert _const(_kwarg(node, "lifecycle")) is True
    (bringup,) = _calls(tree, "lifecycle_bringup")
    (ifexp,) = [
        n for n in ast.walk(tree)
        if isinstance(n, ast.IfExp) and isinstance(n.test, ast.Name) and n.test.id == "autostart"
    ]  # fmt: skip
    assert bringup in list(ast.walk(ifexp.orelse))
    assert len(_calls(tree, "robot_parameters")) == 1
    declared = {_const(c.args[0]) for c in _calls(tree, "DeclareLaunchArgument")}
    assert {"autostart", "checkpoint", "params_file"} <= declared
    # the helper emits configure and, on configuring -> inactive, activate
    text = ast.unparse(_parse(REPO / PKG / "ros" / "launch_util.py"))
    assert "TRANSITION_CONFIGURE" in text and "TRANSITION_ACTIVATE" in text
    assert launch_util.BRINGUP_ACTIVATE == ("configuring", "inactive")
