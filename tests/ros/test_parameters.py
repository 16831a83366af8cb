"""`ros.parameters`: one ParamSpec table declared on a real rclpy node (types, defaults,
descriptions, ranges, overrides), and every node executable's `--help` (exits without a node)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter

from diffusion_policy_node.ros.parameters import (
    ParamSpec,
    declare_parameters,
    parameters_help,
)

pytestmark = pytest.mark.ros

SPECS = (
    ParamSpec("flag", "bool", True, "A switch."),
    ParamSpec("count", "int", 3, "How many.", (0, 10)),
    ParamSpec("rate", "double", 30, "Hz.", (0.0, 100.0)),  # an int default is a double
    ParamSpec("name", "string", "abc", "A name."),
    ParamSpec("topics", "string_array", ["/a", "/b"], "Topics."),
    ParamSpec("joints", "string_array", [], "Joints; unset: from elsewhere."),
    ParamSpec("gains", "double_array", [1, 2.5], "Gains."),
    ParamSpec("limits", "double_array", [], "Limits; unset: none."),
)


@pytest.fixture
def make_node() -> Iterator:
    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    nodes = []

    def make(*overrides: Parameter):
        node = rclpy.create_node(
            f"parameters_test_{len(nodes)}", context=context, parameter_overrides=list(overrides)
        )
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_defaults_types_descriptions_and_ranges(make_node) -> None:
    node = make_node()
    values = declare_parameters(node, SPECS)
    assert values == {
        "flag": True,
        "count": 3,
        "rate": 30.0,
        "name": "abc",
        "topics": ["/a", "/b"],
        "joints": [],
        "gains": [1.0, 2.5],
        "limits": [],
    }
    assert isinstance(values["rate"], float)
    T = Parameter.Type
    # Non-empty array defaults are real values (`ros2 param get` shows them); empty ones are
    # declared by type, so they stay unset instead of becoming a BYTE_ARRAY.
    types = {name: node.get_parameter_or(name).type_ for name in values}
    assert types == {
        "flag": T.BOOL,
        "count": T.INTEGER,
        "rate": T.DOUBLE,
        "name": T.STRING,
        "topics": T.STRING_ARRAY,
        "joints": T.NOT_SET,
        "gains": T.DOUBLE_ARRAY,
        "limits": T.NOT_SET,
    }
    descriptors = node.describe_parameters(list(values))
    assert [d.description for d in descriptors] == [s.description for s in SPECS]
    count, rate = descriptors[1], descriptors[2]
    assert (count.integer_range[0].from_value, count.integer_range[0].to_value) == (0, 10)
    assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (
        0.0,
        100.0,
    )
    # The ranges hold at run time too (rclpy enforces them on set).
    assert not node.set_parameters([Parameter("count", value=11)])[0].successful
    assert node.set_parameters([Parameter("count", value=10)])[0].successful


def test_overrides_with_integers_for_doubles_and_arrays_by_type(make_node) -> None:
    T = Parameter.Type
    node = make_node(
        Parameter("rate", T.INTEGER, 50),  # -p rate:=50
        Parameter("gains", T.INTEGER_ARRAY, [3, 4]),  # -p gains:=[3, 4]
        Parameter("limits", T.DOUBLE_ARRAY, [0.5]),
        Parameter("joints", T.STRING_ARRAY, ["j1", "j2"]),
        Parameter("topics", T.STRING_ARRAY, ["/c"]),
    )
    values = declare_parameters(node, SPECS)
    assert values["rate"] == 50.0 and isinstance(values["rate"], float)
    assert values["gains"] == [3.0, 4.0] and all(isinstance(v, float) for v in values["gains"])
    assert values["limits"] == [0.5]
    assert values["joints"] == ["j1", "j2"]
    assert values["topics"] == ["/c"]
    assert node.get_parameter("gains").type_ == T.DOUBLE_ARRAY


def test_set_parameters_takes_integers_for_doubles(make_node) -> None:
    """What `ros2 param set /node rate 30` sends (an INTEGER) is taken as -p takes it; a value
    of another type is still refused."""
    T = Parameter.Type
    node = make_node()
    declare_parameters(node, SPECS)
    (result,) = node.set_parameters([Parameter("rate", T.INTEGER, 30)])
    assert result.successful, result.reason
    assert node.get_parameter("rate").value == 30.0
    assert node.get_parameter("rate").type_ == T.DOUBLE
    assert node.set_parameters_atomically([Parameter("gains", T.INTEGER_ARRAY, [1, 2])]).successful
    assert list(node.get_parameter("gains").value) == [1.0, 2.0]
    (refused,) = node.set_parameters([Parameter("rate", T.STRING, "fast")])
    assert not refused.successful
    (refused,) = node.set_parameters([Parameter("count", T.DOUBLE, 3.0)])  # int stays int
    assert not refused.successful


@pytest.mark.parametrize(
    "override, message",
    [
        (Parameter("count", Parameter.Type.INTEGER, 11), "count"),  # out of range
        (Parameter("rate", Parameter.Type.STRING, "fast"), "rate"),  # wrong type
        (Parameter("joints", Parameter.Type.DOUBLE_ARRAY, [1.0]), "joints"),
    ],
)
def test_bad_override_is_a_value_error_naming_the_parameter(
    make_node, override: Parameter, message: str
) -> None:
    node = make_node(override)
    with pytest.raises(ValueError, match=f"parameter {message}"):
        declare_parameters(node, SPECS)


@pytest.mark.parametrize(
    "kind, default, rng",
    [
        ("float", 1.0, None),  # unknown kind
        ("int", 1.5, None),
        ("int", True, None),  # a bool is not an int
        ("bool", 1, None),
        ("string_array", ["a", 1], None),
        ("double_array", "1.0", None),
        ("string", "x", (0, 1)),  # ranges only for numbers
        ("double", 1.0, (2.0, 1.0)),
    ],
)
def test_bad_spec_is_rejected(kind: str, default: object, rng) -> None:
    with pytest.raises(ValueError, match="ParamSpec 'p'"):
        ParamSpec("p", kind, default, "text", rng)


def test_help_lists_every_parameter() -> None:
    text = parameters_help(SPECS)
    for spec in SPECS:
        assert f"  {spec.name} ({spec.kind}, default " in text
        assert spec.description in text
    assert "count (int, default 3, range [0, 10])" in text
    assert "joints (string_array, default unset)" in text
    assert "flag (bool, default true)" in text


@pytest.mark.parametrize(
    "module, expected",
    [
        ("diffusion_policy_node.ros.policy_node", "checkpoint (string, default"),
        ("diffusion_policy_node.ros.sim_node", "real_time_factor"),
        ("diffusion_policy_node.ros.recorder_node", "bag_prefix"),
        ("diffusion_policy_node.ros.testing.fake_sensors", "test tool"),
        ("diffusion_policy_node.ros.testing.jtc_consumer", "test tool"),
    ],
)
def test_help_exits_without_starting_a_node(module: str, expected: str) -> None:
    name = module.rsplit(".", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name}")
    assert expected in proc.stdout
    assert "parameters (--ros-args" in proc.stdout
    # A mistyped option is a usage error, not a node started with it ignored.
    proc = subprocess.run(
        [sys.executable, "-m", module, "--ros-args-typo"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unrecognized arguments: --ros-args-typo" in proc.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        (Parameter("count", Parameter.Type.INTEGER, 11), "count: 11 is out of range; allowed: an "
         "integer in [0, 10] (How many.)"),
        (Parameter("count", Parameter.Type.DOUBLE, 2.5), "count: 2.5 is a number, not an integer"),
        (Parameter("rate", Parameter.Type.STRING, "fast"), "rate: 'fast' is a string, not a "
         "number; allowed: a number in [0.0, 100.0] (Hz.)"),
        (Parameter("flag", Parameter.Type.STRING, "maybe"), "flag: 'maybe' is a string, not a "
         "bool (true or false)"),
        (Parameter("joints", Parameter.Type.DOUBLE_ARRAY, [1.0]), "joints: [1.0] is a list of "
         "numbers, not a list of strings"),
    ],
)  # fmt: skip
def test_bad_override_message_names_value_and_what_is_allowed(
    make_node, override: Parameter, message: str
) -> None:
    node = make_node(override)
    with pytest.raises(ValueError) as info:
        declare_parameters(node, SPECS)
    text = str(info.value)
    assert text.startswith(f"parameter {message}"), text
    assert "\n" not in text


SIM_PARAMS_BAD_SEED = "sim_node:\n  ros__parameters:\n    seed: 2.5\n"
POLICY_PARAMS_BAD_STEPS = "policy_node:\n  ros__parameters:\n    num_inference_steps: 2.5\n"


@pytest.mark.parametrize(
    "executable, ros_args, expected",
    [
        ("sim_node", ["-p", "seed:=abc"], "parameter seed: 'abc' is a string, not an integer"),
        ("sim_node", ["-p", "real_time_factor:=fast"],
         "parameter real_time_factor: 'fast' is a string, not a number"),
        ("sim_node", ["-p", "use_sim_time:=maybe"],
         "parameter use_sim_time: 'maybe' is a string, not a bool (true or false)"),
        ("sim_node", ["--params-file", SIM_PARAMS_BAD_SEED],
         "parameter seed: 2.5 is a number, not an integer"),
        ("sim_node", ["--params-file", "/nonexistent.yaml"],
         "Couldn't parse params file: '--params-file /nonexistent.yaml'"),
        ("policy_node", ["-p", "use_sim_time:=maybe"],
         "parameter use_sim_time: 'maybe' is a string, not a bool (true or false)"),
        ("policy_node", ["-p", "device:=0"], "parameter device: 0 is an integer, not a string"),
        ("policy_node", ["--params-file", POLICY_PARAMS_BAD_STEPS],
         "parameter num_inference_steps: 2.5 is a number, not an integer"),
        # right type, value refused by the node's own settings
        ("sim_node", ["-p", "real_time_factor:=-2.0"], "real_time_factor=-2.0"),
        ("recorder_node", ["-p", "storage:=rosbag1"], "storage='rosbag1'"),
    ],
)  # fmt: skip
def test_node_executables_refuse_bad_parameters_in_one_line(
    tmp_path, executable: str, ros_args: list[str], expected: str
) -> None:
    """What `ros2 launch` passes on (`-p` values, a params file): one FATAL line, exit 1."""
    if ros_args[0] == "--params-file" and ros_args[1].endswith("\n"):
        params = tmp_path / "params.yaml"
        params.write_text(ros_args[1])
        ros_args = ["--params-file", str(params)]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / executable), "--ros-args", *ros_args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    fatal = [line for line in output.splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1, output
    assert f"[{executable}]" in fatal[0] and expected in fatal[0], output
