"""The node's settings, ROS-free: raw parameter values, validated, merged once with the
checkpoint into one frozen `NodeSettings` that the controller, the inference worker and the
diagnostics all read (design.md §4–§5).

    PolicyNodeParams   raw values of the declared parameters (ros/params.py declares them)
    resolve_settings   params + checkpoint PolicyConfig -> NodeSettings (mismatches rejected)
    InferenceSettings  what the inference worker needs to load and run the policy
    PolicyInfo         what the loaded policy tells the node (device, action range, steps)
    resolve_limits     NodeSettings + the checkpoint's action range -> SafetyLimits
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffusion_policy_node.policy.config import PolicyConfig

from .action_schedule import MODES as SCHEDULE_MODES
from .inference_worker import DEVICES
from .safety import SafetyLimits, limits_from_action_range

OUTPUT_MODES = ("chunk", "stream")
ACCELERATIONS = ("jit", "cudagraph", "none")
# Numeric precision of inference: auto picks bf16 where the hardware runs it fast (CPU with
# AVX-512-BF16/AMX, CUDA), fp32 elsewhere (policy/precision.py decides).
PRECISIONS = ("auto", "fp32", "bf16")
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
    output_mode: str = "chunk"
    output_topic: str = ""
    num_inference_steps: int = 0
    device: str = "auto"
    acceleration: str = "jit"
    precision: str = "auto"
    blend_mode: str = "inpaint"
    inpaint_overlap: int = 4
    inpaint_decay: float = 0.5
    inpaint_guidance: float = 1.0
    ensemble_m: float = 0.1
    max_obs_age: float = 0.5
    joint_lower_limits: tuple[float, ...] = ()
    joint_upper_limits: tuple[float, ...] = ()
    max_joint_velocity: tuple[float, ...] = ()
    limit_margin_frac: float = 0.1
    autostart: bool = True
    start_active: bool = True
    action_lead: float = -1.0
    inference_margin: float = 0.0
    inference_timeout: float = 10.0
    inference_delay_ms: float = 0.0
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
        if self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, f"expected one of {PRECISIONS}")
        if self.blend_mode not in BLEND_MODES:
            raise _bad("blend_mode", self.blend_mode, f"expected one of {BLEND_MODES}")
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
        if not (math.isfinite(self.inference_margin) and self.inference_margin >= 0):
            raise _bad("inference_margin", self.inference_margin, "must be >= 0 s")
        if not (math.isfinite(self.action_lead) and self.action_lead >= -1):
            raise _bad("action_lead", self.action_lead, "must be >= 0 s, or -1 (checkpoint's)")
        if not (math.isfinite(self.inference_timeout) and self.inference_timeout >= 0):
            raise _bad("inference_timeout", self.inference_timeout, "must be >= 0 s (0: never)")
        if not (math.isfinite(self.inference_delay_ms) and self.inference_delay_ms >= 0):
            raise _bad("inference_delay_ms", self.inference_delay_ms, "must be >= 0 ms")
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


@dataclass(frozen=True)
class InferenceSettings:
    """How the inference worker loads and runs the policy (sent whole to the child process).
    `None` means the checkpoint's value (steps) or torch's default (threads) or unseeded."""

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
    normalizer's min/max, for default limits) and the denoising steps in effect."""

    device: str
    action_min: np.ndarray
    action_max: np.ndarray
    num_inference_steps: int

    @classmethod
    def of(cls, policy: Any, device: str) -> PolicyInfo:
        """The info of a loaded `DiffusionPolicy`/`RegressionPolicy` on `device`."""
        return cls(
            device=str(device),
            action_min=policy.action_normalizer.min.detach().cpu().numpy(),
            action_max=policy.action_normalizer.max.detach().cpu().numpy(),
            num_inference_steps=int(policy.config.num_inference_steps),
        )


@dataclass(frozen=True, eq=False)
class NodeSettings:
    """Everything the node runs on: parameters merged with the checkpoint's config. Built once
    (`resolve_settings`) and passed whole to the controller, the worker and diagnostics."""

    params: PolicyNodeParams
    camera_topics: tuple[str, ...]
    joint_names: tuple[str, ...]
    dt: float
    image_size: tuple[int, int]
    n_obs_steps: int
    n_action_steps: int
    horizon: int
    action_lead: float
    output_topic: str

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self.dt

    @property
    def schedule_mode(self) -> str:
        """The ActionSchedule merge mode: inpainted chunks replace the previous one."""
        return "replace" if self.params.blend_mode == "inpaint" else self.params.blend_mode

    @property
    def chunk_mode(self) -> bool:
        """True: JointTrajectory chunks; False: one Float64MultiArray per tick."""
        return self.params.output_mode == "chunk"

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
        horizon=int(config.horizon),
        action_lead=_action_lead(params, config),
        output_topic=output_topic,
    )


def _action_lead(params: PolicyNodeParams, config: PolicyConfig) -> float:
    """The parameter when set (>= 0), else the checkpoint's; a checkpoint that records no
    convention (None) is scheduled as before it existed (0)."""
    if params.action_lead >= 0:
        return float(params.action_lead)
    return float(config.action_lead or 0.0)


def resolve_limits(
    settings: NodeSettings,
    action_min: Sequence[float] | np.ndarray,
    action_max: Sequence[float] | np.ndarray,
) -> SafetyLimits:
    """Limits of the commanded joints from the checkpoint's action range
    (`limits_from_action_range`), each part overridable by its parameter (their lengths were
    checked by `resolve_settings`)."""
    params, dim = settings.params, len(settings.joint_names)
    derived = limits_from_action_range(
        action_min, action_max, margin_frac=params.limit_margin_frac
    )
    if derived.dim != dim:
        raise ValueError(
            f"checkpoint action range has {derived.dim} dims but {dim} joints are commanded"
        )
    lower = np.array(params.joint_lower_limits or derived.lower, dtype=np.float64)
    upper = np.array(params.joint_upper_limits or derived.upper, dtype=np.float64)
    vel = params.max_joint_velocity
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
