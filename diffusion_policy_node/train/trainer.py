"""The training loop: bags -> cache -> windows -> DDPM loss -> AdamW + EMA -> checkpoints.

One process, or several under `torchrun --nproc_per_node=N` (DDP: nccl on GPU, gloo on CPU;
every rank reads its own deterministic shard of each epoch, rank 0 writes checkpoints and logs).

Output folder `<out>/`: `cache/` (the decoded data set, unless train.cache_dir points
elsewhere) and what `run_folder.RunFolder` writes (run.yaml, latest/, best/, train_state/,
metrics.jsonl, loss.png). The data order is in `data_order.py`, the process set-up in `device.py`.

Resuming is exact: the data order is a function of (seed, epoch) only, so the batches of step s
are known without replaying the earlier ones, and every RNG that the loss draws from is restored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from ..cpu_threads import train_threads
from ..data.cache import EpisodeCache, ensure_cache, normalizer_stats, open_cache
from ..data.ingest_summary import recorded_camera_types
from ..data.sampler import WindowDataset
from ..policy.constants import ACTION, OBS_STATE
from ..policy.ema import EMAModel
from ..policy.modeling import DiffusionPolicy, build_policy
from .config import RunConfig, TrainConfig
from .data_order import StepBatchSampler, make_loader, split_episodes, window_episodes
from .device import DistInfo, resolve_device, seed_everything
from .run_folder import RunFolder
from .state import set_rng_state

__all__ = ["TrainResult", "Trainer", "lr_lambda", "train"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- small helpers


def lr_lambda(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """LR factor at `step` (diffusers' get_cosine_schedule_with_warmup, or constant)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


class _LRLambda:
    """Picklable closure for LambdaLR."""

    def __init__(self, warmup_steps: int, total_steps: int, schedule: str) -> None:
        self.warmup_steps, self.total_steps, self.schedule = warmup_steps, total_steps, schedule

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.warmup_steps, self.total_steps, self.schedule)


