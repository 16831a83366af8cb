"""ROS parameters declared from one table, for every node of the package.

A node lists its parameters as a tuple of `ParamSpec` (name, kind, default, description,
range) and calls `declare_parameters(node, specs)` once: every parameter is declared with its
description (and range), and the values come back as a plain dict that the node validates into
its own frozen settings. `parameters_help(specs)` formats the same table for `--help`.

Two rclpy pitfalls are handled here, once: an integer given for a floating-point parameter
(`-p rate:=30`, a YAML `30`, `[1, 2]` for a double array, and at run time
`ros2 param set /node rate 30`) is taken as that number instead of failing, and an array
parameter with an empty default is declared by type (rclpy would type an
empty list BYTE_ARRAY and then reject every override).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rclpy.node import Node

KINDS = ("bool", "int", "double", "string", "string_array", "double_array")


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. `kind` is one of `KINDS`; `range` (inclusive, int and double
    only) becomes the descriptor's integer/floating-point range, which rclpy enforces.
    Array defaults are stored as tuples; an empty one means "unset" (the node decides)."""

    name: str
    kind: str
    default: Any
    description: str
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        where = f"ParamSpec {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: kind {self.kind!r} is not one of {KINDS}")
        default = self.default
        if self.kind == "bool":
            ok = isinstance(default, bool)
        elif self.kind == "int":
            ok = isinstance(default, int) and not isinstance(default, bool)
        elif self.kind == "double":
            ok = isinstance(default, (int, float)) and not isinstance(default, bool)
            if ok:
                default = float(default)
        elif self.kind == "string":
            ok = isinstance(default, str)
        else:
            item = str if self.kind == "string_array" else (int, float)
            ok = isinstance(default, (list, tuple)) and all(
                isinstance(v, item) and not isinstance(v, bool) for v in default
            )
            if ok:
                default = tuple(float(v) if self.kind == "double_array" else v for v in default)
        if not ok:
            raise ValueError(f"{where}: default {self.default!r} is not a {self.kind}")
        object.__setattr__(self, "default", default)
        if self.range is not None:
            if self.kind not in ("int", "double"):
                raise ValueError(f"{where}: a range needs kind int or double, not {self.kind}")
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"{where}: bad range {self.range!r}")


def declare_scalar(node: Node, name: str, default: Any, descriptor: Any) -> Any:
    """`node.declare_parameter(name, default, descriptor)`, except that an integer override of
    a floating-point parameter (`-p rate:=30`, a YAML `30`) is taken as that number instead of
    failing with InvalidParameterTypeException. Returns the declared parameter."""
    from rclpy.parameter import Parameter

    if isinstance(default, float):
        # rclpy keeps the command-line/YAML overrides in Node._parameter_overrides (Humble to
        # Kilted); when that ever changes, the plain declaration below still works.
        overrides = getattr(node, "_parameter_overrides", None)
        given = overrides.get(name) if isinstance(overrides, dict) else None
        if given is not None and given.type_ == Parameter.Type.INTEGER:
            overrides[name] = Parameter(name, Parameter.Type.DOUBLE, float(given.value))
    return node.declare_parameter(name, default, descriptor)


def _descriptor(spec: ParamSpec) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    descriptor = ParameterDescriptor(description=spec.description)
    if spec.range is not None and spec.kind == "double":
        low, high = spec.range
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high))
        ]
    elif spec.range is not None and spec.kind == "int":
        low, high = spec.range
        descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


