"""Min-max normalizer to [-1, 1] for state and action, stored with the model.

See docs/design.md#the-math."""

from __future__ import annotations

import torch
from torch import nn

RANGE_EPS = 1e-4


class MinMaxNormalizer(nn.Module):
    """x ↦ 2 (x − min) / (max − min) − 1 per dimension.

    A dimension whose range is below RANGE_EPS (a joint that never moved in the data) is only
    shifted (scale 1, min ↦ −1) instead of being blown up by a near-zero range, as Chi et al. do.
    Stats live in buffers so they travel in the safetensors file with the weights.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("min", -torch.ones(dim))
        self.register_buffer("max", torch.ones(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.register_buffer("offset", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, data_min: torch.Tensor, data_max: torch.Tensor) -> None:
        data_min = torch.as_tensor(data_min, dtype=torch.float32).reshape(-1)
        data_max = torch.as_tensor(data_max, dtype=torch.float32).reshape(-1)
        if data_min.shape != self.min.shape or data_max.shape != self.max.shape:
            raise ValueError(
                f"normalizer stats have shape {tuple(data_min.shape)}/{tuple(data_max.shape)}, "
                f"expected ({self.min.numel()},)"
            )
        if not (torch.isfinite(data_min).all() and torch.isfinite(data_max).all()):
            raise ValueError("normalizer stats contain NaN or inf")
        if (data_max < data_min).any():
            raise ValueError("normalizer stats: max < min in some dimension")
        span = data_max - data_min
        degenerate = span < RANGE_EPS
        scale = torch.where(degenerate, torch.ones_like(span), 2.0 / span.clamp_min(RANGE_EPS))
        self.min.copy_(data_min)
        self.max.copy_(data_max)
        self.scale.copy_(scale)
        self.offset.copy_(-1.0 - data_min * scale)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        """Back to robot units. A dimension that never moved in the data (range below
        RANGE_EPS) comes back as its recorded value whatever `y` holds: nothing was learnt
        about moving it, so the model's output there is noise (seen: a UR5e wrist joint held
        constant by every demonstration, commanded over a 2 rad band, the arm lost)."""
        x = (y - self.offset) / self.scale
        constant = (self.max - self.min) < RANGE_EPS
        if bool(constant.any()):
            x = torch.where(constant, ((self.min + self.max) / 2).to(x.dtype), x)
        return x


# Modes of `StatsNormalizer` (LeRobot's NormalizationMode, lower case).
NORM_MODES = ("identity", "mean_std", "min_max")
STATS_EPS = 1e-8


class StatsNormalizer(nn.Module):
    """Per-feature normalization with dataset statistics, as LeRobot's DP normalizes:

        mean_std   x ↦ (x − mean) / (std + 1e-8),        back: y·std + mean
        min_max    x ↦ 2 (x − min) / (max − min) − 1,     back: (y + 1)/2 · (max − min) + min
                   (a zero range becomes 1e-8, as LeRobot's processor does)
        identity   x ↦ x

    Buffers `min`, `max`, `mean`, `std` of `shape` are always present (the ones the mode does not
    use travel along: the runtime reads the action range from `min`/`max` for its limits).
    `shape` is (D,) for state and action, (N, 3, 1, 1) for the images of N cameras.
    """

    def __init__(self, shape: tuple[int, ...], mode: str) -> None:
        super().__init__()
        if mode not in NORM_MODES:
            raise ValueError(f"normalization mode {mode!r}: expected one of {NORM_MODES}")
        self.mode = mode
        self.register_buffer("min", -torch.ones(shape))
        self.register_buffer("max", torch.ones(shape))
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    @torch.no_grad()
    def set_stats(self, **stats: torch.Tensor) -> None:
        """Copy the named statistics (any of min, max, mean, std) in, checking shape and
        finiteness; ValueError naming the statistic."""
        for name, value in stats.items():
            if name not in ("min", "max", "mean", "std"):
                raise ValueError(f"unknown normalizer statistic {name!r}")
            buffer = getattr(self, name)
            value = torch.as_tensor(value, dtype=torch.float32)
            if value.numel() != buffer.numel():
                raise ValueError(
                    f"normalizer statistic {name!r} has {value.numel()} values, expected "
                    f"shape {tuple(buffer.shape)}"
                )
            if not torch.isfinite(value).all():
                raise ValueError(f"normalizer statistic {name!r} contains NaN or inf")
            buffer.copy_(value.reshape(buffer.shape))

    def fit(self, data_min: torch.Tensor, data_max: torch.Tensor) -> None:
        """Set the min/max statistics (the training data's range)."""
        self.set_stats(min=data_min, max=data_max)

    def _range(self, index: int | None = None) -> torch.Tensor:
        lo, hi = (self.min, self.max) if index is None else (self.min[index], self.max[index])
        span = hi - lo
        return torch.where(span == 0, torch.full_like(span, STATS_EPS), span)

    def normalize(self, x: torch.Tensor, index: int | None = None) -> torch.Tensor:
        """`index`: use the statistics of that first-axis entry only (one camera's frame)."""
        if self.mode == "mean_std":
            mean, std = (
                (self.mean, self.std) if index is None else (self.mean[index], self.std[index])
            )
            return (x - mean) / (std + STATS_EPS)
        if self.mode == "min_max":
            lo = self.min if index is None else self.min[index]
            return 2 * (x - lo) / self._range(index) - 1
        return x

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean_std":
            return y * self.std + self.mean
        if self.mode == "min_max":
            return (y + 1) / 2 * self._range() + self.min
        return y