class _LossModule(nn.Module):
    """Wraps `policy.compute_loss` as `forward` so DDP sees (and syncs) the call."""

    def __init__(self, policy: DiffusionPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.compute_loss(batch)


class _Progress:
    """Progress line on stderr: carriage-return updates on a TTY, plain lines otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, steps_per_s: float, extra: str = "") -> None:
        if not self.enabled:
            return
        eta = (self.total - step) / steps_per_s if steps_per_s > 0 else float("inf")
        eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
        width = len(str(self.total))
        line = (
            f"step {step:>{width}}/{self.total} | loss {loss:.4f} | {steps_per_s:.2f} steps/s "
            f"| ETA {eta_text}{extra}"
        )
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(("\n" if self.tty else "") + text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr, flush=True)


@dataclass
class TrainResult:
    """What a `fit` call did (rank 0 view)."""

    out: Path
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, window mean)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    best_val_loss: float | None = None


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Train a policy on bags into an output folder (see the module doc for its layout)."""

    def __init__(
        self,
        run: RunConfig,
        bags: Sequence[str | os.PathLike],
        out: str | os.PathLike,
        resume: bool = False,
        progress: bool = True,
        dist_info: DistInfo | None = None,
    ) -> None:
        self.run = run
        self.bags = [Path(b) for b in bags]
        self.out = Path(out)
        self.resume = resume
        self.dist = dist_info or DistInfo.from_env()
        self.progress_enabled = progress and self.dist.is_main
        self.files = RunFolder(self.out, run, self.dist, resume)
        if not self.bags:
            raise ValueError("no bags given: pass at least one bag with --data")

    @property
    def tc(self) -> TrainConfig:
        return self.run.train

    @property
    def cache_dir(self) -> Path:
        return Path(self.tc.cache_dir) if self.tc.cache_dir else self.out / "cache"

    def fit(self, stop_after: int | None = None) -> TrainResult:
        """Train to `train.steps` (or stop, checkpointed, after step `stop_after`)."""
        created = False
        if self.dist.distributed and not dist.is_initialized():
            backend = "nccl" if self._device().type == "cuda" else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(self._device())
            dist.init_process_group(backend=backend)
            created = True
        try:
            return self._fit(stop_after)
        finally:
            if created:
                dist.destroy_process_group()

    def _device(self) -> torch.device:
        return resolve_device(self.tc.device, self.dist.local_rank)

    def _barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    # ----------------------------------------------------------------------------- set-up
    def _load_data(self) -> tuple[EpisodeCache, WindowDataset, np.ndarray, np.ndarray, dict]:
        if self.dist.is_main:
            info = ensure_cache(self.bags, self.run.data, self.cache_dir)
            log.info(
                "cache %s: %d episodes, %d steps (%s)",
                info.path,
                info.n_episodes,
                info.n_steps,
                "rebuilt" if info.rebuilt else "up to date",
            )
        self._barrier()
        cache = open_cache(self.cache_dir)
        if cache.config.content_hash() != self.run.data.content_hash():
            raise ValueError(
                f"cache {self.cache_dir} was built with other data settings; delete it or "
                "point train.cache_dir elsewhere"
            )
        # The checkpoint records each camera's message type as the bags have it (the node
        # subscribes with it; a topic's name says nothing reliable about its type).
        types = recorded_camera_types(cache.meta.get("ingest", []), self.run.data.camera_topics)
        if types:
            self.run.policy = self.run.policy.replace(camera_types=types)
        p = self.run.policy
        window_end = self.run.data.window_end
        dataset = WindowDataset(cache, p.n_obs_steps, p.horizon, p.n_action_steps, window_end)
        log.info(
            "%d training windows; episode ends: %s (data.window_end)",
            len(dataset),
            "every step is an observation, then hold"
            if window_end == "hold"
            else f"the last {p.horizon - p.n_obs_steps - p.n_action_steps + 1} steps of each "
            "episode are never an observation",
        )
        train_eps, val_eps = split_episodes(cache.n_episodes, self.tc.val_fraction, self.tc.seed)
        episode_of = window_episodes(dataset)
        train_idx = np.flatnonzero(np.isin(episode_of, train_eps))
        val_idx = np.flatnonzero(np.isin(episode_of, val_eps))
        if len(train_idx) == 0:
            raise ValueError(f"cache {self.cache_dir}: no training windows; record more data")
        split = {"train_episodes": train_eps, "val_episodes": val_eps}
        return cache, dataset, train_idx, val_idx, split

    def _build(self, cache: EpisodeCache, device: torch.device) -> DiffusionPolicy:
        seed_everything(self.tc.seed)
        policy = build_policy(dataclasses.replace(self.run.policy))
        stats = normalizer_stats(cache)
        policy.set_normalizer_stats(
            stats[OBS_STATE]["min"],
            stats[OBS_STATE]["max"],
            stats[ACTION]["min"],
            stats[ACTION]["max"],
        )
        policy.to(device)
        if self.tc.channels_last:
            policy.obs_encoder.to(memory_format=torch.channels_last)
        return policy

    def _optimizer(self, policy: nn.Module) -> torch.optim.Optimizer:
        tc = self.tc
        kwargs: dict[str, Any] = {
            "lr": tc.lr,
            "betas": tc.betas,
            "eps": tc.eps,
            "weight_decay": tc.weight_decay,
        }
        try:  # the fused kernel: one pass over all parameters (CUDA, and CPU in torch >= 2.4)
            return torch.optim.AdamW(policy.parameters(), fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(policy.parameters(), foreach=True, **kwargs)

    # ----------------------------------------------------------------------------- the loop
    def _fit(self, stop_after: int | None) -> TrainResult:
        device = self._device()
        # One thread per available core unless train.torch_threads says otherwise; the OpenMP
        # threads wait passively (cpu_threads.py), so a busy neighbour costs a core, not the pool.
        torch.set_num_threads(train_threads(self.tc.torch_threads))
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.files.check()
        cache, dataset, train_idx, val_idx, split = self._load_data()
        ctx, start_step, rng = self._training_state(cache, device, train_idx)
        stop = self._stop_step(start_step, stop_after)
        self.files.start(start_step)
        model = self._loss_model(ctx["policy"], device)
        loader = self._data_loaders(ctx, dataset, train_idx, val_idx, start_step, stop)
        ctx.update(split=split, n_train=len(train_idx))
        result = TrainResult(out=self.out, step=start_step)
        progress = _Progress(self.tc.steps, self.progress_enabled)
        if self.dist.is_main:
            progress.message(
                f"training {self.tc.steps} steps ({start_step} done) on {device} "
                f"x{self.dist.world_size}: {len(train_idx)} train / {len(val_idx)} val windows, "
                f"batch {self.tc.batch_size}, "
                f"{sum(p.numel() for p in ctx['policy'].parameters()) / 1e6:.2f}M parameters"
            )
        batches = iter(loader)
        self._seed_noise(rng)
        result.step = self._train_loop(model, batches, ctx, start_step, stop, result, progress)
        result.best_val_loss = ctx["best"]["val_loss"]
        return result

    def _training_state(
        self, cache: EpisodeCache, device: torch.device, train_idx: np.ndarray
    ) -> tuple[dict[str, Any], int, Any]:
        """Policy, optimizer, LR schedule, EMA (rank 0) and best-so-far, restored on --resume:
        (the run context, the step to start from, the saved RNG state or None)."""
        tc = self.tc
        policy = self._build(cache, device)
        optimizer = self._optimizer(policy)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _LRLambda(tc.warmup_steps, tc.steps, tc.lr_schedule)
        )
        ema = (
            EMAModel(policy, power=tc.ema_power, max_decay=tc.ema_max_decay)
            if self.dist.is_main
            else None
        )
        start_step, best, rng = 0, {"val_loss": None, "step": None, "score": math.inf}, None
        if self.resume:
            start_step, best, rng = self.files.restore(
                policy, optimizer, scheduler, ema, train_idx
            )
        amp = tc.mixed_precision == "bf16" or (
            tc.mixed_precision == "auto" and device.type == "cuda"
        )
        ctx = {
            "policy": policy,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "ema": ema,
            "best": best,
            "amp": amp,
            "device": device,
        }
        return ctx, start_step, rng

    def _stop_step(self, start_step: int, stop_after: int | None) -> int:
        stop = self.tc.steps if stop_after is None else int(stop_after)
        if not start_step < stop <= self.tc.steps:
            raise ValueError(
                f"nothing to train: the run is at step {start_step}, asked to stop at {stop} "
                f"(train.steps={self.tc.steps}); raise train.steps to continue a finished run"
            )
        return stop

    def _loss_model(self, policy: DiffusionPolicy, device: torch.device) -> nn.Module:
        """The module the loop calls for the loss (DDP-wrapped when distributed)."""
        model: nn.Module = _LossModule(policy)
        if self.dist.distributed:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        return model

    def _data_loaders(
        self,
        ctx: dict[str, Any],
        dataset: WindowDataset,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        start_step: int,
        stop: int,
    ) -> DataLoader:
        """The training loader for steps start_step..stop (this rank's share); the step sampler
        and the validation loader (rank 0, when there are validation windows) go into `ctx`."""
        tc, device = self.tc, ctx["device"]
        sampler = StepBatchSampler(
            len(train_idx), tc.batch_size, tc.seed, self.dist.rank, self.dist.world_size,
            start_step, stop,
        )  # fmt: skip
        loader = make_loader(
            dataset, train_idx, device, tc.num_workers, tc.seed, batch_sampler=sampler
        )
        ctx["sampler"] = sampler
        ctx["val_loader"] = (
            make_loader(
                dataset, val_idx, device, tc.num_workers, tc.seed, batch_size=tc.batch_size
            )
            if len(val_idx) and self.dist.is_main
            else None
        )
        return loader

    def _seed_noise(self, rng: Any) -> None:
        """Continue the saved RNG streams on resume; else a different noise stream per rank
        (the weights are rank 0's: DDP broadcasts them)."""
        if rng is not None:
            set_rng_state(rng)
        else:
            seed = np.random.SeedSequence([self.tc.seed, self.dist.rank]).generate_state(1)[0]
            seed_everything(int(seed))

    def _train_loop(
        self,
        model: nn.Module,
        batches: Iterator[dict[str, torch.Tensor]],
        ctx: dict[str, Any],
        start_step: int,
        stop: int,
        result: TrainResult,
        progress: _Progress,
    ) -> int:
        """Optimise until the batches run out (at `stop`), logging, validating and
        checkpointing on schedule; Ctrl-C saves a resumable state. Returns the last step."""
        tc = self.tc
        ctx["policy"].train()
        step = start_step
        window: list[torch.Tensor] = []
        t_window = time.perf_counter()
        last_loss = math.nan
        try:
            for batch in batches:
                window.append(self._train_step(model, batch, ctx))
                step += 1
                if step % tc.log_every == 0 or step == stop:
                    last_loss = self._log(
                        step, window, t_window, ctx["optimizer"], result, progress
                    )
                    window, t_window = [], time.perf_counter()
                if ctx["val_loader"] is not None and (step % tc.val_every == 0 or step == stop):
                    self._validate_and_keep_best(step, ctx, result, progress)
                if step % tc.checkpoint_every == 0 or step == stop:
                    self.files.save_state(step, ctx, last_loss)
        except KeyboardInterrupt:
            if not self.dist.distributed and step > start_step:
                progress.message(f"interrupted: saving the state at step {step} for --resume")
                self.files.save_state(step, ctx, last_loss)
            raise
        finally:
            progress.close()
        return step

    def _train_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], ctx: dict[str, Any]
    ) -> torch.Tensor:
        """One optimiser step (Algorithm 1) and the EMA update; returns the detached loss."""
        policy, optimizer, ema, device = ctx["policy"], ctx["optimizer"], ctx["ema"], ctx["device"]
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx["amp"]):
            loss = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.tc.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(policy.parameters(), self.tc.max_grad_norm)
        optimizer.step()
        ctx["scheduler"].step()
        if ema is not None:
            ema.step(policy)
        return loss.detach().float()

    # ----------------------------------------------------------------------------- logging
    def _log(
        self,
        step: int,
        window: list[torch.Tensor],
        t_window: float,
        optimizer: torch.optim.Optimizer,
        result: TrainResult,
        progress: _Progress,
    ) -> float:
        mean = torch.stack(window).mean()
        if self.dist.distributed:
            mean = mean.clone()
            dist.all_reduce(mean)
            mean /= self.dist.world_size
        loss = float(mean)
        elapsed = max(time.perf_counter() - t_window, 1e-9)
        steps_per_s = len(window) / elapsed
        if self.dist.is_main:
            record = {
                "step": step,
                "loss": loss,
                "lr": optimizer.param_groups[0]["lr"],
                "steps_per_s": steps_per_s,
                "samples_per_s": steps_per_s * self.tc.batch_size * self.dist.world_size,
                "time": time.time(),
            }
            self.files.append_metrics(record)
            result.losses.append((step, loss))
            progress.update(step, loss, steps_per_s)
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss} at step {step}; lower train.lr, set "
                "train.max_grad_norm, or check the data for outliers"
            )
        return loss

    @torch.no_grad()
    def _validation_loss(self, model: DiffusionPolicy, ctx: dict[str, Any]) -> float:
        """Mean loss over the validation windows, with a fixed noise seed (comparable across
        evaluations) and without touching the training RNG streams."""
        device = ctx["device"]
        devices = [device.index or 0] if device.type == "cuda" else []
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.tc.seed + 1)
            for i, batch in enumerate(ctx["val_loader"]):
                if self.tc.val_max_batches is not None and i >= self.tc.val_max_batches:
                    break
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=ctx["amp"]):
                    loss = model.compute_loss(batch)
                n = len(batch[ACTION])
                total += float(loss) * n
                count += n
        return total / max(count, 1)

    def _validate_and_keep_best(
        self, step: int, ctx: dict[str, Any], result: TrainResult, progress: _Progress
    ) -> None:
        model = ctx["ema"].averaged_model
        val_loss = self._validation_loss(model, ctx)
        self.files.append_metrics({"step": step, "val_loss": val_loss, "time": time.time()})
        result.val_losses.append((step, val_loss))
        progress.message(f"step {step}: validation loss {val_loss:.4f} (EMA weights)")
        best = ctx["best"]
        if val_loss < best["score"]:
            best.update(score=val_loss, val_loss=val_loss, step=step)
            self.files.save_policy("best", model, step, ctx["split"], val_loss)


def train(
    run: RunConfig,
    bags: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Convenience wrapper: `Trainer(run, bags, out, resume).fit(stop_after)`."""
    return Trainer(run, bags, out, resume=resume, progress=progress).fit(stop_after)
