"""PolicyConfig: all that is needed to rebuild a DiffusionPolicy; a checkpoint's config.yaml."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from diffusion_policy_node.action_groups import (
    ActionGroup,
    action_joints,
    check_groups,
    parse_groups,
    single_group,
)
from diffusion_policy_node.config_util import check_choices, dataclass_from_mapping

from .networks import NETWORKS
from .normalizer import NORM_MODES
from .schedulers import BETA_SCHEDULES, PREDICTION_TYPES, SCHEDULER_NAMES, VARIANCE_TYPES

POLICY_TYPES = ("diffusion", "regression")
CAMERA_MSG_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
BACKBONE_NORMS = ("group", "batch")
# Order of one observation step's features in the global condition.
COND_ORDERS = ("images_state", "state_images")
NORMALIZED_FEATURES = ("state", "action", "images")
# Where one group of all joints goes when nothing else is known (a joint_trajectory_controller
# named arm_controller).
DEFAULT_COMMAND_TOPIC = "/arm_controller/joint_trajectory"


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"PolicyConfig.{name}={value!r}: {why}")


@dataclass
class PolicyConfig:
    """Model, observation and timing settings of one policy (docs/design.md#model-and-checkpoint).

    Shapes: images (B, n_obs_steps, n_cameras, 3, *image_size) uint8; state (B, n_obs_steps,
    state_dim); actions (B, horizon, action_dim). Action i of a chunk predicted at tick t belongs
    to grid step t_i = t + (i - (n_obs_steps - 1)) * dt and is the position the controller should
    reach at t_i + action_lead; the runtime executes from index n_obs_steps - 1.
    """

    # "diffusion" (the product) or "regression": the same encoder and ε-network trained with MSE
    # to output the actions directly (the baseline that averages modes).
    policy_type: str = "diffusion"
    # Observation and action spaces.
    camera_topics: list[str] = field(default_factory=lambda: ["/camera/image_raw"])
    # The message type of each camera topic as recorded in the training bags
    # (CAMERA_MSG_TYPES). Empty: not recorded (checkpoints from before the field, or no bag):
    # `camera_types_of` falls back to the topic name (".../compressed": CompressedImage).
    camera_types: list[str] = field(default_factory=list)
    image_size: tuple[int, int] = (96, 96)
    crop_shape: tuple[int, int] | None = (84, 84)
    joint_names: list[str] = field(default_factory=list)
    state_dim: int = 3
    action_dim: int = 3
    # Timing.
    dt: float = 0.1
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    # The action-time convention: action a_k of grid step t_k is the position to reach at
    # t_k + action_lead (s): dt for recorded JointTrajectory commands (evaluated at t_k + dt), 0
    # for stream commands and next_state (`action_lead_of`). None: not recorded (checkpoints
    # from before the field; `checkpoint.read_config` derives it from the training data).
    action_lead: float | None = None
    # The controllers the actions go to (action_groups.py), as dicts: the action vector is their
    # joints concatenated. None: not recorded (checkpoints from before groups):
    # `checkpoint.read_config` derives one group from the training data; `groups` then falls
    # back to one group of all joints.
    action_groups: list[dict[str, Any]] | None = None
    # Vision encoder.
    num_keypoints: int = 32
    share_encoder: bool = False
    # Channels of the ResNet-18 stem/first stage (64: the standard ResNet-18; 32 or 16: the same
    # depth, 1/4 or 1/16 of the weights and compute). A multiple of 16 (GroupNorm of C/16 groups).
    encoder_width: int = 64
    # The ResNet's normalization layers: "group" (GroupNorm of C/16 groups, Chi et al.) or
    # "batch" (BatchNorm2d with its running statistics at inference, torchvision's ResNet-18).
    backbone_norm: str = "group"
    # Per observation step the condition is [camera features..., state] ("images_state") or
    # [state, camera features...] ("state_images", LeRobot's order).
    cond_order: str = "images_state"
    # None: min-max to [-1, 1] of state and action (normalizer.MinMaxNormalizer). Otherwise a
    # mode per feature ("state", "action", "images": identity | mean_std | min_max) with the
    # statistics in normalizer.safetensors (normalizer.StatsNormalizer, LeRobot's formulas).
    normalization: dict[str, str] | None = None
    # True: the U-Net's FiLM parameters are computed per denoising step exactly as its plain
    # forward does (the same products, so the same rounding: an imported LeRobot checkpoint
    # then gives LeRobot's actions bit for bit on the CPU); False: once per chunk in a split
    # form with fewer products (equal up to float32 rounding). unet1d.prepare_conditioning.
    exact_film: bool = False
    # ε-network: a name in networks.NETWORKS. Checkpoints written before this field existed
    # have no `network` key and are U-Nets, the default.
    network: str = "unet"
    # network "unet" (conditional 1-D U-Net, Chi et al.); checked only when it is selected.
    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    # Diffusion (training: DDPM, Algorithm 1).
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    variance_type: str = "fixed_small"
    # What the network predicts: "epsilon" (the noise, Algorithm 1) or "sample" (x_0).
    prediction_type: str = "epsilon"
    # Inference (overridable at load time).
    noise_scheduler: str = "ddim"
    num_inference_steps: int = 10
    eta: float = 0.0

    def __post_init__(self) -> None:
        self.camera_topics = [str(t) for t in self.camera_topics]
        self.camera_types = [str(t) for t in self.camera_types]
        self.joint_names = [str(j) for j in self.joint_names]
        self.image_size = tuple(int(v) for v in self.image_size)  # type: ignore[assignment]
        if self.crop_shape is not None:
            self.crop_shape = tuple(int(v) for v in self.crop_shape)  # type: ignore[assignment]
        self.down_dims = tuple(int(v) for v in self.down_dims)
        if self.action_lead is not None:
            self.action_lead = float(self.action_lead)
        if self.normalization is not None:
            self.normalization = {str(k): str(v) for k, v in dict(self.normalization).items()}
        if self.action_groups is not None:
            self.action_groups = [
                g.to_dict() if isinstance(g, ActionGroup) else dict(g) for g in self.action_groups
            ]
        self.validate()

    def validate(self) -> None:
        if not self.camera_topics:
            raise _bad("camera_topics", self.camera_topics, "need at least one camera")
        if len(set(self.camera_topics)) != len(self.camera_topics):
            raise _bad("camera_topics", self.camera_topics, "duplicate topic")
        if self.camera_types and len(self.camera_types) != len(self.camera_topics):
            raise _bad(
                "camera_types",
                self.camera_types,
                f"needs one type per camera topic {self.camera_topics}, or none",
            )
        for t in self.camera_types:
            if t not in CAMERA_MSG_TYPES:
                raise _bad(
                    "camera_types", self.camera_types, f"{t!r} is not one of {CAMERA_MSG_TYPES}"
                )
        if len(self.image_size) != 2 or min(self.image_size) < 8:
            raise _bad("image_size", self.image_size, "expected (height, width), each >= 8")
        if self.crop_shape is not None and (
            len(self.crop_shape) != 2
            or not all(0 < c <= s for c, s in zip(self.crop_shape, self.image_size, strict=True))
        ):
            raise _bad(
                "crop_shape", self.crop_shape, f"must fit inside image_size {self.image_size}"
            )
        for name in ("state_dim", "action_dim", "n_obs_steps", "horizon", "n_action_steps"):
            if int(getattr(self, name)) < 1:
                raise _bad(name, getattr(self, name), "must be >= 1")
        if self.joint_names and len(self.joint_names) != self.state_dim:
            raise _bad(
                "joint_names",
                self.joint_names,
                f"has {len(self.joint_names)} names, state_dim is {self.state_dim}",
            )
        if self.action_groups is not None:
            groups = parse_groups(self.action_groups, where="PolicyConfig.action_groups")
            check_groups(groups, self.joint_names or None, where="PolicyConfig.action_groups")
            if len(action_joints(groups)) != self.action_dim:
                raise _bad(
                    "action_dim",
                    self.action_dim,
                    f"the action groups command {len(action_joints(groups))} joints",
                )
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise _bad("dt", self.dt, "must be a positive number of seconds")
        lead = self.action_lead
        if lead is not None and not (math.isfinite(lead) and 0 <= lead <= self.horizon * self.dt):
            raise _bad("action_lead", lead, "must be in [0, horizon * dt] seconds (or unset)")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise _bad(
                "n_action_steps",
                self.n_action_steps,
                f"n_obs_steps - 1 + n_action_steps must be <= horizon ({self.horizon})",
            )
        if self.network not in NETWORKS:
            raise _bad("network", self.network, f"expected one of {tuple(NETWORKS)}")
        if self.network == "unet":
            self._validate_unet()
        check_choices(
            self,
            {
                "policy_type": POLICY_TYPES,
                "beta_schedule": BETA_SCHEDULES,
                "variance_type": VARIANCE_TYPES,
                "noise_scheduler": SCHEDULER_NAMES,
                "backbone_norm": BACKBONE_NORMS,
                "cond_order": COND_ORDERS,
                "prediction_type": PREDICTION_TYPES,
            },
            _bad,
        )
        if self.num_train_timesteps < 1:
            raise _bad("num_train_timesteps", self.num_train_timesteps, "must be >= 1")
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise _bad(
                "num_inference_steps",
                self.num_inference_steps,
                f"must be in [1, num_train_timesteps={self.num_train_timesteps}]",
            )
        if not 0.0 < self.beta_start < self.beta_end < 1.0:
            raise _bad("beta_start", (self.beta_start, self.beta_end), "need 0 < start < end < 1")
        if self.eta < 0:
            raise _bad("eta", self.eta, "must be >= 0")
        if self.normalization is not None:
            for key, mode in self.normalization.items():
                if key not in NORMALIZED_FEATURES:
                    raise _bad(
                        "normalization", key, f"unknown feature, expected {NORMALIZED_FEATURES}"
                    )
                if mode not in NORM_MODES:
                    raise _bad(f"normalization[{key}]", mode, f"expected one of {NORM_MODES}")
        if self.num_keypoints < 1:
            raise _bad("num_keypoints", self.num_keypoints, "must be >= 1")
        if self.encoder_width < 16 or self.encoder_width % 16:
            raise _bad("encoder_width", self.encoder_width, "must be a positive multiple of 16")

    def _validate_unet(self) -> None:
        if not self.down_dims or min(self.down_dims) < 1:
            raise _bad("down_dims", self.down_dims, "need positive channel counts")
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise _bad(
                "horizon", self.horizon, f"must be divisible by {factor} for {self.down_dims}"
            )
        if self.n_groups < 1 or any(d % self.n_groups for d in self.down_dims):
            raise _bad("n_groups", self.n_groups, f"must divide every down_dim {self.down_dims}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise _bad("kernel_size", self.kernel_size, "must be odd and positive")
        dsed = self.diffusion_step_embed_dim
        if dsed < 4 or dsed % 2:
            raise _bad("diffusion_step_embed_dim", dsed, "must be even and >= 4")

    @property
    def n_cameras(self) -> int:
        return len(self.camera_topics)

    @property
    def control_rate_hz(self) -> float:
        return 1.0 / self.dt

    @property
    def groups(self) -> tuple[ActionGroup, ...]:
        """The action groups; a checkpoint that records none commands all its joints as one
        JointTrajectory group on the default topic. ValueError when even that is unknown."""
        if self.action_groups is not None:
            return parse_groups(self.action_groups, where="PolicyConfig.action_groups")
        if not self.joint_names or self.action_dim != self.state_dim:
            raise ValueError(
                "the checkpoint records no action groups and no joint names for its "
                f"{self.action_dim} actions; set joint_names"
            )
        return single_group(self.joint_names, DEFAULT_COMMAND_TOPIC)

    @property
    def action_joint_names(self) -> tuple[str, ...]:
        return action_joints(self.groups)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe dict (lists, not tuples)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> PolicyConfig:
        """Build from a dict (e.g. parsed YAML); unknown keys are an error naming `where`."""
        return dataclass_from_mapping(cls, data, where)

    def replace(self, **changes: Any) -> PolicyConfig:
        return dataclasses.replace(self, **changes)


def camera_type_by_name(topic: str) -> str:
    """The name rule for a camera topic whose type was not recorded: a topic ending in
    "/compressed" (image_transport's convention) is CompressedImage, any other Image."""
    return (
        CAMERA_MSG_TYPES[1] if topic.rstrip("/").endswith("/compressed") else CAMERA_MSG_TYPES[0]
    )


def camera_types_of(config: PolicyConfig, topics: Sequence[str] | None = None) -> list[str]:
    """The message type of each camera (in the checkpoint's camera order): as recorded, else by
    the name rule on `topics` (default: the checkpoint's topics; the node may remap them)."""
    if config.camera_types:
        return list(config.camera_types)
    return [camera_type_by_name(t) for t in (topics or config.camera_topics)]


def action_lead_of(action_source: str, command_type: str | None, dt: float) -> float:
    """The action-time convention of training data (docs/design.md#action-time-convention):
    a JointTrajectory command is read at grid time + dt (the point the controller was sent to
    reach one step later), so its
    actions lead by dt; Float64MultiArray stream commands and next joint states by 0."""
    if action_source == "command" and command_type == "JointTrajectory":
        return float(dt)
    return 0.0
