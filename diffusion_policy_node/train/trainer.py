"""The training loop: bags -> cache -> windows -> DDPM loss -> AdamW + EMA -> checkpoints.

One process, or several under `torchrun --nproc_per_node=N` (DDP: nccl on GPU, gloo on CPU;
every rank reads its own deterministic shard of each epoch, rank 0 writes checkpoints and logs).

Output folder `<out>/`:

    run.yaml         the resolved configuration (policy, data, train)
    cache/           the decoded data set (unless train.cache_dir points elsewhere)
    latest/ best/    policy checkpoints with the EMA weights (ready for the node; atomic writes)
    train_state/     resume state: raw weights, optimizer, LR schedule, EMA, step, RNG states
    metrics.jsonl    one JSON record per logging window and per validation
    loss.png         training and validation loss curves

Resuming is exact: the data order is a function of (seed, epoch) only, so the batches of step s
are known without replaying the earlier ones, and every RNG that the loss draws from is restored.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..data.cache import EpisodeCache, ensure_cache, normalizer_stats, open_cache
from ..data.sampler import WindowDataset
from ..policy.checkpoint import save_checkpoint
from ..policy.constants import ACTION, OBS_STATE
from ..policy.ema import EMAModel
from ..policy.modeling import DiffusionPolicy, build_policy
from .config import RunConfig, TrainConfig
from .plots import plot_loss_curves
from .state import (
    get_rng_state,
    load_train_state,
    optimizer_from_flat,
    optimizer_to_flat,
    save_train_state,
    set_rng_state,
)

__all__ = [
    "DistInfo",
    "StepBatchSampler",
    "TrainResult",
    "Trainer",
    "lr_lambda",
    "resolve_device",
    "split_episodes",
    "train",
    "tune_cpu_malloc",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- small helpers


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (torchrun) process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> DistInfo:
        """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (defaults: one process)."""
        return cls(
            rank=int(os.environ.get("RANK", 0)),
            world_size=int(os.environ.get("WORLD_SIZE", 1)),
            local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        )


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA when available else CPU; under torchrun each rank takes cuda:LOCAL_RANK."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "TrainConfig.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def tune_cpu_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of returning it to the OS (CPU training).

    Each step allocates the same large activation and gradient buffers; by default glibc serves
    them with fresh mmaps and unmaps them on free, so every step pays page faults for them
    (about 1 s of system time per step for the paper preset). Raising the mmap and trim
    thresholds makes the allocator reuse them. Same math, process-wide; RSS stays at its peak.
    Returns False where glibc's mallopt is unavailable (other libc, other OS).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        # Newer glibc caps the mmap threshold at 32 MiB (64-bit): try 1 GiB, then the cap.
        ok = any(libc.mallopt(m_mmap_threshold, size) == 1 for size in (1 << 30, 32 << 20))
        return bool(ok and libc.mallopt(m_trim_threshold, (1 << 31) - 1) == 1)
    except (OSError, AttributeError):
        return False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def split_episodes(n_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) episode indices: `val_fraction` of them (>= 1 when there are >= 2
    episodes and the fraction is > 0, always leaving one for training), chosen by `seed`."""
    everything = list(range(n_episodes))
    if n_episodes < 2 or val_fraction <= 0:
        return everything, []
    n_val = min(max(1, round(val_fraction * n_episodes)), n_episodes - 1)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n_episodes)
    val = sorted(int(i) for i in perm[:n_val])
    return [i for i in everything if i not in val], val


def window_episodes(dataset: WindowDataset) -> np.ndarray:
    """Episode index of every window of `dataset` (from its first buffer step)."""
    ends = dataset.cache.episode_ends
    return np.searchsorted(ends, dataset.indices[:, 0], side="right")


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


