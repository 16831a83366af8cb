"""Our checkpoint folders -> LeRobot DP `pretrained_model` folders (LeRobot 0.3.x layout).

What LeRobot 0.3.2's DiffusionPolicy loads with `from_pretrained`: `config.json` (type
diffusion, features, architecture, scheduler, normalization_mapping) and `model.safetensors`
with the normalization buffers; plus `ros_robot.yaml` (lerobot_robot.RobotMapping: fps, camera
topics, joints, action groups) so `dp-import lerobot` of the folder restores the robot side.

Exact where our model is expressible in LeRobot's:
- a narrower ResNet-18 (`encoder_width` 16/32) is embedded in torchvision's width-64 one: its
  channels first, the others zero (weights, norm scale and shift; GroupNorm's groups are 16
  channels in both, so the real groups see the same statistics; zero channels stay zero);
- our condition order [cameras, state] becomes LeRobot's [state, cameras] by permuting the
  condition columns of every FiLM linear;
- our min-max normalizer becomes MIN_MAX with the same min/max (a dimension whose range is below
  1e-4, which ours only shifts, gets max = min + 2: LeRobot's formula then shifts it the same way;
  its unnormalize then differs from ours, which returns the recorded constant — named in the
  result); images IDENTITY (ours divide by 255, as LeRobot's loader does).
Regression policies and networks other than the U-Net are errors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import save_file

from ..atomic import atomic_folder
from ..policy.checkpoint import load_checkpoint, read_config
from ..policy.config import PolicyConfig
from ..policy.normalizer import RANGE_EPS
from .lerobot_checkpoint import _BACKBONE, CONFIG_JSON, WEIGHTS
from .lerobot_robot import ROBOT_FILE, RobotMapping

_TV_WIDTH = 64  # torchvision's ResNet-18
_TO_LEROBOT_BACKBONE = {v: k for k, v in _BACKBONE.items()}
_MODES = {"identity": "IDENTITY", "mean_std": "MEAN_STD", "min_max": "MIN_MAX"}


class LeRobotExportError(ValueError):
    """Our checkpoint has something LeRobot's DP cannot express; the message names it."""


def _camera_features(config: PolicyConfig) -> list[str]:
    if config.n_cameras == 1:
        return ["observation.image"]
    names = [t.strip("/").split("/")[0] or f"cam{i}" for i, t in enumerate(config.camera_topics)]
    if len(set(names)) != len(names):
        names = [f"cam{i}" for i in range(config.n_cameras)]
    return [f"observation.images.{n}" for n in names]


def _our_key_to_lerobot(key: str, per_camera: bool) -> str:
    if key.startswith("obs_encoder.encoders."):
        index, rest = key[len("obs_encoder.encoders.") :].split(".", 1)
        if rest.startswith("backbone."):
            child, tail = rest[len("backbone.") :].split(".", 1)
            rest = f"backbone.{_TO_LEROBOT_BACKBONE[child]}.{tail}"
        return (
            f"diffusion.rgb_encoder.{index}.{rest}"
            if per_camera
            else f"diffusion.rgb_encoder.{rest}"
        )
    rest = key[len("network.") :]
    for i in (0, 1):
        rest = rest.replace(f".blocks.{i}.", f".conv{i + 1}.")
    rest = rest.replace(".2.conv.", ".2.")
    return f"diffusion.unet.{rest}"


def _widen(key: str, value: torch.Tensor, width: int) -> torch.Tensor:
    """A width-`width` backbone tensor placed in torchvision's width-64 ResNet-18 (zeros
    elsewhere); pool.nets' input channels likewise."""
    if width == _TV_WIDTH or not (".backbone." in key or ".pool.nets.weight" in key):
        return value
    factor = _TV_WIDTH // width
    shape = list(value.shape)
    if key.endswith("num_batches_tracked"):
        return value
    if ".pool.nets.weight" in key:
        shape[1] *= factor
    elif value.ndim == 4:  # conv: (out, in, k, k); the stem's input stays 3 channels
        shape[0] *= factor
        if shape[1] != 3:
            shape[1] *= factor
    else:  # norm weight / bias / running stats
        shape[0] *= factor
    fill = 1.0 if key.endswith("running_var") else 0.0
    out = torch.full(shape, fill, dtype=value.dtype)
    out[tuple(slice(0, n) for n in value.shape)] = value
    return out


