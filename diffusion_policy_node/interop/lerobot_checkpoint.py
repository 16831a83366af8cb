"""LeRobot Diffusion Policy `pretrained_model` folders -> our checkpoint folders (pickle-free).

A LeRobot DP checkpoint is `config.json` + `model.safetensors`; its normalization statistics are
buffers of the state dict (LeRobot 0.3.x: `normalize_inputs.buffer_<feature>.<stat>`, ...) or,
from 0.4, processor files (`policy_preprocessor.json` naming a `normalizer_processor` step and
its `*.safetensors` of `<feature>.<stat>` tensors; `policy_postprocessor.json` likewise for the
`unnormalizer_processor`). Both layouts are read; nothing is unpickled.

The state dict maps one to one onto ours (`lerobot_key_to_ours`): torchvision's ResNet-18 as a
Sequential (`backbone.0` conv1, `.1` bn1, `.4`-`.7` layer1-4) onto our ResNet-18, LeRobot's U-Net
(`conv1`/`conv2` blocks, bare down/up-sampling convolutions) onto ours (`blocks.0/1`, `.conv`).
What LeRobot's DP can express and ours did not is in the policy config: BatchNorm backbones
(`backbone_norm`), LeRobot's feature order in the condition (`cond_order`), per-feature
MEAN_STD / MIN_MAX / IDENTITY normalization incl. images (`normalization`), `sample`
prediction, every diffusers beta schedule. Bias-only FiLM (`use_film_scale_modulation: false`)
becomes our scale-and-bias FiLM with the scale rows zero and their bias one (scale = 1 exactly).
A field that cannot be mapped is an error naming it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..policy.checkpoint import load_tensors, save_checkpoint
from ..policy.config import PolicyConfig
from ..policy.modeling import build_policy
from .lerobot_robot import ROBOT_FILE, RobotMapping

CONFIG_JSON = "config.json"
WEIGHTS = "model.safetensors"
PREPROCESSOR = "policy_preprocessor.json"
POSTPROCESSOR = "policy_postprocessor.json"
# torchvision ResNet children (LeRobot keeps them as a Sequential) -> our module names.
_BACKBONE = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}
_NORM_MODES = {"IDENTITY": "identity", "MEAN_STD": "mean_std", "MIN_MAX": "min_max"}
# Quantile modes (LeRobot >= 0.4) are MIN_MAX over these statistics.
_QUANTILE_STATS = {"QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}
_SCHEDULERS = {"DDPM": "ddpm", "DDIM": "ddim"}
# config.json fields that only matter for training, hub upload or the torch runtime.
_IGNORED = {
    "type", "device", "use_amp", "push_to_hub", "repo_id", "private", "tags", "license",
    "drop_n_last_frames", "crop_is_random", "do_mask_loss_for_padding", "optimizer_lr",
    "optimizer_betas", "optimizer_eps", "optimizer_weight_decay", "scheduler_name",
    "scheduler_warmup_steps", "pretrained_backbone_weights", "compile_model", "compile_mode",
    "gradient_checkpointing", "pretrained_path", "use_peft",
}  # fmt: skip
_MAPPED = {
    "n_obs_steps", "normalization_mapping", "input_features", "output_features", "horizon",
    "n_action_steps", "vision_backbone", "resize_shape", "crop_ratio", "crop_shape",
    "use_group_norm", "spatial_softmax_num_keypoints", "use_separate_rgb_encoder_per_camera",
    "down_dims", "kernel_size", "n_groups", "diffusion_step_embed_dim",
    "use_film_scale_modulation", "noise_scheduler_type", "num_train_timesteps", "beta_schedule",
    "beta_start", "beta_end", "prediction_type", "clip_sample", "clip_sample_range",
    "num_inference_steps",
}  # fmt: skip


class LeRobotImportError(ValueError):
    """A LeRobot checkpoint that cannot be imported; the message names the file and field."""


def _bad(where: Path | str, field: str, value: Any, why: str) -> LeRobotImportError:
    return LeRobotImportError(f"{where}: {field}={value!r}: {why}")


def _load(path: Path) -> dict[str, torch.Tensor]:
    return load_tensors(path, LeRobotImportError, "missing")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise LeRobotImportError(f"{path}: cannot be read ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise LeRobotImportError(f"{path}: not valid JSON ({exc})") from exc


# ------------------------------------------------------------------------------ reading
def read_lerobot(src: str | os.PathLike) -> dict[str, Any]:
    """{"config", "weights" (model tensors only), "stats" {feature: {stat: tensor}},
    "norm_map" {FEATURE_TYPE: MODE}, "layout" "0.3" | "0.4", "folder"} of a pretrained_model
    folder (or its parent holding `pretrained_model/`)."""
    folder = Path(src)
    if (folder / "pretrained_model" / CONFIG_JSON).is_file():
        folder = folder / "pretrained_model"
    if not (folder / CONFIG_JSON).is_file():
        raise LeRobotImportError(
            f"{folder}: no {CONFIG_JSON}; expected a LeRobot pretrained_model"
        )
    config = _read_json(folder / CONFIG_JSON)
    if not isinstance(config, dict) or config.get("type") != "diffusion":
        got = config.get("type") if isinstance(config, dict) else type(config).__name__
        raise _bad(folder / CONFIG_JSON, "type", got, "only LeRobot's 'diffusion' policy maps")
    tensors = _load(folder / WEIGHTS)
    weights = {k: v for k, v in tensors.items() if not k.startswith(_BUFFER_PREFIXES)}
    buffers = {k: v for k, v in tensors.items() if k.startswith(_BUFFER_PREFIXES)}
    norm_map = dict(config.get("normalization_mapping") or {})
    if (folder / PREPROCESSOR).is_file():
        stats, norm_map = _processor_stats(folder, norm_map)
        layout = "0.4"
    else:
        stats = _buffer_stats(buffers, config)
        layout = "0.3"
    return {
        "config": config,
        "weights": weights,
        "stats": stats,
        "norm_map": norm_map,
        "layout": layout,
        "folder": folder,
    }


_BUFFER_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")


def _buffer_stats(buffers: dict[str, torch.Tensor], config: dict) -> dict[str, dict]:
    """0.3.x: `<module>.buffer_<feature with . as _>.<stat>` -> {feature: {stat: tensor}}."""
    features = [*(config.get("input_features") or {}), *(config.get("output_features") or {})]
    by_buffer = {"buffer_" + f.replace(".", "_"): f for f in features}
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in buffers.items():
        _, buffer, stat = key.split(".", 2)
        feature = by_buffer.get(buffer)
        if feature is None:
            raise LeRobotImportError(f"{WEIGHTS}: buffer {key!r} belongs to no feature")
        stats.setdefault(feature, {})[stat] = value
    return stats


def _processor_stats(folder: Path, norm_map: dict) -> tuple[dict[str, dict], dict]:
    """0.4+: the normalizer step of the pre-processor (and the post-processor's unnormalizer
    for the action) -> {feature: {stat: tensor}}, and the norm map they apply."""
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for name, step_name in (
        (PREPROCESSOR, "normalizer_processor"),
        (POSTPROCESSOR, "unnormalizer_processor"),
    ):
        path = folder / name
        if not path.is_file():
            continue
        doc = _read_json(path)
        steps = [s for s in doc.get("steps", []) if s.get("registry_name") == step_name]
        if not steps:
            continue
        step = steps[0]
        norm_map = dict(step.get("config", {}).get("norm_map") or norm_map)
        if "state_file" not in step:
            raise _bad(path, f"steps[{step_name}].state_file", None, "the statistics are missing")
        for key, value in _load(folder / step["state_file"]).items():
            feature, stat = key.rsplit(".", 1)
            stats.setdefault(feature, {})[stat] = value
    return stats, norm_map


# ------------------------------------------------------------------------------ mapping
def lerobot_key_to_ours(key: str, per_camera: bool) -> str:
    """LeRobot DP state-dict key -> ours (module docstring); ValueError for an unknown key."""
    m = re.match(r"diffusion\.rgb_encoder\.(?:(\d+)\.)?(.*)$", key)
    if m:
        index, rest = m.group(1), m.group(2)
        if (index is not None) != per_camera:
            raise ValueError(f"{key}: encoder layout does not match use_separate_rgb_encoder")
        b = re.match(r"backbone\.(\d+)(.*)$", rest)
        if b:
            if b.group(1) not in _BACKBONE:
                raise ValueError(f"{key}: unknown backbone child {b.group(1)}")
            rest = f"backbone.{_BACKBONE[b.group(1)]}{b.group(2)}"
        return f"obs_encoder.encoders.{index or 0}.{rest}"
    if not key.startswith("diffusion.unet."):
        raise ValueError(f"{key}: not part of LeRobot's DiffusionModel")
    rest = key[len("diffusion.unet.") :]
    rest = re.sub(
        r"^((?:down|up)_modules\.\d+\.\d+|mid_modules\.\d+)\.conv([12])\.",
        lambda m: f"{m.group(1)}.blocks.{int(m.group(2)) - 1}.",
        rest,
    )
    rest = re.sub(r"^((?:down|up)_modules\.\d+\.2)\.(weight|bias)$", r"\1.conv.\2", rest)
    return f"network.{rest}"


def _features(config: dict, where: Path) -> tuple[list[str], tuple[int, ...], int, int]:
    """(image feature keys, image shape (C, H, W), state_dim, action_dim)."""
    inputs = config.get("input_features") or {}
    outputs = config.get("output_features") or {}
    images, shape = [], None
    state_dim = None
    for key, ft in inputs.items():
        kind = ft.get("type")
        if kind == "VISUAL":
            images.append(key)
            if shape is not None and tuple(ft["shape"]) != shape:
                raise _bad(where, f"input_features.{key}.shape", ft["shape"], "differs")
            shape = tuple(int(v) for v in ft["shape"])
        elif kind == "STATE" and key == "observation.state":
            state_dim = int(ft["shape"][0])
        else:
            raise _bad(
                where,
                f"input_features.{key}",
                kind,
                "has no ROS source here (only cameras and observation.state map)",
            )
    if not images:
        raise _bad(where, "input_features", sorted(inputs), "need at least one VISUAL feature")
    if shape is None or len(shape) != 3 or shape[0] != 3:
        raise _bad(where, f"input_features.{images[0]}.shape", shape, "expected (3, H, W)")
    if state_dim is None:
        raise _bad(where, "input_features", sorted(inputs), "observation.state is required")
    if set(outputs) != {"action"} or outputs["action"].get("type") != "ACTION":
        raise _bad(where, "output_features", sorted(outputs), "expected exactly 'action'")
    return images, shape, state_dim, int(outputs["action"]["shape"][0])


def _image_geometry(config: dict, shape: tuple[int, ...], where: Path) -> tuple[list, list | None]:
    """(image_size, crop_shape) incl. 0.5+'s resize_shape / crop_ratio: our node resizes every
    camera image to image_size before the policy, as LeRobot's encoder resizes its input."""
    image_size = list(shape[1:])
    crop = config.get("crop_shape")
    resize = config.get("resize_shape")
    if resize is not None:
        image_size = [int(v) for v in resize]
        ratio = float(config.get("crop_ratio", 1.0))
        crop = [int(image_size[0] * ratio), int(image_size[1] * ratio)] if ratio < 1.0 else None
    if crop is not None and (crop[0] > image_size[0] or crop[1] > image_size[1]):
        raise _bad(where, "crop_shape", crop, f"larger than the images {image_size}")
    return image_size, (list(crop) if crop is not None else None)