class StepBatchSampler:
    """The batches of steps `start_step .. stop_step-1` for one rank.

    Epoch e visits the windows in the order `default_rng([seed, e]).permutation(n)`, padded by
    wrapping to a multiple of `world_size` and dealt out round-robin (as DistributedSampler
    does); a rank's share is cut into `batches_per_epoch` batches (the remainder is dropped,
    unless the share is smaller than one batch). Step s is batch `s % batches_per_epoch` of
    epoch `s // batches_per_epoch`: a pure function of (seed, s), so a resumed run continues
    mid-epoch exactly where it stopped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        stop_step: int = 1,
    ) -> None:
        if n < 1:
            raise ValueError("StepBatchSampler: no windows to sample from")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.start_step, self.stop_step = start_step, stop_step
        self.per_rank = math.ceil(n / world_size)
        self.batches_per_epoch = max(1, self.per_rank // batch_size)

    def epoch_positions(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        padded = np.resize(perm, self.per_rank * self.world_size)
        return padded[self.rank :: self.world_size]

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch, batch within the epoch) of a step."""
        return divmod(step, self.batches_per_epoch)

    def batch(self, step: int) -> list[int]:
        epoch, b = self.locate(step)
        positions = self.epoch_positions(epoch)
        return positions[b * self.batch_size : (b + 1) * self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        cached_epoch, positions = -1, np.zeros(0, np.int64)
        for step in range(self.start_step, self.stop_step):
            epoch, b = self.locate(step)
            if epoch != cached_epoch:
                cached_epoch, positions = epoch, self.epoch_positions(epoch)
            yield positions[b * self.batch_size : (b + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step)


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
    def _prepare_out(self) -> None:
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
        p = self.run.policy
        dataset = WindowDataset(cache, p.n_obs_steps, p.horizon, p.n_action_steps)
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
        if self.tc.torch_threads:
            torch.set_num_threads(self.tc.torch_threads)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._prepare_out()
        cache, dataset, train_idx, val_idx, split = self._load_data()
        ctx, start_step, rng = self._training_state(cache, device, train_idx)
        stop = self._stop_step(start_step, stop_after)
        self._start_files(start_step)
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
            start_step, best, rng = self._restore(policy, optimizer, scheduler, ema, train_idx)
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
        loader = self._loader(dataset, train_idx, device, batch_sampler=sampler)
        ctx["sampler"] = sampler
        ctx["val_loader"] = (
            self._loader(dataset, val_idx, device, batch_size=tc.batch_size)
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
                    self._checkpoint(step, ctx, last_loss)
        except KeyboardInterrupt:
            if not self.dist.distributed and step > start_step:
                progress.message(f"interrupted: saving the state at step {step} for --resume")
                self._checkpoint(step, ctx, last_loss)
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

    def _loader(
        self,
        dataset: WindowDataset,
        indices: np.ndarray,
        device: torch.device,
        **kwargs: Any,
    ) -> DataLoader:
        workers = self.tc.num_workers
        if workers is None:  # auto: see TrainConfig
            workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))
        return DataLoader(
            Subset(dataset, indices.tolist()),
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # Own generator: creating an iterator must not draw from the global torch RNG.
            generator=torch.Generator().manual_seed(self.tc.seed),
            **kwargs,
        )

    # ----------------------------------------------------------------------------- files
    def _start_files(self, start_step: int) -> None:
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

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

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
            self._append_metrics(record)
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
        self._append_metrics({"step": step, "val_loss": val_loss, "time": time.time()})
        result.val_losses.append((step, val_loss))
        progress.message(f"step {step}: validation loss {val_loss:.4f} (EMA weights)")
        best = ctx["best"]
        if val_loss < best["score"]:
            best.update(score=val_loss, val_loss=val_loss, step=step)
            save_checkpoint(model, self.out / "best", self._meta(step, ctx, val_loss))

    def _meta(self, step: int, ctx: dict[str, Any], val_loss: float | None) -> dict[str, Any]:
        return {
            "step": step,
            "val_loss": val_loss,
            "weights": "ema",
            "data": self.run.data.to_dict(),
            "train": self.tc.to_dict(),
            "split": ctx["split"],
        }

    def _checkpoint(self, step: int, ctx: dict[str, Any], last_loss: float) -> None:
        rng = [get_rng_state()]
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if not self.dist.is_main:
            return
        policy, ema, best = ctx["policy"], ctx["ema"], ctx["best"]
        if ctx["val_loader"] is None and last_loss < best["score"]:
            # No validation episodes: "best" is the lowest training loss at a checkpoint.
            best.update(score=last_loss, step=step)
            save_checkpoint(ema.averaged_model, self.out / "best", self._meta(step, ctx, None))
        save_checkpoint(ema.averaged_model, self.out / "latest", self._meta(step, ctx, None))
        tensors = {f"model.{k}": v for k, v in policy.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.averaged_model.state_dict().items()})
        optim_tensors, optim_meta = optimizer_to_flat(ctx["optimizer"])
        tensors.update(optim_tensors)
        sampler = ctx["sampler"]
        epoch, batch_in_epoch = sampler.locate(step)
        sched = ctx["scheduler"].state_dict()
        sched.pop("lr_lambdas", None)
        score = best["score"]
        doc = {
            "step": step,
            "run": self.run.to_dict(),
            "optimizer": optim_meta,
            "scheduler": sched,
            "ema_step": ema.optimization_step,
            "best": {**best, "score": score if math.isfinite(score) else None},
            "split": ctx["split"],
            "data_order": {
                "epoch": epoch,
                "batch_in_epoch": batch_in_epoch,
                "batches_per_epoch": sampler.batches_per_epoch,
                "n_train_windows": ctx["n_train"],
                "batch_size": self.tc.batch_size,
                "world_size": self.dist.world_size,
                "seed": self.tc.seed,
            },
            "rng": rng,
        }
        save_train_state(self.out / "train_state", tensors, doc)
        try:
            plot_loss_curves(self.out / "metrics.jsonl", self.out / "loss.png")
        except Exception as exc:  # a figure must never stop training
            log.warning("could not draw %s: %s", self.out / "loss.png", exc)

    def _restore(
        self,
        policy: DiffusionPolicy,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        ema: EMAModel | None,
        train_idx: np.ndarray,
    ) -> tuple[int, dict[str, Any], dict[str, Any] | None]:
        folder = self.out / "train_state"
        tensors, doc = load_train_state(folder)
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
        if (order["n_train_windows"], order["world_size"], order["batch_size"]) != (
            len(train_idx),
            self.dist.world_size,
            self.tc.batch_size,
        ):
            log.warning(
                "--resume: data order differs (windows/world size/batch size %s -> %s); the "
                "continuation is not exact",
                (order["n_train_windows"], order["world_size"], order["batch_size"]),
                (len(train_idx), self.dist.world_size, self.tc.batch_size),
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
