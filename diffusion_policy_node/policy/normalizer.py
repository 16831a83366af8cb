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