def _normalization(norm_map: dict, where: Path) -> tuple[dict[str, str], dict[str, tuple]]:
    """Our `normalization` modes per feature and, for quantile modes, the stats to use."""
    modes, quantiles = {}, {}
    for ours, kind in (("images", "VISUAL"), ("state", "STATE"), ("action", "ACTION")):
        mode = str(norm_map.get(kind, "IDENTITY"))
        if mode in _QUANTILE_STATS:
            quantiles[ours] = _QUANTILE_STATS[mode]
            mode = "MIN_MAX"
        if mode not in _NORM_MODES:
            raise _bad(where, f"normalization_mapping.{kind}", mode, f"expected {_NORM_MODES}")
        modes[ours] = _NORM_MODES[mode]
    return modes, quantiles


def to_policy_config(
    lerobot: dict[str, Any], robot: RobotMapping
) -> tuple[PolicyConfig, dict[str, Any]]:
    """Our PolicyConfig for a read LeRobot checkpoint on `robot`, and what was mapped (meta)."""
    config: dict = lerobot["config"]
    where = lerobot["folder"] / CONFIG_JSON
    unknown = sorted(set(config) - _IGNORED - _MAPPED)
    if unknown:
        raise _bad(where, unknown[0], config[unknown[0]], "unknown LeRobot DP field; not mapped")
    if config.get("vision_backbone", "resnet18") != "resnet18":
        raise _bad(where, "vision_backbone", config["vision_backbone"], "only resnet18 maps")
    images, shape, state_dim, action_dim = _features(config, where)
    image_size, crop = _image_geometry(config, shape, where)
    modes, _ = _normalization(lerobot["norm_map"], where)
    scheduler = config.get("noise_scheduler_type", "DDPM")
    if scheduler not in _SCHEDULERS:
        raise _bad(where, "noise_scheduler_type", scheduler, f"expected {tuple(_SCHEDULERS)}")
    T = int(config.get("num_train_timesteps", 100))
    steps = config.get("num_inference_steps")
    dt = robot.dt()
    joints = robot.joints(state_dim)
    groups = robot.groups(joints, action_dim)
    fields = dict(
        policy_type="diffusion",
        camera_topics=robot.camera_topics(images),
        image_size=image_size,
        crop_shape=crop,
        joint_names=joints,
        state_dim=state_dim,
        action_dim=action_dim,
        dt=dt,
        n_obs_steps=int(config.get("n_obs_steps", 2)),
        horizon=int(config.get("horizon", 16)),
        n_action_steps=int(config.get("n_action_steps", 8)),
        action_lead=robot.lead(groups, dt),
        action_groups=groups,
        num_keypoints=int(config.get("spatial_softmax_num_keypoints", 32)),
        share_encoder=not bool(config.get("use_separate_rgb_encoder_per_camera", False)),
        encoder_width=64,
        backbone_norm="group" if config.get("use_group_norm", True) else "batch",
        cond_order="state_images",
        normalization=modes,
        exact_film=True,
        network="unet",
        down_dims=list(config.get("down_dims", (512, 1024, 2048))),
        kernel_size=int(config.get("kernel_size", 5)),
        n_groups=int(config.get("n_groups", 8)),
        diffusion_step_embed_dim=int(config.get("diffusion_step_embed_dim", 128)),
        num_train_timesteps=T,
        beta_schedule=str(config.get("beta_schedule", "squaredcos_cap_v2")),
        beta_start=float(config.get("beta_start", 1e-4)),
        beta_end=float(config.get("beta_end", 0.02)),
        clip_sample=bool(config.get("clip_sample", True)),
        clip_sample_range=float(config.get("clip_sample_range", 1.0)),
        variance_type="fixed_small",
        prediction_type=str(config.get("prediction_type", "epsilon")),
        noise_scheduler=_SCHEDULERS[scheduler],
        num_inference_steps=T if steps is None else int(steps),
        eta=0.0,
    )
    try:
        policy_config = PolicyConfig(**fields)
    except ValueError as exc:
        raise LeRobotImportError(f"{where}: {exc}") from exc
    meta = {
        "source": {
            "format": "lerobot",
            "layout": lerobot["layout"],
            "path": str(lerobot["folder"]),
            "image_features": images,
            "normalization_mapping": dict(lerobot["norm_map"]),
            "use_film_scale_modulation": bool(config.get("use_film_scale_modulation", True)),
        },
        "robot": robot.to_dict(),
    }
    return policy_config, meta


