"""What a training run costs on this machine: threads, batch and measured steps/s (dp-config).

`machine_plan` picks the torch thread count and batch for the machine: on a CPU, one thread per
two cores (one thread on a 2-core machine: two threads there collapse as soon as anything else
runs beside the training); batch 64 (Chi et al.'s) on both. `measure_steps_per_s` times a few
optimiser steps of the real policy on synthetic inputs of the configured shapes (what a step
costs does not depend on the pixel values), so the steps written for a time budget are this
machine's, not a guess.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from ..policy.config import PolicyConfig
from ..policy.constants import ACTION, ACTION_IS_PAD, OBS_IMAGES, OBS_STATE
from ..policy.modeling import build_policy

__all__ = [
    "MIN_USEFUL_STEPS",
    "MachinePlan",
    "auto_preset",
    "machine_plan",
    "measure_steps_per_s",
    "steps_for_budget",
]

CPU_BATCH = 64
CUDA_BATCH = 64
# Fewer optimiser steps than this rarely make a usable policy (the bundled checkpoints: 10000+).
MIN_USEFUL_STEPS = 3000


@dataclass(frozen=True)
class MachinePlan:
    device: str  # "cpu" or "cuda"
    cores: int
    torch_threads: int
    batch_size: int

    def describe(self) -> str:
        if self.device == "cuda":
            return f"CUDA, batch {self.batch_size}"
        return (
            f"{self.cores} CPU core(s), {self.torch_threads} torch thread(s), "
            f"batch {self.batch_size}"
        )


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def machine_plan(cores: int | None = None, cuda: bool | None = None) -> MachinePlan:
    """Threads and batch for this machine (see the module doc)."""
    cores = usable_cores() if cores is None else int(cores)
    cuda = torch.cuda.is_available() if cuda is None else cuda
    threads = max(1, min(cores // 2, 8))
    if cuda:
        return MachinePlan("cuda", cores, threads, CUDA_BATCH)
    return MachinePlan("cpu", cores, threads, CPU_BATCH)


def auto_preset(plan: MachinePlan) -> str:
    """The model size that trains usefully in about half an hour here: `small` on CUDA, `demo`
    on a CPU (the bundled checkpoints' size; `small`'s full-width ResNet-18 runs about ten times
    slower per step on a CPU)."""
    return "small" if plan.device == "cuda" else "demo"


def measure_steps_per_s(
    config: PolicyConfig, plan: MachinePlan, n_steps: int = 3, n_cameras: int | None = None
) -> float:
    """Optimiser steps per second of `config` at `plan`'s batch and threads (median of
    `n_steps` timed steps after one warm-up step)."""
    previous = torch.get_num_threads()
    device = torch.device(plan.device)
    torch.set_num_threads(plan.torch_threads)
    try:
        torch.manual_seed(0)
        policy = build_policy(config).to(device)
        d_s, d_a = config.state_dim, config.action_dim
        policy.set_normalizer_stats(
            -torch.ones(d_s), torch.ones(d_s), -torch.ones(d_a), torch.ones(d_a)
        )
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        b, t_obs = plan.batch_size, config.n_obs_steps
        cameras = n_cameras or config.n_cameras
        batch = {
            OBS_IMAGES: torch.randint(
                0, 256, (b, t_obs, cameras, 3, *config.image_size), dtype=torch.uint8
            ),
            OBS_STATE: torch.rand(b, t_obs, d_s) * 2 - 1,
            ACTION: torch.rand(b, config.horizon, d_a) * 2 - 1,
            ACTION_IS_PAD: torch.zeros(b, config.horizon, dtype=torch.bool),
        }
        batch = {k: v.to(device) for k, v in batch.items()}
        times = []
        for i in range(n_steps + 1):
            start = time.perf_counter()
            loss = policy.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
        return 1.0 / sorted(times)[len(times) // 2]
    finally:
        torch.set_num_threads(previous)


def steps_for_budget(steps_per_s: float, minutes: float) -> int:
    """Optimiser steps that fit `minutes` at `steps_per_s`: a multiple of 100, at least 500."""
    if not steps_per_s > 0 or not minutes > 0:
        raise ValueError(f"steps_per_s={steps_per_s} and minutes={minutes} must be > 0")
    return max(500, int(steps_per_s * minutes * 60) // 100 * 100)
