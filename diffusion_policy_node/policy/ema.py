"""Exponential moving average of weights, with Chi et al.'s warm-up (power 0.75, max 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMAModel:
    """Keeps `averaged_model`, an EMA copy of a model; inference uses it (docs/design.md#the-math).

    decay(step) = clamp(1 − (1 + step / inv_gamma) ** −power, min_decay, max_decay), 0 for the
    first `update_after_step` steps. Buffers (e.g. normalizer stats) are copied, not averaged.
    """

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        max_decay: float = 0.9999,
        min_decay: float = 0.0,
        inv_gamma: float = 1.0,
        update_after_step: int = 0,
    ) -> None:
        if not 0.0 <= min_decay <= max_decay < 1.0:
            raise ValueError(
                f"EMA decays must satisfy 0 <= min <= max < 1, got {min_decay}, {max_decay}"
            )
        self.averaged_model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power = power
        self.max_decay = max_decay
        self.min_decay = min_decay
        self.inv_gamma = inv_gamma
        self.update_after_step = update_after_step
        self.optimization_step = 0

    def get_decay(self, optimization_step: int) -> float:
        step = max(0, optimization_step - self.update_after_step - 1)
        if step <= 0:
            return 0.0
        value = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return max(self.min_decay, min(value, self.max_decay))

    @torch.no_grad()
    def step(self, model: nn.Module) -> float:
        """Fold the current weights of `model` into the average; returns the decay used."""
        decay = self.get_decay(self.optimization_step)
        for ema_p, p in zip(self.averaged_model.parameters(), model.parameters(), strict=True):
            if p.requires_grad:
                ema_p.mul_(decay).add_(p.detach().to(ema_p.dtype), alpha=1.0 - decay)
            else:
                ema_p.copy_(p)
        for ema_b, b in zip(self.averaged_model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
        self.optimization_step += 1
        return decay

    def state_dict(self) -> dict:
        return {
            "optimization_step": self.optimization_step,
            "averaged_model": self.averaged_model.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimization_step = int(state["optimization_step"])
        self.averaged_model.load_state_dict(state["averaged_model"])
