"""Checkpoint folders: config.yaml + safetensors weights + normalizer stats, never unpickled.

    <checkpoint>/config.yaml             format tag, PolicyConfig (model, data and timing), meta
    <checkpoint>/model.safetensors       ε-network + vision encoder weights (EMA weights)
    <checkpoint>/normalizer.safetensors  statistics of state and action (and images)

Loading validates the format, the config, the key set, every shape and that every tensor is
finite, and raises CheckpointError naming the file and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..action_groups import single_group
from ..atomic import atomic_folder
from .accel.precision import apply_precision
from .config import DEFAULT_COMMAND_TOPIC, PolicyConfig, action_lead_of
from .modeling import DiffusionPolicy, build_policy, upgrade_legacy_keys

FORMAT = "diffusion_policy_node/checkpoint/v1"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
NORMALIZER_FILE = "normalizer.safetensors"
NORMALIZER_PREFIXES = ("state_normalizer.", "action_normalizer.", "image_normalizer.")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded; the message names the file and the fix."""


def _split_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    norm = {k: v for k, v in state.items() if k.startswith(NORMALIZER_PREFIXES)}
    model = {k: v for k, v in state.items() if k not in norm}
    return model, norm


def save_checkpoint(
    policy: DiffusionPolicy, folder: str | os.PathLike, meta: dict[str, Any] | None = None
) -> Path:
    """Write `policy` (its current weights: pass the EMA model for inference) atomically.

    The folder is assembled next to its destination and renamed into place, so a crash never
    leaves a half-written checkpoint where a good one was.
    """
    state = {k: v.detach().to("cpu").contiguous() for k, v in policy.state_dict().items()}
    model_state, norm_state = _split_state(state)
    doc = {"format": FORMAT, "policy": policy.config.to_dict(), "meta": dict(meta or {})}
    with atomic_folder(folder) as tmp:
        save_file(model_state, str(tmp / MODEL_FILE), metadata={"format": FORMAT})
        save_file(norm_state, str(tmp / NORMALIZER_FILE), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
    return Path(folder)


def read_config(folder: str | os.PathLike) -> tuple[PolicyConfig, dict[str, Any]]:
    """(PolicyConfig, meta) of a checkpoint folder, validated, without loading weights."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist (or is not a folder)")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint folder needs {CONFIG_FILE}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{path}: format is {got!r}, expected {FORMAT!r}")
    try:
        config = PolicyConfig.from_dict(doc.get("policy"), where=f"{path} [policy]")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    meta = dict(doc.get("meta") or {})
    if config.action_lead is None:
        config.action_lead = _trained_action_lead(meta, config.dt)
    if config.action_groups is None:
        config.action_groups = _trained_groups(meta, config)
    return config, meta


def _trained_groups(meta: dict[str, Any], config: PolicyConfig) -> list[dict[str, Any]] | None:
    """The one action group of a checkpoint written before groups were recorded: its joints on
    the command topic it was trained from (meta["data"]); None when that is not recorded."""
    data = meta.get("data")
    if not isinstance(data, dict) or not config.joint_names:
        return None
    if config.action_dim != config.state_dim:
        return None
    group = single_group(
        config.joint_names,
        str(data.get("command_topic") or DEFAULT_COMMAND_TOPIC),
        str(data.get("command_type") or "JointTrajectory"),
        str(data.get("action_source") or "command"),
    )
    return [group[0].to_dict()]


def _trained_action_lead(meta: dict[str, Any], dt: float) -> float | None:
    """The action lead of a checkpoint written before `action_lead` was recorded, from the data
    config it was trained on (meta["data"]); None when that is not recorded either."""
    data = meta.get("data")
    if not isinstance(data, dict) or "action_source" not in data:
        return None
    return action_lead_of(str(data["action_source"]), data.get("command_type"), dt)


def load_tensors(
    path: Path,
    error: type[ValueError] = CheckpointError,
    missing: str = "missing; re-export the checkpoint",
) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file `path`, on the CPU (nothing is unpickled). A missing
    file raises `error` with "<path>: <missing>", an unreadable one `error` saying so."""
    if not path.is_file():
        raise error(f"{path}: {missing}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise error(f"{path}: not a readable safetensors file ({exc})") from exc


def _check_against(
    path: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: keys do not match the model built from {CONFIG_FILE}: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, want in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{path}: tensor '{key}' has shape {tuple(got.shape)}, the config gives "
                f"{tuple(want.shape)}; config.yaml and weights disagree"
            )
        if got.is_floating_point() and not torch.isfinite(got).all():
            bad = int((~torch.isfinite(got)).sum())
            raise CheckpointError(f"{path}: tensor '{key}' has {bad} non-finite values (NaN/inf)")


def check_action_width(folder: str | os.PathLike, config: PolicyConfig) -> None:
    """The width of the action vector the weights were trained for (the action normalizer's
    and the network's output layer's shapes, read from the safetensors headers without loading
    them) against `config.action_dim`; CheckpointError naming those shapes when they differ.
    Run before anything interprets the action vector (joint names, action groups), so a
    config.yaml that does not belong to its weights is reported as that, not as a joint problem."""
    folder = Path(folder)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, wanted in (
        (NORMALIZER_FILE, lambda k: k.startswith("action_normalizer.")),
        (
            MODEL_FILE,
            lambda k: k.endswith("final_conv.1.weight") or k.endswith("final_conv.1.bias"),
        ),
    ):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing; re-export the checkpoint")
        try:
            with safe_open(str(path), "pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                    if wanted(key):
                        shapes[f"{name}:{key}"] = tuple(fh.get_slice(key).get_shape())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    widths = {shape[0] for shape in shapes.values() if shape}
    if widths and widths != {config.action_dim}:
        listed = ", ".join(f"'{k}' {list(v)}" for k, v in sorted(shapes.items()))
        raise CheckpointError(
            f"{folder}: the weights are for {sorted(widths)} action(s) ({listed}) but "
            f"{CONFIG_FILE} says action_dim={config.action_dim} (joint_names "
            f"{config.joint_names}): {CONFIG_FILE} does not belong to these "
            "weights; re-export the checkpoint (joint_names cannot fix this)"
        )


def load_checkpoint(
    folder: str | os.PathLike,
    device: str | torch.device = "cpu",
    noise_scheduler: str | None = None,
    num_inference_steps: int | None = None,
    eta: float | None = None,
    acceleration: str = "none",
    precision: str = "fp32",
) -> DiffusionPolicy:
    """Rebuild the policy of a checkpoint folder in eval mode on `device`.

    Inference knobs (sampler, step count, η, acceleration none|jit|cudagraph, precision
    auto|fp32|bf16|bf16-encoder — see policy/accel/precision.py) may be overridden; they are
    validated here.
    """
    folder = Path(folder)
    config, _ = read_config(folder)
    try:
        if noise_scheduler is not None or num_inference_steps is not None or eta is not None:
            config = config.replace(
                noise_scheduler=noise_scheduler or config.noise_scheduler,
                num_inference_steps=num_inference_steps or config.num_inference_steps,
                eta=config.eta if eta is None else eta,
            )
        policy = build_policy(config)
    except ValueError as exc:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {exc}") from exc
    expected_model, expected_norm = _split_state(policy.state_dict())
    # Checkpoints from before the ε-network protocol name the network `unet.*`.
    model_state = upgrade_legacy_keys(load_tensors(folder / MODEL_FILE))
    norm_state = load_tensors(folder / NORMALIZER_FILE)
    _check_against(folder / MODEL_FILE, model_state, expected_model)
    _check_against(folder / NORMALIZER_FILE, norm_state, expected_norm)
    policy.load_state_dict({**model_state, **norm_state}, strict=True)
    policy = policy.to(device).eval()
    try:
        apply_precision(policy, precision, device)
        policy.enable_acceleration(acceleration)
    except ValueError as exc:
        raise CheckpointError(f"{folder}: {exc}") from exc
    return policy
