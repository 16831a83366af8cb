"""Where a training process runs: its place in a torchrun group, its device, allocator, seeds."""

from __future__ import annotations

import ctypes
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DistInfo", "resolve_device", "seed_everything", "tune_cpu_malloc"]


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
    """Seed Python's `random`, numpy's global RNG and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