def _declare_array(node: Node, spec: ParamSpec, descriptor: Any) -> Any:
    """Declare an array parameter; returns its value (the spec default when unset)."""
    from rclpy.parameter import Parameter

    kind = (
        Parameter.Type.STRING_ARRAY if spec.kind == "string_array" else Parameter.Type.DOUBLE_ARRAY
    )
    overrides = getattr(node, "_parameter_overrides", None)  # see declare_scalar
    given = overrides.get(spec.name) if isinstance(overrides, dict) else None
    if (
        spec.kind == "double_array"
        and given is not None
        and given.type_ == Parameter.Type.INTEGER_ARRAY
    ):
        overrides[spec.name] = Parameter(spec.name, kind, [float(v) for v in given.value])
    if spec.default:
        # A non-empty default is passed as the value, so `ros2 param get` shows it.
        node.declare_parameter(spec.name, list(spec.default), descriptor)
    else:
        # Declared by type: an empty default list would be typed BYTE_ARRAY by rclpy and then
        # reject the override. Unset means the spec default (empty).
        node.declare_parameter(spec.name, kind, descriptor)
    value = node.get_parameter_or(spec.name, Parameter(spec.name, kind, [])).value
    item = str if spec.kind == "string_array" else float
    return [item(v) for v in (value or [])]


def declare_parameters(node: Node, specs: Iterable[ParamSpec]) -> dict[str, Any]:
    """Declare every spec on `node` (description, range) and return {name: value}, with the
    command-line/YAML overrides applied. Array values are lists (`str` or `float` items).
    A value of the wrong type or out of range raises ValueError, one line naming the
    parameter, the value given and what is allowed (`bad_value_message`)."""
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    values: dict[str, Any] = {}
    for spec in specs:
        descriptor = _descriptor(spec)
        try:
            if spec.kind.endswith("_array"):
                values[spec.name] = _declare_array(node, spec, descriptor)
            else:
                declare_scalar(node, spec.name, spec.default, descriptor)
                values[spec.name] = node.get_parameter(spec.name).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            overrides = getattr(node, "_parameter_overrides", None)  # see declare_scalar
            given = overrides.get(spec.name) if isinstance(overrides, dict) else None
            if given is None:
                raise ValueError(f"parameter {spec.name}: {exc}; {allowed(spec)}") from exc
            raise ValueError(bad_value_message(spec, given.value)) from exc
    doubles = {spec.name: spec.kind for spec in specs if spec.kind in ("double", "double_array")}
    if doubles and hasattr(node, "add_pre_set_parameters_callback"):  # rclpy >= Iron
        node.add_pre_set_parameters_callback(lambda params: integers_as_doubles(params, doubles))
    return values


def integers_as_doubles(params: list[Any], kinds: dict[str, str]) -> list[Any]:
    """`params` with an integer (array) given for a double (array) parameter in `kinds`
    ({name: "double" | "double_array"}) turned into that number, as `-p` overrides are:
    `ros2 param set /policy_node control_rate_hz 10` sends an INTEGER."""
    from rclpy.parameter import Parameter

    out = []
    for param in params:
        kind = kinds.get(param.name)
        if kind == "double" and param.type_ == Parameter.Type.INTEGER:
            param = Parameter(param.name, Parameter.Type.DOUBLE, float(param.value))
        elif kind == "double_array" and param.type_ == Parameter.Type.INTEGER_ARRAY:
            values = [float(v) for v in param.value]
            param = Parameter(param.name, Parameter.Type.DOUBLE_ARRAY, values)
        out.append(param)
    return out


_KIND_WORDS = {
    "bool": "a bool (true or false)",
    "int": "an integer",
    "double": "a number",
    "string": "a string",
    "string_array": "a list of strings",
    "double_array": "a list of numbers",
}
_GOT_WORDS = {**_KIND_WORDS, "bool": "a bool", "array": "a list"}
# rclpy's Parameter.Type names, as its exception messages spell them
_RCL_TYPES = {
    "BOOL": "bool",
    "INTEGER": "int",
    "DOUBLE": "double",
    "STRING": "string",
    "STRING_ARRAY": "string_array",
    "DOUBLE_ARRAY": "double_array",
    "INTEGER_ARRAY": "double_array",
    "BOOL_ARRAY": "array",
    "BYTE_ARRAY": "array",
}
_RCLPY_TYPE_ERROR = re.compile(
    r"Trying to set parameter '(?P<name>[^']*)' to '(?P<value>.*)' of type '(?P<got>\w+)',"
    r" expecting type '(?P<want>\w+)'"
)


