"""Training configuration: a YAML file with `policy:`, `data:` and `train:` sections.

`policy:` holds PolicyConfig fields, `data:` DataConfig fields and `train:` TrainConfig fields.
The fields both describe (camera topics, joint names, image size, dt, the three horizons) are
taken from `data:` when `policy:` leaves them out and must agree when it gives them; state_dim
and action_dim follow from the joint names. YAML only fills the dataclasses (no code in configs).

`policy: {preset: NAME, ...}` starts from the model-size preset `config/policy/NAME.yaml` (the
one definition of each size, shared with dp-config and the benchmarks; its shape fields are
replaced by the data's) and lets the section's other keys override it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusion_policy_node.config_util import dataclass_from_mapping, load_yaml, parse_override

from ..action_groups import trajectory_lead
from ..data.config import DataConfig
from ..policy.config import PolicyConfig

__all__ = [
    "DEVICES",
    "LR_SCHEDULES",
    "MIXED_PRECISION",
    "SHARED_FIELDS",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "check_agreement",
    "load_run_config",
    "policy_preset",
    "policy_presets",
    "run_config_from_dict",
]

PACKAGE = "diffusion_policy_node"

DEVICES = ("auto", "cpu", "cuda")
LR_SCHEDULES = ("cosine", "constant")
MIXED_PRECISION = ("auto", "no", "bf16")
RUN_SECTIONS = ("policy", "data", "train")  # of a training YAML, and of its --set overrides
# Fields that PolicyConfig and DataConfig both carry: they describe the same robot and timing.
SHARED_FIELDS = (
    "camera_topics",
    "joint_names",
    "image_size",
    "dt",
    "n_obs_steps",
    "horizon",
    "n_action_steps",
)


def _bad(name: str, value: Any, why: str) -> ValueError:
    return ValueError(f"TrainConfig.{name}={value!r}: {why}")


def _preset_dirs() -> list[Path]:
    """config/policy of this source tree, then of installed package shares (colcon)."""
    dirs = [Path(__file__).resolve().parents[2] / "config" / "policy"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "share" / PACKAGE / "config" / "policy")
    return dirs


def policy_presets() -> dict[str, Path]:
    """{name: file} of the model-size presets, config/policy/<name>.yaml."""
    for folder in _preset_dirs():
        found = {p.stem: p for p in sorted(folder.glob("*.yaml"))}
        if found:
            return found
    return {}


def policy_preset(name: str) -> dict[str, Any]:
    """The PolicyConfig fields of preset `name` without the shape fields the data decides
    (camera topics, joints, image size, dt, horizons, state/action dims)."""
    presets = policy_presets()
    if name not in presets:
        raise ValueError(
            f"policy preset {name!r} not found; presets: {sorted(presets)} "
            f"(looked in {', '.join(map(str, _preset_dirs()))})"
        )
    doc = load_yaml(presets[name], "policy preset")
    if not isinstance(doc, dict):
        raise ValueError(
            f"policy preset {presets[name]}: expected a mapping of PolicyConfig fields"
        )
    for key in (*SHARED_FIELDS, "state_dim", "action_dim"):
        doc.pop(key, None)
    return doc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings of one training run (Chi et al.'s defaults).

    AdamW(lr, betas, weight_decay); the LR rises linearly for `warmup_steps`, then follows a
    cosine to 0 at `steps` (`lr_schedule="cosine"`) or stays (`"constant"`). EMA weights (power,
    max_decay) are what checkpoints hold. `batch_size` is per process (under torchrun the global
    batch is batch_size × world size). `num_workers` null means auto: 0 on CPU (a batch loads in
    a few ms; a worker process would take a core from the math), min(8, cores - 1) on CUDA.
    `val_fraction` of the episodes (at least one when there are two or more) form the
    validation split. `cache_dir` defaults to `<out>/cache`.
    """

    steps: int = 100_000
    batch_size: int = 64
    lr: float = 1e-4
    betas: tuple[float, float] = (0.95, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-6
    warmup_steps: int = 500
    lr_schedule: str = "cosine"
    max_grad_norm: float | None = None
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "auto"
    torch_threads: int | None = None
    channels_last: bool = False
    num_workers: int | None = None
    val_fraction: float = 0.1
    val_every: int = 1000
    val_max_batches: int | None = None
    checkpoint_every: int = 5000
    log_every: int = 50
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.betas, (list, tuple)):
            self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "log_every"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise _bad(name, value, "must be an integer >= 1")
        for name in ("warmup_steps", "seed"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise _bad(name, value, "must be an integer >= 0")
        for name in ("torch_threads", "val_max_batches"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise _bad(name, value, "must be null or an integer >= 1")
        if self.num_workers is not None and (
            not _is_int(self.num_workers) or self.num_workers < 0
        ):
            raise _bad("num_workers", self.num_workers, "must be null (auto) or an integer >= 0")
        if not _is_number(self.lr) or not (math.isfinite(self.lr) and self.lr > 0):
            raise _bad("lr", self.lr, "must be a positive number")
        if (
            not isinstance(self.betas, tuple)
            or len(self.betas) != 2
            or not all(_is_number(b) and 0.0 <= b < 1.0 for b in self.betas)
        ):
            raise _bad("betas", self.betas, "expected [beta1, beta2], each in [0, 1)")
        if not _is_number(self.eps) or not self.eps > 0:
            raise _bad("eps", self.eps, "must be > 0")
        if not _is_number(self.weight_decay) or not (
            math.isfinite(self.weight_decay) and self.weight_decay >= 0
        ):
            raise _bad("weight_decay", self.weight_decay, "must be a number >= 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise _bad("lr_schedule", self.lr_schedule, f"expected one of {LR_SCHEDULES}")
        if self.max_grad_norm is not None and (
            not _is_number(self.max_grad_norm) or not self.max_grad_norm > 0
        ):
            raise _bad("max_grad_norm", self.max_grad_norm, "must be null or a number > 0")
        if not _is_number(self.ema_power) or not self.ema_power > 0:
            raise _bad("ema_power", self.ema_power, "must be > 0")
        if not _is_number(self.ema_max_decay) or not 0.0 <= self.ema_max_decay < 1.0:
            raise _bad("ema_max_decay", self.ema_max_decay, "must be in [0, 1)")
        if self.device not in DEVICES:
            raise _bad("device", self.device, f"expected one of {DEVICES}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise _bad(
                "mixed_precision", self.mixed_precision, f"expected one of {MIXED_PRECISION}"
            )
        if not isinstance(self.channels_last, bool):
            raise _bad("channels_last", self.channels_last, "must be true or false")
        if not _is_number(self.val_fraction) or not 0.0 <= self.val_fraction < 1.0:
            raise _bad("val_fraction", self.val_fraction, "must be in [0, 1)")
        if self.cache_dir is not None and not (isinstance(self.cache_dir, str) and self.cache_dir):
            raise _bad("cache_dir", self.cache_dir, "must be null or a folder path")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "train config") -> TrainConfig:
        """Build from a mapping; unknown keys are an error naming `where`."""
        if data is None:
            data = {}
        return dataclass_from_mapping(cls, data, where)


@dataclass
class RunConfig:
    """The three sections of a training YAML, validated and made consistent."""

    policy: PolicyConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "data": self.data.to_dict(),
            "train": self.train.to_dict(),
        }


def _same(name: str, a: Any, b: Any) -> bool:
    if name in ("dt", "action_lead"):
        return _is_number(a) and math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def check_agreement(policy: PolicyConfig, data: DataConfig, where: str = "config") -> None:
    """Raise ValueError naming the first field on which a policy and a data config disagree."""
    for name in SHARED_FIELDS:
        pv, dv = getattr(policy, name), getattr(data, name)
        if not _same(name, pv, dv):
            raise ValueError(
                f"{where}: policy.{name}={_plain(pv)!r} disagrees with data.{name}="
                f"{_plain(dv)!r}; they must be equal"
            )
    if policy.state_dim != data.state_dim:
        raise ValueError(
            f"{where}: policy.state_dim={policy.state_dim} but data.joint_names has "
            f"{data.state_dim} joints"
        )
    if policy.action_dim != data.action_dim:
        raise ValueError(
            f"{where}: policy.action_dim={policy.action_dim} but the data's action groups "
            f"command {data.action_dim} joints"
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_config_from_dict(doc: Any, where: str = "train config") -> RunConfig:
    """Build a RunConfig from a parsed YAML document (see the module doc)."""
    if not isinstance(doc, dict):
        raise ValueError(f"{where}: expected a mapping with policy:, data: and train: sections")
    unknown = sorted(set(doc) - set(RUN_SECTIONS))
    if unknown:
        raise ValueError(f"{where}: unknown section(s) {unknown}; expected policy, data, train")
    if not isinstance(doc.get("data"), dict):
        raise ValueError(f"{where}: missing the data: section (DataConfig fields)")
    data = DataConfig.from_dict(doc["data"], where=f"{where} [data]")
    train = TrainConfig.from_dict(doc.get("train"), where=f"{where} [train]")
    raw = doc.get("policy") or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where} [policy]: expected a mapping of PolicyConfig fields")
    raw = dict(raw)
    if "preset" in raw:
        preset = raw.pop("preset")
        try:
            raw = {**policy_preset(str(preset)), **raw}
        except ValueError as exc:
            raise ValueError(f"{where} [policy] preset: {exc}") from exc
    derived = {name: _plain(getattr(data, name)) for name in SHARED_FIELDS}
    derived["state_dim"] = data.state_dim
    derived["action_dim"] = data.action_dim
    groups = data.groups
    derived["action_groups"] = [g.to_dict() for g in groups]
    # The action-time convention of the data (docs/design.md#action-time-convention), recorded
    # in the checkpoint: the one lead of the JointTrajectory groups (stream groups command each
    # tick's own action).
    try:
        derived["action_lead"] = trajectory_lead(groups, data.dt)
    except ValueError as exc:
        raise ValueError(f"{where} [data]: {exc}") from exc
    for name, value in derived.items():
        if name not in raw:
            raw[name] = value
        elif not _same(name, raw[name], value):
            source = {
                "state_dim": "len(data.joint_names)",
                "action_dim": "the joints of data.action_groups",
                "action_groups": "data.action_groups",
                "action_lead": "the data's action source (data.action_groups' sources/types)",
            }.get(name, f"data.{name}")
            raise ValueError(
                f"{where}: policy.{name}={raw[name]!r} disagrees with {source}={value!r}; "
                f"leave policy.{name} out (it is taken from the data section) or make them equal"
            )
    policy = PolicyConfig.from_dict(raw, where=f"{where} [policy]")
    return RunConfig(policy=policy, data=data, train=train)


def apply_overrides(doc: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides (value parsed as YAML) to a copy of `doc`."""
    doc = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for item in overrides:
        section, name, value = parse_override(item, RUN_SECTIONS)
        target = doc.get(section)
        if not isinstance(target, dict):
            target = doc[section] = {}
        target[name] = value
    return doc


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a training YAML (policy/data/train sections), apply overrides, validate."""
    doc = load_yaml(path, "train config")
    if overrides:
        doc = apply_overrides(doc, overrides)
    return run_config_from_dict(doc, where=f"train config {path}")