def _stat(stats: dict, feature: str, name: str, where: Path) -> torch.Tensor:
    try:
        return stats[feature][name]
    except KeyError:
        raise LeRobotImportError(
            f"{where}: normalization statistic {feature}.{name} is missing"
        ) from None


def to_state_dict(
    lerobot: dict[str, Any], config: PolicyConfig, meta: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Our policy's full state dict (weights + normalizers) for the LeRobot weights and stats;
    every tensor of either side used exactly once, shapes checked (errors name the key)."""
    where = lerobot["folder"]
    policy = build_policy(config)
    ours = policy.state_dict()
    per_camera = not config.share_encoder
    film_scale = meta["source"]["use_film_scale_modulation"]
    out: dict[str, torch.Tensor] = {}
    for key, value in lerobot["weights"].items():
        try:
            target = lerobot_key_to_ours(key, per_camera)
        except ValueError as exc:
            raise LeRobotImportError(f"{where / WEIGHTS}: {exc}") from exc
        if target not in ours:
            raise LeRobotImportError(f"{where / WEIGHTS}: {key} -> {target}: no such tensor")
        want = ours[target]
        if not film_scale and target.endswith(("cond_encoder.1.weight", "cond_encoder.1.bias")):
            # Bias-only FiLM: scale rows 0 (weight) and 1 (bias), so scale = 1 exactly.
            pad = torch.zeros_like(value) if target.endswith("weight") else torch.ones_like(value)
            value = torch.cat([pad, value], dim=0)
        if tuple(value.shape) != tuple(want.shape):
            raise LeRobotImportError(
                f"{where / WEIGHTS}: {key} has shape {tuple(value.shape)}, {target} needs "
                f"{tuple(want.shape)}; config.json and weights disagree"
            )
        out[target] = value.to(want.dtype)
    stats = lerobot["stats"]
    _, quantiles = _normalization(lerobot["norm_map"], where)
    images = meta["source"]["image_features"]
    modes = config.normalization or {}
    for ours_name, feature_keys in (
        ("state", ["observation.state"]),
        ("action", ["action"]),
        ("images", images),
    ):
        mode = modes.get(ours_name, "identity")
        prefix = {"images": "image_normalizer"}.get(ours_name, f"{ours_name}_normalizer")
        if mode == "identity" and ours_name == "images":
            continue
        buffers = {name: ours[f"{prefix}.{name}"] for name in ("min", "max", "mean", "std")}
        for name, buf in buffers.items():
            out[f"{prefix}.{name}"] = buf.clone()
        lo_hi = quantiles.get(ours_name, ("min", "max"))
        needed = {"mean_std": ("mean", "std"), "min_max": lo_hi}.get(mode, ())
        for stat_name, ours_stat in zip(needed, _ours_names(mode), strict=True):
            values = [_stat(stats, f, stat_name, where) for f in feature_keys]
            out[f"{prefix}.{ours_stat}"] = _stack(values, buffers[ours_stat].shape, where)
        if ours_name == "action":  # the demonstrated range (limits without a URDF)
            _action_range(out, stats, mode, meta, where)
        elif ours_name == "state" and mode == "mean_std":
            for name in ("min", "max"):
                if name in stats.get("observation.state", {}):
                    values = [stats["observation.state"][name]]
                    out[f"{prefix}.{name}"] = _stack(values, buffers[name].shape, where)
    missing = sorted(set(ours) - set(out))
    if missing:
        raise LeRobotImportError(
            f"{where / WEIGHTS}: no LeRobot tensor for {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}; the checkpoint is incomplete"
        )
    for key, value in out.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise LeRobotImportError(f"{where}: {key} has non-finite values (NaN/inf)")
    return out, meta


def _ours_names(mode: str) -> tuple[str, ...]:
    return {"mean_std": ("mean", "std"), "min_max": ("min", "max")}.get(mode, ())


def _stack(values: list[torch.Tensor], shape: torch.Size, where: Path) -> torch.Tensor:
    flat = torch.cat([v.float().reshape(-1) for v in values])
    if flat.numel() != torch.Size(shape).numel():
        raise LeRobotImportError(
            f"{where}: normalization statistics have {flat.numel()} values, expected "
            f"{tuple(shape)}"
        )
    return flat.reshape(shape)


def _action_range(out: dict, stats: dict, mode: str, meta: dict, where: Path) -> None:
    """action_normalizer.min/max = the dataset's action range (runtime limits when the robot
    gives no URDF); without min/max in the checkpoint (0.3.x MEAN_STD), mean ± 3 std."""
    action = stats.get("action", {})
    if "min" in action and "max" in action:
        out["action_normalizer.min"] = action["min"].float().reshape(-1)
        out["action_normalizer.max"] = action["max"].float().reshape(-1)
        meta["action_range"] = "dataset min/max"
    elif mode == "mean_std":
        mean, std = action["mean"].float().reshape(-1), action["std"].float().reshape(-1)
        out["action_normalizer.min"], out["action_normalizer.max"] = mean - 3 * std, mean + 3 * std
        meta["action_range"] = "mean ± 3 std (the checkpoint has no action min/max)"
    else:
        raise LeRobotImportError(f"{where}: the action range (min/max) is missing")


def import_lerobot(
    src: str | os.PathLike, out: str | os.PathLike, robot: RobotMapping | None = None
) -> Path:
    """Convert the LeRobot DP checkpoint `src` into our checkpoint folder `out` and return it.
    `robot` None: `src`/ros_robot.yaml when present (written by export), else defaults + error
    for what has no default (fps)."""
    lerobot = read_lerobot(src)
    if robot is None:
        path = lerobot["folder"] / ROBOT_FILE
        robot = RobotMapping.from_yaml(path) if path.is_file() else RobotMapping()
    try:
        config, meta = to_policy_config(lerobot, robot)
    except LeRobotImportError:
        raise
    except ValueError as exc:
        raise LeRobotImportError(f"{lerobot['folder']}: {exc}") from exc
    state, meta = to_state_dict(lerobot, config, meta)
    policy = build_policy(config)
    policy.load_state_dict(state, strict=True)
    return save_checkpoint(policy.eval(), out, meta=meta)
