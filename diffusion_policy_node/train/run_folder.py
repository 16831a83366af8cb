"""The output folder of a training run: what is written there and how a run resumes from it.

    run.yaml         the resolved configuration (policy, data, train)
    latest/ best/    policy checkpoints with the EMA weights (ready for the node; atomic writes)
    train_state/     resume state: raw weights, optimizer, LR schedule, EMA, step, RNG states
    metrics.jsonl    one JSON record per logging window and per validation
    loss.png         training and validation loss curves

Rank 0 writes; every rank takes part in the collective calls (the RNG-state gather).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from ..policy.checkpoint import save_checkpoint
from ..policy.ema import EMAModel
from ..policy.modeling import DiffusionPolicy
from .config import RunConfig
from .device import DistInfo
from .plots import plot_loss_curves
from .state import (
    get_rng_state,
    load_train_state,
    optimizer_from_flat,
    optimizer_to_flat,
    save_train_state,
)

__all__ = ["RunFolder"]

log = logging.getLogger(__name__)


class RunFolder:
    """Reads and writes `out/` for one process of a run (see the module doc for its layout)."""

    def __init__(self, out: Path, run: RunConfig, dist_info: DistInfo, resume: bool) -> None:
        self.out = out
        self.run = run
        self.dist = dist_info
        self.resume = resume

    def check(self) -> None:
        """--resume needs a train_state/; a new run must not overwrite an old one."""
        state = self.out / "train_state"
        if self.resume and not state.is_dir():
            raise ValueError(
                f"--resume: {self.out} holds no train_state/ to continue from; run without "
                "--resume to start a new run"
            )
        if not self.resume and (state.exists() or (self.out / "latest").exists()):
            raise ValueError(
                f"{self.out}: already holds a training run (train_state/, latest/); pass "
                "--resume to continue it, or choose a new --out"
            )

    def start(self, start_step: int) -> None:
        """Write run.yaml; keep the metrics up to `start_step` (on resume), drop the rest."""
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "run.yaml").write_text(yaml.safe_dump(self.run.to_dict(), sort_keys=False))
        metrics = self.out / "metrics.jsonl"
        kept = []
        if self.resume and metrics.exists():
            for line in metrics.read_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("step", 0) <= start_step:
                    kept.append(line)
        metrics.write_text("".join(line + "\n" for line in kept))

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def meta(self, step: int, split: dict, val_loss: float | None) -> dict[str, Any]:
        """What a policy checkpoint records about its training."""
        return {
            "step": step,
            "val_loss": val_loss,
            "weights": "ema",
            "data": self.run.data.to_dict(),
            "train": self.run.train.to_dict(),
            "split": split,
        }

    def save_policy(
        self, name: str, model: nn.Module, step: int, split: dict, val_loss: float | None
    ) -> None:
        """The checkpoint `out/<name>/` (`latest`, `best`)."""
        save_checkpoint(model, self.out / name, self.meta(step, split, val_loss))

    def save_state(self, step: int, ctx: dict[str, Any], last_loss: float) -> None:
        """latest/ (and best/ when there is no validation), train_state/ and loss.png."""
        rng = [get_rng_state()]
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.dist.is_main:
            return
        policy, ema, best, split = ctx["policy"], ctx["ema"], ctx["best"], ctx["split"]
        if ctx["val_loader"] is None and last_loss < best["score"]:
            # No validation episodes: "best" is the lowest training loss at a checkpoint.
            best.update(score=last_loss, step=step)
            self.save_policy("best", ema.averaged_model, step, split, None)
        self.save_policy("latest", ema.averaged_model, step, split, None)
        tensors = {f"model.{k}": v for k, v in policy.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.averaged_model.state_dict().items()})
        optim_tensors, optim_meta = optimizer_to_flat(ctx["optimizer"])
        tensors.update(optim_tensors)
        sampler = ctx["sampler"]
        epoch, batch_in_epoch = sampler.locate(step)
        sched = ctx["scheduler"].state_dict()
        sched.pop("lr_lambdas", None)
        score = best["score"]
        tc = self.run.train
        doc = {
            "step": step,
            "run": self.run.to_dict(),
            "optimizer": optim_meta,
            "scheduler": sched,
            "ema_step": ema.optimization_step,
            "best": {**best, "score": score if math.isfinite(score) else None},
            "split": split,
            "data_order": {
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "batches_per_epoch": sampler.batches_per_epoch,
                "n_train_windows": ctx["n_train"],
                "batch_size": tc.batch_size,
                "world_size": self.dist.world_size,
                "seed": tc.seed,
            },
            "rng": rng,
        }
        save_train_state(self.out / "train_state", tensors, doc)
        try:
            plot_loss_curves(self.out / "metrics.jsonl", self.out / "loss.png")
        except Exception as exc:  # a figure must never stop training
            log.warning("could not draw %s: %s", self.out / "loss.png", exc)

    def restore(
        self,
        policy: DiffusionPolicy,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: EMAModel | None,
        train_idx: np.ndarray,
    ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        """Load train_state/ into the objects: (step, best-so-far, this rank's RNG or None).
        Other policy/data settings than the saved run's are an error; other train settings
        or data order a warning (the continuation is then not exact)."""
        tensors, doc = load_train_state(self.out / "train_state")
        saved = doc["run"]
        current = self.run.to_dict()
        for section in ("policy", "data"):
            for key, value in current[section].items():
                if saved[section].get(key) != value:
                    raise ValueError(
                        f"--resume: {section}.{key} is {value!r} but the run in {self.out} was "
                        f"trained with {saved[section].get(key)!r}; resume with the same "
                        f"{section} settings or start a new --out"
                    )
        changed = [k for k, v in current["train"].items() if saved["train"].get(k) != v]
        if changed:
            log.warning(
                "--resume with changed train settings %s: not an exact continuation", changed
            )
        order = doc["data_order"]
        batch_size = self.run.train.batch_size
        if (order["n_train_windows"], order["world_size"], order["batch_size"]) != (
            len(train_idx),
            self.dist.world_size,
            batch_size,
        ):
            log.warning(
                "--resume: data order differs (windows/world size/batch size %s -> %s); the "
                "continuation is not exact",
                (order["n_train_windows"], order["world_size"], order["batch_size"]),
                (len(train_idx), self.dist.world_size, batch_size),
            )
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        policy.load_state_dict(model_state, strict=True)
        optimizer_from_flat(optimizer, tensors, doc["optimizer"])
        scheduler.load_state_dict({**doc["scheduler"], "lr_lambdas": [None]})
        if ema is not None:
            ema_state = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
            ema.averaged_model.load_state_dict(ema_state, strict=True)
            ema.optimization_step = int(doc["ema_step"])
        rngs = doc.get("rng") or []
        rng = rngs[self.dist.rank] if len(rngs) == self.dist.world_size else None
        if rng is None:
            log.warning(
                "--resume: no RNG state for %d process(es); reseeding", self.dist.world_size
            )
        best = dict(doc.get("best") or {})
        best["score"] = math.inf if best.get("score") is None else float(best["score"])
        best.setdefault("val_loss", None)
        return int(doc["step"]), best, rng
