"""Which windows a run trains on, and in which order: episode split, step batches, loaders.

The order is a function of (seed, step) only, so a resumed run knows the batches of step s
without replaying the earlier ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from ..data.sampler import WindowDataset

__all__ = ["StepBatchSampler", "make_loader", "split_episodes", "window_episodes"]


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


def make_loader(
    dataset: WindowDataset,
    indices: np.ndarray,
    device: torch.device,
    num_workers: int | None,
    seed: int,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader over the windows `indices` of `dataset`; `num_workers=None` picks
    0 on CPU, else up to 8 (see TrainConfig.num_workers)."""
    workers = num_workers
    if workers is None:
        workers = 0 if device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))
    return DataLoader(
        Subset(dataset, indices.tolist()),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Own generator: creating an iterator must not draw from the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
        **kwargs,
    )
