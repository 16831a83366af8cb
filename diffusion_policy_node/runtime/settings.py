"""The node's settings, ROS-free: raw parameter values, validated, merged once with the
checkpoint into one frozen `NodeSettings` that the controller, the inference worker and the
diagnostics all read (docs/design.md#timing-model).

    PolicyNodeParams   raw values of the declared parameters (ros/policy_node_params.py)
    resolve_settings   params + checkpoint PolicyConfig -> NodeSettings (mismatches rejected)
    InferenceSettings  what the inference worker needs to load and run the policy
    PolicyInfo         what the loaded policy tells the node (device, action range, steps)

Limits (parameters, URDF, demonstrations): runtime/limits.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffusion_policy_node.action_groups import (
    ActionGroup,
    action_joints,
    check_groups,
    single_group,
)
from diffusion_policy_node.config_util import check_choices
from diffusion_policy_node.policy.config import (
    DEFAULT_COMMAND_TOPIC,
    PolicyConfig,
    camera_types_of,
)

from .action_schedule import MODES as SCHEDULE_MODES
from .inference_worker import DEVICES
from .trajectory_shape import DERIVATIVES

# "" (default): each action group as recorded (JointTrajectory -> chunk, Float64MultiArray ->
# stream); chunk/stream: every group as that message type.
OUTPUT_MODES = ("", "chunk", "stream")
GROUP_TYPE_OF_MODE = {"chunk": "JointTrajectory", "stream": "Float64MultiArray"}
ACCELERATIONS = ("jit", "cudagraph", "none")
# Numeric precision of inference: auto picks bf16 per part where the hardware runs it fast (CUDA;
# on a CPU with AVX-512-BF16/AMX the camera encoders, and a large ε-network), fp32 elsewhere;
# bf16-encoder: encoders bf16, ε-network fp32 (policy/accel/precision.py decides, same names).
PRECISIONS = ("auto", "fp32", "bf16", "bf16-encoder")
DEFAULT_OUTPUT_TOPICS = {
    "chunk": "/arm_controller/joint_trajectory",
    "stream": "/forward_position_controller/commands",
}
# How chunks combine: the schedule's modes, plus inpainting (real-time chunking: the new chunk is
# sampled to continue the previous one; it then replaces it).
BLEND_MODES = (*SCHEDULE_MODES, "inpaint")
# |1/control_rate_hz - dt| must be within this fraction of dt.
RATE_TOLERANCE = 1e-3


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
    output_mode: str = ""
    output_topic: str = ""
    output_topics: tuple[str, ...] = ()
    num_inference_steps: int = 0
    device: str = "auto"
    acceleration: str = "jit"
    precision: str = "auto"
    blend_mode: str = "inpaint"
    trajectory_derivatives: str = "accelerations"
    inpaint_overlap: int = 4
    inpaint_decay: float = 0.5
    inpaint_guidance: float = 1.0
    ensemble_m: float = 0.1
    max_obs_age: float = 0.5
    joint_lower_limits: tuple[float, ...] = ()
    joint_upper_limits: tuple[float, ...] = ()
    max_joint_velocity: tuple[float, ...] = ()
    limit_margin_frac: float = 0.1
    min_limit_span: float = 0.2
    robot_description_file: str = ""
    robot_description_topic: str = "/robot_description"
    robot_description_timeout: float = 10.0
    autostart: bool = True
    start_active: bool = True
    action_lead: float = -1.0
    inference_margin: float = 0.0
    start_idle_chunks_late: bool = True
    inference_timeout: float = 10.0
    inference_delay_ms: float = 0.0
    torch_threads: int = 0
    warmup_runs: int = 2
    seed: int = -1
    inference_process: bool = True
    inference_nice: int = 0
    stream_encoder: bool = False
    control_priority: int = 0
    spin_lead_ms: float = 1.0

    def __post_init__(self) -> None:
        for name in ("camera_topics", "joint_names", "output_topics"):
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
        if len(set(self.output_topics)) != len(self.output_topics) or "" in self.output_topics:
            raise _bad(
                "output_topics", list(self.output_topics), "topics must be non-empty and unique"
            )
        if self.output_topic and self.output_topics:
            raise _bad(
                "output_topic",
                self.output_topic,
                "set output_topic (one action group) or output_topics (one per group), not both",
            )
        if not self.joint_state_topic:
            raise _bad("joint_state_topic", self.joint_state_topic, "must not be empty")
        if not (math.isfinite(self.control_rate_hz) and self.control_rate_hz >= 0):
            raise _bad("control_rate_hz", self.control_rate_hz, "must be >= 0 (0: checkpoint)")
        if self.num_inference_steps < 0:
            raise _bad("num_inference_steps", self.num_inference_steps, "must be >= 0")
        if self.device not in DEVICES and not (
            self.device.startswith("cuda:") and self.device[5:].isdigit()
        ):
            raise _bad("device", self.device, f"expected one of {DEVICES} or cuda:N")
        check_choices(
            self,
            {
                "output_mode": OUTPUT_MODES,
                "acceleration": ACCELERATIONS,
                "precision": PRECISIONS,
                "blend_mode": BLEND_MODES,
                "trajectory_derivatives": DERIVATIVES,
            },
            _bad,
        )
        if self.inpaint_overlap < 0:
            raise _bad("inpaint_overlap", self.inpaint_overlap, "must be >= 0 steps")
        if not (math.isfinite(self.inpaint_decay) and self.inpaint_decay >= 0):
            raise _bad("inpaint_decay", self.inpaint_decay, "must be a finite number >= 0")
        if not (math.isfinite(self.inpaint_guidance) and 0 <= self.inpaint_guidance <= 1):
            raise _bad("inpaint_guidance", self.inpaint_guidance, "must be in [0, 1]")
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
        if not (math.isfinite(self.min_limit_span) and self.min_limit_span > 0):
            raise _bad("min_limit_span", self.min_limit_span, "must be > 0 (rad or m)")
        if not (
            math.isfinite(self.robot_description_timeout) and self.robot_description_timeout >= 0
        ):
            raise _bad(
                "robot_description_timeout", self.robot_description_timeout, "must be >= 0 s"
            )
        if not (math.isfinite(self.inference_margin) and self.inference_margin >= 0):
            raise _bad("inference_margin", self.inference_margin, "must be >= 0 s")
        if not (math.isfinite(self.action_lead) and self.action_lead >= -1):
            raise _bad("action_lead", self.action_lead, "must be >= 0 s, or -1 (checkpoint's)")
        if not (math.isfinite(self.inference_timeout) and self.inference_timeout >= 0):
            raise _bad("inference_timeout", self.inference_timeout, "must be >= 0 s (0: never)")
        if not (math.isfinite(self.inference_delay_ms) and self.inference_delay_ms >= 0):
            raise _bad("inference_delay_ms", self.inference_delay_ms, "must be >= 0 ms")
        if self.torch_threads < 0:
            raise _bad("torch_threads", self.torch_threads, "must be >= 0 (0: one per core)")
        if self.warmup_runs < 0:
            raise _bad("warmup_runs", self.warmup_runs, "must be >= 0")
        if not 0 <= self.inference_nice <= 19:
            raise _bad("inference_nice", self.inference_nice, "must be in [0, 19]")
        if not 0 <= self.control_priority <= 99:
            raise _bad("control_priority", self.control_priority, "must be in [0, 99]")
        if not (math.isfinite(self.spin_lead_ms) and 0 <= self.spin_lead_ms <= 10):
            raise _bad("spin_lead_ms", self.spin_lead_ms, "must be in [0, 10] ms")


@dataclass(frozen=True)
class InferenceSettings:
    """How the inference worker loads and runs the policy (sent whole to the child process).
    `None` means the checkpoint's value (steps), one thread per available core (threads) or
    unseeded."""

    checkpoint: str
    device: str = "auto"
    num_inference_steps: int | None = None
    seed: int | None = None
    torch_threads: int | None = None
    nice: int = 0
    acceleration: str = "none"
    precision: str = "auto"
    in_process: bool = True
    warmup_runs: int = 2
    delay_s: float = 0.0
    stream_encoder: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoint", str(self.checkpoint))
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise _bad("inference_delay_ms", self.delay_s * 1e3, "must be >= 0 ms")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise _bad("num_inference_steps", self.num_inference_steps, "must be >= 1 or None")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise _bad("torch_threads", self.torch_threads, "must be >= 1 or None")
        if not isinstance(self.nice, int) or not 0 <= self.nice <= 19:
            raise _bad("inference_nice", self.nice, "must be an int in [0, 19]")
        if self.acceleration not in ACCELERATIONS:
            raise _bad("acceleration", self.acceleration, f"expected one of {ACCELERATIONS}")
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, f"expected one of {PRECISIONS}")
        if self.warmup_runs < 0:
            raise _bad("warmup_runs", self.warmup_runs, "must be >= 0")


@dataclass(frozen=True, eq=False)
class PolicyInfo:
    """What the loaded policy tells the node: the device it runs on, its action range (the
    normalizer's min/max, for default limits), the denoising steps and the numeric precision
    of the encoders and ε-network ("fp32" | "bf16" | "bf16-encoder": what `precision: auto`
    resolved to) in effect; `matmul_kernels`: how many of the traced trunk's matrix products
    run on oneDNN (policy/accel/kernels.py), e.g. "onednn 9/34", "" when nothing is packed."""

    device: str
    action_min: np.ndarray
    action_max: np.ndarray
    num_inference_steps: int
    precision: str = "fp32"
    matmul_kernels: str = ""

    @classmethod
    def of(cls, policy: Any, device: str) -> PolicyInfo:
        """The info of a loaded `DiffusionPolicy`/`RegressionPolicy` on `device`."""
        return cls(
            device=str(device),
            action_min=policy.action_normalizer.min.detach().cpu().numpy(),
            action_max=policy.action_normalizer.max.detach().cpu().numpy(),
            num_inference_steps=int(policy.config.num_inference_steps),
            precision=_precision_of(policy),
            matmul_kernels=_matmul_kernels_of(policy),
        )


def _precision_of(policy: Any) -> str:
    """The dtypes of the camera encoders' and the ε-network's weights as a precision name
    ("fp32", "bf16", "bf16-encoder"). Imported here: this module stays importable without torch."""
    from diffusion_policy_node.policy.accel.precision import precision_of

    return precision_of(policy).name


def _matmul_kernels_of(policy: Any) -> str:
    """ "onednn N/M": N of the ε-network's M packed matrix products on oneDNN; "" when the
    network has none packed (acceleration none, or a network without them). Imported here:
    this module stays importable without torch."""
    from diffusion_policy_node.policy.accel.packing import packed_kernels

    kernels = packed_kernels(policy.network)
    if not kernels:
        return ""
    return f"onednn {sum(k.kernel == 'onednn' for k in kernels)}/{len(kernels)}"


@dataclass(frozen=True, eq=False)
class NodeSettings:
    """Everything the node runs on: parameters merged with the checkpoint's config. Built once
    (`resolve_settings`) and passed whole to the controller, the worker and diagnostics.

    `joint_names` are the observed joints (the state, read by name from /joint_states);
    `groups` the action groups with their effective topics and message types: the action
    vector is `action_joints`, every one of them observed."""

    params: PolicyNodeParams
    camera_topics: tuple[str, ...]
    # per camera: sensor_msgs/msg/Image or CompressedImage, as recorded in the checkpoint
    # (older checkpoints: by the topic name); `camera_types_recorded` says which
    camera_types: tuple[str, ...]
    camera_types_recorded: bool
    joint_names: tuple[str, ...]
    groups: tuple[ActionGroup, ...]
    dt: float
    image_size: tuple[int, int]
    n_obs_steps: int
    n_action_steps: int
    horizon: int
    action_lead: float

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self.dt

    @property
    def action_joints(self) -> tuple[str, ...]:
        return action_joints(self.groups)

    @property
    def schedule_mode(self) -> str:
        """The ActionSchedule merge mode: inpainted chunks replace the previous one."""
        return "replace" if self.params.blend_mode == "inpaint" else self.params.blend_mode

    @property
    def has_trajectory(self) -> bool:
        """Some group gets JointTrajectory chunks (a joint_trajectory_controller)."""
        return any(g.is_trajectory for g in self.groups)

    @property
    def has_stream(self) -> bool:
        """Some group gets one Float64MultiArray per tick (a forward position controller)."""
        return any(not g.is_trajectory for g in self.groups)

    @property
    def output_mode(self) -> str:
        """chunk, stream, or mixed (some groups each)."""
        if self.has_trajectory and self.has_stream:
            return "mixed"
        return "chunk" if self.has_trajectory else "stream"

    @property
    def output_topics(self) -> tuple[str, ...]:
        return tuple(g.topic for g in self.groups)

    @property
    def inference(self) -> InferenceSettings:
        p = self.params
        return InferenceSettings(
            checkpoint=p.checkpoint,
            device=p.device,
            num_inference_steps=p.num_inference_steps or None,
            seed=p.seed if p.seed >= 0 else None,
            torch_threads=p.torch_threads or None,
            nice=p.inference_nice,
            acceleration=p.acceleration,
            precision=p.precision,
            in_process=p.inference_process,
            warmup_runs=p.warmup_runs,
            delay_s=p.inference_delay_ms * 1e-3,
            stream_encoder=p.stream_encoder,
        )


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
    joints, groups = _observed_and_commanded(params, config)
    dt = float(config.dt)
    rate = params.control_rate_hz
    if rate > 0 and abs(1.0 / rate - dt) > RATE_TOLERANCE * dt:
        raise _bad(
            "control_rate_hz",
            rate,
            f"the checkpoint was trained at dt={dt:g} s ({1.0 / dt:g} Hz); the control "
            "rate must match the training data's step (set it to that value or 0)",
        )
    groups = _output_groups(params, groups)
    n_act = len(action_joints(groups))
    for name in ("joint_lower_limits", "joint_upper_limits"):
        value = getattr(params, name)
        if value and len(value) != n_act:
            raise _bad(
                name, list(value), f"needs {n_act} values (one per commanded joint) or none"
            )
    vel = params.max_joint_velocity
    if vel and len(vel) not in (1, n_act):
        raise _bad("max_joint_velocity", list(vel), f"needs 1 or {n_act} values, or none")
    return NodeSettings(
        params=params,
        camera_topics=tuple(cams),
        camera_types=tuple(camera_types_of(config, cams)),
        camera_types_recorded=bool(config.camera_types),
        joint_names=tuple(joints),
        groups=groups,
        dt=dt,
        image_size=(int(config.image_size[0]), int(config.image_size[1])),
        n_obs_steps=int(config.n_obs_steps),
        n_action_steps=int(config.n_action_steps),
        horizon=int(config.horizon),
        action_lead=_action_lead(params, config),
    )


def _observed_and_commanded(
    params: PolicyNodeParams, config: PolicyConfig
) -> tuple[tuple[str, ...], tuple[ActionGroup, ...]]:
    """(observed joints, action groups) of the checkpoint; `joint_names` renames the
    observed joints position by position (a robot whose joints are named differently), and
    the groups' joints with them."""
    trained = tuple(config.joint_names)
    joints = params.joint_names or trained
    if not joints:
        raise _bad("joint_names", [], "the checkpoint names no joints: set joint_names explicitly")
    if len(joints) != config.state_dim:
        raise _bad(
            "joint_names",
            list(joints),
            f"{len(joints)} joints but the checkpoint's state_dim is {config.state_dim}",
        )
    if config.action_groups is not None or trained:
        recorded = config.groups
    elif config.action_dim == len(joints):
        # a checkpoint that names nothing: one group of the given joints
        recorded = single_group(joints, DEFAULT_COMMAND_TOPIC)
        trained = joints
    else:
        raise ValueError(
            f"checkpoint action_dim {config.action_dim} differs from the {len(joints)} "
            "observed joints and it records no action groups"
        )
    rename = dict(zip(trained, joints, strict=True))
    try:
        groups = tuple(
            ActionGroup(
                g.name, tuple(rename.get(j, j) for j in g.joints), g.topic, g.type, g.source
            )
            for g in recorded
        )
        check_groups(groups, joints, where="the checkpoint's action groups")
    except ValueError as exc:
        raise _bad("joint_names", list(joints), str(exc)) from exc
    return joints, groups


def _output_groups(
    params: PolicyNodeParams, groups: tuple[ActionGroup, ...]
) -> tuple[ActionGroup, ...]:
    """The groups with their effective message type (`output_mode` overrides the recorded
    one) and topic (`output_topics`/`output_topic`, else the recorded command topic; a single
    group whose type was overridden goes to that type's conventional topic)."""
    names = [g.name for g in groups]
    if params.output_topics and len(params.output_topics) != len(groups):
        raise _bad(
            "output_topics",
            list(params.output_topics),
            f"needs one topic per action group {names}, in that order",
        )
    if params.output_topic and len(groups) != 1:
        raise _bad(
            "output_topic",
            params.output_topic,
            f"the checkpoint has {len(groups)} action groups {names}: use output_topics "
            "(one per group, in that order)",
        )
    out = []
    for i, g in enumerate(groups):
        type_ = GROUP_TYPE_OF_MODE.get(params.output_mode, g.type)
        if params.output_topics:
            topic = params.output_topics[i]
        elif params.output_topic:
            topic = params.output_topic
        elif type_ == g.type:
            topic = g.topic
        elif len(groups) == 1:
            topic = DEFAULT_OUTPUT_TOPICS[params.output_mode]
        else:
            raise _bad(
                "output_mode",
                params.output_mode,
                f"changes the message type of group {g.name!r} (recorded as {g.type} on "
                f"{g.topic}): set output_topics, one per group {names}",
            )
        try:
            out.append(ActionGroup(g.name, g.joints, topic, type_, g.source))
        except ValueError as exc:
            raise _bad("output_topics", topic, str(exc)) from exc
    return tuple(out)


def _action_lead(params: PolicyNodeParams, config: PolicyConfig) -> float:
    """The parameter when set (>= 0), else the checkpoint's; a checkpoint that records no
    convention (None) is scheduled as before it existed (0)."""
    if params.action_lead >= 0:
        return float(params.action_lead)
    return float(config.action_lead or 0.0)