def allowed(spec: ParamSpec) -> str:
    """'allowed: an integer in [0, 10] (<description>)' for a spec."""
    limits = ""
    if spec.range is not None:
        low, high = (int(v) for v in spec.range) if spec.kind == "int" else spec.range
        limits = f" in [{low}, {high}]"
    return f"allowed: {_KIND_WORDS[spec.kind]}{limits} ({spec.description})"


def value_kind(value: Any) -> str:
    """The kind of a parameter value as rclpy parsed it: a `KINDS` word, or 'array'."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    items = list(value) if isinstance(value, (list, tuple)) else None
    if items and all(isinstance(v, str) for v in items):
        return "string_array"
    if items and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        return "double_array"
    return "array" if items is not None else type(value).__name__


def bad_value_message(spec: ParamSpec, value: Any) -> str:
    """One line: the parameter, the value given, what is wrong with it, what is allowed."""
    if hasattr(value, "tolist"):  # rclpy gives number arrays as array.array
        value = value.tolist()
    got = value_kind(value)
    if got == spec.kind or (spec.kind == "double" and got == "int"):
        what = "is out of range"
    else:
        what = f"is {_GOT_WORDS.get(got, 'a ' + got)}, not {_KIND_WORDS[spec.kind]}"
    return f"parameter {spec.name}: {value!r} {what}; {allowed(spec)}"


def describe_parameter_exception(exc: Exception) -> str:
    """One line for an rclpy parameter exception raised outside `declare_parameters` (rclpy's
    own parameters, e.g. `use_sim_time:=maybe` while the Node is constructed)."""
    match = _RCLPY_TYPE_ERROR.search(str(exc))
    if match is None:
        return f"bad parameter: {exc}"
    got = _RCL_TYPES.get(match["got"], match["got"].lower())
    want = _RCL_TYPES.get(match["want"], match["want"].lower())
    return (
        f"parameter {match['name']}: {match['value']!r} is {_GOT_WORDS.get(got, 'a ' + got)}, "
        f"not {_KIND_WORDS.get(want, 'a ' + want)}"
    )


def parameters_markdown(node: str, specs: Sequence[ParamSpec], source: str) -> str:
    """The spec table as a Markdown page (docs/parameters.md): one row per parameter with type,
    default, range and description; `source` names the module the table lives in."""
    lines = [
        "# Parameters",
        "",
        f"Every parameter of `{node}`, generated from its parameter table (`{source}`) by",
        "`python scripts/make_parameters_doc.py`; do not edit by hand. `--help` prints the same.",
        'An empty list, `0` or `""` where the description says so means: take it from the',
        "checkpoint (after configure the parameter shows the value in use).",
        "",
        "| name | type | default | range | description |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        default = list(spec.default) if spec.kind.endswith("_array") else spec.default
        if spec.kind == "bool":
            shown = "true" if default else "false"
        elif spec.kind == "string":
            shown = f'"{default}"' if default == "" else default
        else:
            shown = "[]" if default == [] else str(default)
        limits = f"{spec.range[0]:g} … {spec.range[1]:g}" if spec.range is not None else ""
        text = spec.description.replace("|", "\\|")
        lines.append(f"| `{spec.name}` | {spec.kind} | `{shown}` | {limits} | {text} |")
    return "\n".join(lines) + "\n"


def parameters_help(specs: Sequence[ParamSpec]) -> str:
    """The spec table as text for `--help`: one entry per parameter with kind and default."""
    lines = ["parameters (--ros-args -p name:=value, or --params-file FILE):"]
    for spec in specs:
        default = list(spec.default) if spec.kind.endswith("_array") else spec.default
        shown = "unset" if default == [] else repr(default)
        if spec.kind == "bool":
            shown = "true" if default else "false"
        limits = f", range {list(spec.range)}" if spec.range is not None else ""
        lines.append(f"  {spec.name} ({spec.kind}, default {shown}{limits})")
        lines.append(f"      {spec.description}")
    return "\n".join(lines)
