"""Parameters of `policy_node`: declared in one place, read once into frozen dataclasses.

`PARAMETERS` lists every parameter with its default, description and range;
`declare_and_read(node)` declares them and returns `PolicyNodeParams` (raw values, validated);
`resolve_settings(params, config)` merges them with the checkpoint's config (defaults taken
from it, mismatches rejected) into `NodeSettings`, and `resolve_limits(params, action_min,
action_max, dim)` gives the safety limits. Both are ROS-free, so they are tested without a
node. Defaults are mirrored in `config/policy_node.yaml`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.runtime.action_schedule import MODES as BLEND_MODES
from diffusion_policy_node.runtime.inference_worker import DEVICES
from diffusion_policy_node.runtime.safety import SafetyLimits, limits_from_action_range

if TYPE_CHECKING:
    from rclpy.node import Node

OUTPUT_MODES = ("chunk", "stream")
ACCELERATIONS = ("jit", "cudagraph", "none")
DEFAULT_OUTPUT_TOPICS = {
    "chunk": "/arm_controller/joint_trajectory",
    "stream": "/forward_position_controller/commands",
}
# |1/control_rate_hz - dt| must be within this fraction of dt.
RATE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter. `kind` is bool|int|double|string|string_array|double_array;
    array parameters default to empty ("take it from the checkpoint")."""

    name: str
    kind: str
    default: Any
    description: str
    range: tuple[float, float] | None = None


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "checkpoint", "string", "", "Checkpoint folder (config.yaml + safetensors). Required."
    ),
    ParamSpec(
        "camera_topics",
        "string_array",
        [],
        "Camera topics in the checkpoint's camera order; empty: the checkpoint's. Topics ending "
        "in /compressed are sensor_msgs/CompressedImage, others sensor_msgs/Image.",
    ),
    ParamSpec("joint_state_topic", "string", "/joint_states", "sensor_msgs/JointState topic."),
    ParamSpec(
        "joint_names",
        "string_array",
        [],
        "Joints observed and commanded, in the checkpoint's order; empty: the checkpoint's.",
    ),
    ParamSpec(
        "control_rate_hz",
        "double",
        0.0,
        "Control rate; must equal 1/dt of the checkpoint (0: take it from the checkpoint).",
        (0.0, 1000.0),
    ),
    ParamSpec(
        "output_mode",
        "string",
        "chunk",
        "chunk: trajectory_msgs/JointTrajectory of the scheduled actions (joint_trajectory_"
        "controller); stream: one std_msgs/Float64MultiArray per tick (forward controller).",
    ),
    ParamSpec(
        "output_topic",
        "string",
        "",
        "Command topic; empty: /arm_controller/joint_trajectory (chunk) or "
        "/forward_position_controller/commands (stream).",
    ),
    ParamSpec(
        "num_inference_steps",
        "int",
        0,
        "Denoising steps per chunk (DDIM); 0: the checkpoint's.",
        (0, 1000),
    ),
    ParamSpec("device", "string", "auto", "auto | cuda | cuda:N | cpu."),
    ParamSpec(
        "acceleration",
        "string",
        "jit",
        "Inference speed-up keeping the math: jit (TorchScript-frozen encoder and U-Net, CPU or "
        "CUDA), cudagraph (CUDA, DDIM eta=0), none.",
    ),
    ParamSpec(
        "blend_mode",
        "string",
        "replace",
        "How overlapping chunks combine: replace (newest wins) or ensemble (weighted mean).",
    ),
    ParamSpec(
        "ensemble_m",
        "double",
        0.1,
        "Ensemble weight decay m in w_i = exp(-m*i), i = 0 the oldest prediction.",
        (0.0, 10.0),
    ),
    ParamSpec(
        "max_obs_age",
        "double",
        0.5,
        "Hold (publish nothing new) when any input is older than this many seconds.",
        (0.0, 3600.0),
    ),
    ParamSpec(
        "joint_lower_limits",
        "double_array",
        [],
        "Per-joint lower position limits; empty: action range of the checkpoint minus a margin.",
    ),
    ParamSpec(
        "joint_upper_limits",
        "double_array",
        [],
        "Per-joint upper position limits; empty: action range of the checkpoint plus a margin.",
    ),
    ParamSpec(
        "max_joint_velocity",
        "double_array",
        [],
        "Max joint speed (units/s), one value for all joints or one per joint; empty: the "
        "width of each joint's limit range per second.",
    ),
    ParamSpec(
        "limit_margin_frac",
        "double",
        0.1,
        "Margin added on both sides of the checkpoint's action range for default limits.",
        (0.0, 10.0),
    ),
    ParamSpec("start_active", "bool", True, "Start publishing at once (else wait for ~/start)."),
    ParamSpec(
        "inference_margin",
        "double",
        0.0,
        "Extra seconds of lead when deciding to start the next inference.",
        (0.0, 10.0),
    ),
    ParamSpec(
        "torch_threads",
        "int",
        0,
        "torch.set_num_threads for inference; 0: torch's default (leave a core for control on "
        "small CPUs).",
        (0, 256),
    ),
    ParamSpec(
        "warmup_runs",
        "int",
        2,
        "Inferences run at start-up before going active (latency estimate, CUDA init).",
        (0, 100),
    ),
    ParamSpec("seed", "int", -1, "Sampling seed (reset restarts the noise); -1: unseeded."),
    ParamSpec(
        "inference_process",
        "bool",
        True,
        "Run the policy in a child process (own GIL: the DDIM loop's Python cannot delay the "
        "control loop); false: a thread in the node process.",
    ),
    ParamSpec(
        "inference_nice",
        "int",
        0,
        "Nice value of the inference process (0..19): higher leaves more CPU to control.",
        (0, 19),
    ),
    ParamSpec(
        "control_priority",
        "int",
        0,
        "SCHED_FIFO priority of the control thread (1..99, needs rtprio permission, e.g. "
        "limits.conf); 0: normal scheduling.",
        (0, 99),
    ),
    ParamSpec(
        "spin_lead_ms",
        "double",
        1.0,
        "Wall-clock control loop: sleep until this long before each tick, then busy-wait, so "
        "the thread is already running at the tick (no wake-up latency); 0: sleep only.",
        (0.0, 10.0),
    ),
)


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"parameter {name}={value!r}: {why}")


