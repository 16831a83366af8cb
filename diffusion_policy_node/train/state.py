"""Resume state of a training run, written without pickle: safetensors + JSON.

    <out>/train_state/tensors.safetensors   model.*, ema.*, optim.<param index>.<key> tensors
    <out>/train_state/state.json            step, run config, optimizer hyper-parameters, LR
                                            scheduler, EMA step, data order, RNG states (per rank)

The folder is assembled next to its destination and renamed into place, so a crash leaves either
the previous state or the new one. Loading never executes code from the files.
"""

from __future__ import annotations

import base64
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from diffusion_policy_node.atomic import atomic_folder

__all__ = [
    "STATE_FORMAT",
    "TrainStateError",
    "get_rng_state",
    "load_train_state",
    "optimizer_from_flat",
    "optimizer_to_flat",
    "save_train_state",
    "set_rng_state",
]

STATE_FORMAT = "diffusion_policy_node/train_state/v1"
TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"


class TrainStateError(ValueError):
    """A resume state that cannot be read; the message names the file and what to do."""


def _b64(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(text), np.uint8).copy())


def get_rng_state() -> dict[str, Any]:
    """JSON-safe RNG states of Python's `random`, numpy's global RNG, torch CPU (and CUDA)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the states `get_rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_unb64(s) for s in state["cuda"]])


def optimizer_to_flat(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into tensors (`optim.<i>.<key>`) and JSON-safe rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    groups = []
    for group in sd["param_groups"]:
        groups.append({k: list(v) if isinstance(v, tuple) else v for k, v in group.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_from_flat(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Load what `optimizer_to_flat` produced into `optimizer` (same parameters, same order)."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_train_state(
    folder: str | os.PathLike, tensors: dict[str, torch.Tensor], doc: dict[str, Any]
) -> Path:
    """Write tensors + JSON document atomically to `folder` (replacing an older state)."""
    with atomic_folder(folder) as tmp:
        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(cpu, str(tmp / TENSORS_FILE), metadata={"format": STATE_FORMAT})
        (tmp / STATE_FILE).write_text(json.dumps({"format": STATE_FORMAT, **doc}))
    return Path(folder)


def load_train_state(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, document) of a resume state folder; raises TrainStateError naming the file."""
    folder = Path(folder)
    path = folder / STATE_FILE
    if not path.is_file():
        raise TrainStateError(
            f"{path}: missing; there is no resume state in {folder.parent} (train without "
            "--resume, or point --out at the run to continue)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TrainStateError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise TrainStateError(f"{path}: format is {got!r}, expected {STATE_FORMAT!r}")
    try:
        tensors = load_file(str(folder / TENSORS_FILE), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TrainStateError(f"{folder / TENSORS_FILE}: unreadable ({exc})") from exc
    return tensors, doc