def _cond_permutation(config: PolicyConfig, network: Any) -> torch.Tensor:
    """Column order of LeRobot's FiLM input [temb, (state, cameras) per step] in ours."""
    dsed = config.diffusion_step_embed_dim
    image_dim = network.global_cond_dim // config.n_obs_steps - config.state_dim
    per_step = image_dim + config.state_dim
    cols = list(range(dsed))
    for s in range(config.n_obs_steps):
        base = dsed + s * per_step
        cols += list(range(base + image_dim, base + per_step)) + list(
            range(base, base + image_dim)
        )
    return torch.tensor(cols)


def export_lerobot(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write our checkpoint as a LeRobot 0.3.x DP pretrained_model folder; returns a summary
    (folder, notes on what is not exact)."""
    config, meta = read_config(checkpoint)
    if config.policy_type != "diffusion" or config.network != "unet":
        raise LeRobotExportError(
            f"{checkpoint}: policy_type={config.policy_type!r}, network={config.network!r}: "
            "LeRobot's DP is a diffusion U-Net"
        )
    if config.encoder_width > _TV_WIDTH or _TV_WIDTH % config.encoder_width:
        raise LeRobotExportError(f"{checkpoint}: encoder_width={config.encoder_width} > 64")
    if config.variance_type != "fixed_small" or config.eta != 0.0:
        raise LeRobotExportError(
            f"{checkpoint}: variance_type={config.variance_type!r}, eta={config.eta}: LeRobot "
            "samples with fixed_small and eta 0"
        )
    if config.horizon % 2 ** len(config.down_dims):
        raise LeRobotExportError(
            f"{checkpoint}: horizon={config.horizon} must be a multiple of "
            f"2**len(down_dims)={2 ** len(config.down_dims)} in LeRobot's config"
        )
    policy = load_checkpoint(checkpoint)
    per_camera = not config.share_encoder
    features = _camera_features(config)
    state = policy.state_dict()
    perm = (
        _cond_permutation(config, policy.network) if config.cond_order == "images_state" else None
    )
    notes: list[str] = []
    film_scale = True
    weights: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("state_normalizer.", "action_normalizer.", "image_normalizer.")):
            continue
        if ".pool.pos_grid" in key:
            weights[_our_key_to_lerobot(key, per_camera)] = value.clone()
            continue
        value = _widen(key, value, config.encoder_width)
        if perm is not None and key.endswith("cond_encoder.1.weight"):
            value = value[:, perm]
        weights[_our_key_to_lerobot(key, per_camera)] = value.contiguous().clone()
    norm = config.normalization or {"images": "identity", "state": "min_max", "action": "min_max"}
    stats = _stats(policy, config, norm, notes)
    buffers = _buffers(stats, norm, features)
    doc = _config_json(config, features, norm, film_scale)
    robot = RobotMapping(
        fps=config.control_rate_hz,
        cameras=dict(zip(features, config.camera_topics, strict=True)),
        state_joints=list(config.joint_names),
        action_groups=[g.to_dict() for g in config.groups],
        action_lead=config.action_lead,
    )
    with atomic_folder(out) as tmp:
        save_file({**weights, **buffers}, str(tmp / WEIGHTS))
        (tmp / CONFIG_JSON).write_text(json.dumps(doc, indent=4))
        robot.write(tmp / ROBOT_FILE)
    return {"folder": str(out), "image_features": features, "notes": notes, "source_meta": meta}


def _stats(policy: Any, config: PolicyConfig, norm: dict, notes: list[str]) -> dict:
    """{feature: {stat: tensor}} LeRobot's normalization of ours computes with."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, feature in (("state", "observation.state"), ("action", "action")):
        module = getattr(policy, f"{name}_normalizer")
        lo, hi = module.min.detach().clone(), module.max.detach().clone()
        if config.normalization is None:
            flat = (hi - lo) < RANGE_EPS
            if bool(flat.any()):
                hi = torch.where(flat, lo + 2.0, hi)
                notes.append(
                    f"{feature} dims {flat.nonzero().flatten().tolist()} never moved in the "
                    "data: exported with max = min + 2 (same normalization; LeRobot's "
                    "unnormalize returns min + 1 + y there, ours the recorded value)"
                )
        out[feature] = {"min": lo, "max": hi}
        if config.normalization is not None:
            out[feature].update(mean=module.mean.detach().clone(), std=module.std.detach().clone())
    if policy.image_normalizer is not None:
        image = policy.image_normalizer
        for i, feature in enumerate(_camera_features(config)):
            out[feature] = {
                s: getattr(image, s)[i].detach().clone() for s in ("min", "max", "mean", "std")
            }
    return out


def _buffers(stats: dict, norm: dict, features: list[str]) -> dict[str, torch.Tensor]:
    """LeRobot 0.3.x normalization buffers: only the stats each mode uses."""
    used = {"mean_std": ("mean", "std"), "min_max": ("min", "max"), "identity": ()}
    out = {}
    kinds = [("observation.state", "state", ("normalize_inputs",))]
    kinds += [(f, "images", ("normalize_inputs",)) for f in features]
    kinds += [("action", "action", ("normalize_targets", "unnormalize_outputs"))]
    for feature, ours, modules in kinds:
        for stat in used[norm.get(ours, "identity")]:
            for module in modules:
                key = f"{module}.buffer_{feature.replace('.', '_')}.{stat}"
                out[key] = stats[feature][stat].float().contiguous().clone()
    return out


def _config_json(config: PolicyConfig, features: list[str], norm: dict, film: bool) -> dict:
    h, w = config.image_size
    inputs = {f: {"type": "VISUAL", "shape": [3, h, w]} for f in features}
    inputs["observation.state"] = {"type": "STATE", "shape": [config.state_dim]}
    steps = config.num_inference_steps
    return {
        "type": "diffusion",
        "n_obs_steps": config.n_obs_steps,
        "normalization_mapping": {
            "VISUAL": _MODES[norm.get("images", "identity")],
            "STATE": _MODES[norm.get("state", "identity")],
            "ACTION": _MODES[norm.get("action", "identity")],
        },
        "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [config.action_dim]}},
        "device": "cpu",
        "use_amp": False,
        "horizon": config.horizon,
        "n_action_steps": config.n_action_steps,
        "drop_n_last_frames": config.horizon - config.n_action_steps - config.n_obs_steps + 1,
        "vision_backbone": "resnet18",
        "crop_shape": list(config.crop_shape) if config.crop_shape else None,
        "crop_is_random": True,
        "pretrained_backbone_weights": None,
        "use_group_norm": config.backbone_norm == "group",
        "spatial_softmax_num_keypoints": config.num_keypoints,
        "use_separate_rgb_encoder_per_camera": not config.share_encoder,
        "down_dims": list(config.down_dims),
        "kernel_size": config.kernel_size,
        "n_groups": config.n_groups,
        "diffusion_step_embed_dim": config.diffusion_step_embed_dim,
        "use_film_scale_modulation": film,
        "noise_scheduler_type": config.noise_scheduler.upper(),
        "num_train_timesteps": config.num_train_timesteps,
        "beta_schedule": config.beta_schedule,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "prediction_type": config.prediction_type,
        "clip_sample": config.clip_sample,
        "clip_sample_range": config.clip_sample_range,
        "num_inference_steps": steps,
    }