@dataclass(frozen=True)
class PolicyNodeParams:
    """Raw parameter values (empty / 0 mean "from the checkpoint"), validated."""

    checkpoint: str = ""
    camera_topics: tuple[str, ...] = ()
    joint_state_topic: str = "/joint_states"
    joint_names: tuple[str, ...] = ()
    control_rate_hz: float = 0.0
    output_mode: str = "chunk"
    output_topic: str = ""
    num_inference_steps: int = 0
    device: str = "auto"
    acceleration: str = "jit"
    blend_mode: str = "replace"
    ensemble_m: float = 0.1
    max_obs_age: float = 0.5
    joint_lower_limits: tuple[float, ...] = ()
    joint_upper_limits: tuple[float, ...] = ()
    max_joint_velocity: tuple[float, ...] = ()
    limit_margin_frac: float = 0.1
    start_active: bool = True
    inference_margin: float = 0.0
    torch_threads: int = 0
    warmup_runs: int = 2
    seed: int = -1
    inference_process: bool = True
    inference_nice: int = 0
    control_priority: int = 0
    spin_lead_ms: float = 1.0

    def __post_init__(self) -> None:
        for name in ("camera_topics", "joint_names"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        for name in ("joint_lower_limits", "joint_upper_limits", "max_joint_velocity"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not self.checkpoint:
            raise _bad(
                "checkpoint",
                self.checkpoint,
                "required: pass the checkpoint folder, e.g. "
                "--ros-args -p checkpoint:=/path/to/checkpoint",
            )
        if len(set(self.camera_topics)) != len(self.camera_topics) or "" in self.camera_topics:
            raise _bad(
                "camera_topics", list(self.camera_topics), "topics must be non-empty and unique"
            )
        if len(set(self.joint_names)) != len(self.joint_names) or "" in self.joint_names:
            raise _bad("joint_names", list(self.joint_names), "names must be non-empty and unique")
        if not self.joint_state_topic:
            raise _bad("joint_state_topic", self.joint_state_topic, "must not be empty")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz >= 0):
            raise _bad("control_rate_hz", self.control_rate_hz, "must be >= 0 (0: checkpoint)")
        if self.output_mode not in OUTPUT_MODES:
            raise _bad("output_mode", self.output_mode, f"expected one of {OUTPUT_MODES}")
        if self.num_inference_steps < 0:
            raise _bad("num_inference_steps", self.num_inference_steps, "must be >= 0")
        if self.device not in DEVICES and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise _bad("device", self.device, f"expected one of {DEVICES} or cuda:N")
        if self.acceleration not in ACCELERATIONS:
            raise _bad("acceleration", self.acceleration, f"expected one of {ACCELERATIONS}")
        if self.blend_mode not in BLEND_MODES:
            raise _bad("blend_mode", self.blend_mode, f"expected one of {BLEND_MODES}")
        if not (math.isfinite(self.ensemble_m) and self.ensemble_m >= 0):
            raise _bad("ensemble_m", self.ensemble_m, "must be a finite number >= 0")
        if not (math.isfinite(self.max_obs_age) and self.max_obs_age > 0):
            raise _bad("max_obs_age", self.max_obs_age, "must be a finite number of seconds > 0")
        for name in ("joint_lower_limits", "joint_upper_limits", "max_joint_velocity"):
            if not all(math.isfinite(v) for v in getattr(self, name)):
                raise _bad(name, list(getattr(self, name)), "values must be finite")
        if any(v <= 0 for v in self.max_joint_velocity):
            raise _bad("max_joint_velocity", list(self.max_joint_velocity), "must be > 0")
        if not (math.isfinite(self.limit_margin_frac) and self.limit_margin_frac >= 0):
            raise _bad("limit_margin_frac", self.limit_margin_frac, "must be >= 0")
        if not (math.isfinite(self.inference_margin) and self.inference_margin >= 0):
            raise _bad("inference_margin", self.inference_margin, "must be >= 0 s")
        if self.torch_threads < 0:
            raise _bad("torch_threads", self.torch_threads, "must be >= 0 (0: torch default)")
        if self.warmup_runs < 0:
            raise _bad("warmup_runs", self.warmup_runs, "must be >= 0")
        if not 0 <= self.inference_nice <= 19:
            raise _bad("inference_nice", self.inference_nice, "must be in [0, 19]")
        if not 0 <= self.control_priority <= 99:
            raise _bad("control_priority", self.control_priority, "must be in [0, 99]")
        if not (math.isfinite(self.spin_lead_ms) and 0 <= self.spin_lead_ms <= 10):
            raise _bad("spin_lead_ms", self.spin_lead_ms, "must be in [0, 10] ms")


@dataclass(frozen=True, eq=False)
class NodeSettings:
    """Everything the node runs on: parameters merged with the checkpoint's config."""

    params: PolicyNodeParams
    camera_topics: tuple[str, ...]
    joint_names: tuple[str, ...]
    dt: float
    image_size: tuple[int, int]
    n_obs_steps: int
    n_action_steps: int
    output_topic: str

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self.dt


def resolve_settings(params: PolicyNodeParams, config: PolicyConfig) -> NodeSettings:
    """Merge `params` with the checkpoint's `config`; ValueError naming the parameter when they
    disagree (camera count, joint count, control rate). Limits: `resolve_limits`."""
    cams = params.camera_topics or tuple(config.camera_topics)
    if len(cams) != config.n_cameras:
        raise _bad(
            "camera_topics",
            list(cams),
            f"the checkpoint expects {config.n_cameras} camera(s) {config.camera_topics}; give "
            "one topic per checkpoint camera, in the same order",
        )
    joints = params.joint_names or tuple(config.joint_names)
    if not joints:
        raise _bad("joint_names", [], "the checkpoint names no joints: set joint_names explicitly")
    if len(joints) != config.state_dim:
        raise _bad(
            "joint_names",
            list(joints),
            f"{len(joints)} joints but the checkpoint's state_dim is {config.state_dim}",
        )
    if config.action_dim != len(joints):
        raise ValueError(
            f"checkpoint action_dim {config.action_dim} differs from the {len(joints)} observed "
            "joints; policy_node commands the observed joints (position control), so a "
            "checkpoint with action_dim == state_dim is needed"
        )
    dt = float(config.dt)
    rate = params.control_rate_hz
    if rate > 0 and abs(1.0 / rate - dt) > RATE_TOLERANCE * dt:
        raise _bad(
            "control_rate_hz",
            rate,
            f"the checkpoint was trained at dt={dt:g} s ({1.0 / dt:g} Hz); the control "
            "rate must match the training data's step (set it to that value or 0)",
        )
    output_topic = params.output_topic or DEFAULT_OUTPUT_TOPICS[params.output_mode]
    for name in ("joint_lower_limits", "joint_upper_limits"):
        value = getattr(params, name)
        if value and len(value) != len(joints):
            raise _bad(name, list(value), f"needs {len(joints)} values (one per joint) or none")
    vel = params.max_joint_velocity
    if vel and len(vel) not in (1, len(joints)):
        raise _bad("max_joint_velocity", list(vel), f"needs 1 or {len(joints)} values, or none")
    return NodeSettings(
        params=params,
        camera_topics=tuple(cams),
        joint_names=tuple(joints),
        dt=dt,
        image_size=(int(config.image_size[0]), int(config.image_size[1])),
        n_obs_steps=int(config.n_obs_steps),
        n_action_steps=int(config.n_action_steps),
        output_topic=output_topic,
    )


def resolve_limits(
    params: PolicyNodeParams,
    action_min: Sequence[float] | np.ndarray,
    action_max: Sequence[float] | np.ndarray,
    dim: int,
) -> SafetyLimits:
    """Limits from the checkpoint's action range (`limits_from_action_range`), each part
    overridable by its parameter."""
    for name in ("joint_lower_limits", "joint_upper_limits"):
        value = getattr(params, name)
        if value and len(value) != dim:
            raise _bad(name, list(value), f"needs {dim} values (one per joint) or none")
    vel = params.max_joint_velocity
    if vel and len(vel) not in (1, dim):
        raise _bad("max_joint_velocity", list(vel), f"needs 1 or {dim} values, or none")
    derived = limits_from_action_range(
        action_min, action_max, margin_frac=params.limit_margin_frac
    )
    if derived.dim != dim:
        raise ValueError(
            f"checkpoint action range has {derived.dim} dims but {dim} joints are commanded"
        )
    lower = np.array(params.joint_lower_limits or derived.lower, dtype=np.float64)
    upper = np.array(params.joint_upper_limits or derived.upper, dtype=np.float64)
    if vel:
        velocity = np.broadcast_to(np.array(vel, dtype=np.float64), (dim,)).copy()
    elif params.joint_lower_limits or params.joint_upper_limits:
        velocity = upper - lower
    else:
        velocity = derived.max_velocity
    try:
        return SafetyLimits(lower, upper, velocity)
    except ValueError as exc:
        raise ValueError(
            f"joint limits (joint_lower_limits/joint_upper_limits/max_joint_velocity): {exc}"
        ) from exc


# ---------------------------------------------------------------------------------- rclpy
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


def declare_and_read(node: Node) -> PolicyNodeParams:
    """Declare every parameter of `PARAMETERS` on `node` and read them once."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.parameter import Parameter

    array_types = {
        "string_array": Parameter.Type.STRING_ARRAY,
        "double_array": Parameter.Type.DOUBLE_ARRAY,
    }
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        descriptor = ParameterDescriptor(description=spec.description)
        if spec.range is not None and spec.kind == "double":
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]))
            ]
        elif spec.range is not None and spec.kind == "int":
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)
            ]
        if spec.kind in array_types:
            # Declared by type: an empty default list would be typed BYTE_ARRAY by rclpy and
            # then reject the override. Unset means "from the checkpoint".
            kind = array_types[spec.kind]
            node.declare_parameter(spec.name, kind, descriptor)
            values[spec.name] = node.get_parameter_or(
                spec.name, Parameter(spec.name, kind, [])
            ).value
        else:
            declare_scalar(node, spec.name, spec.default, descriptor)
            values[spec.name] = node.get_parameter(spec.name).value
    return PolicyNodeParams(**values)
