"""Safety filter applied to every command: joint limits, max velocity per step, NaN/inf guard.

The node never publishes a NaN, an out-of-limit command or a jump faster than `max_velocity`
(conventions.md). `SafetyFilter.filter` returns None for a non-finite command so the caller holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True, eq=False)
class SafetyLimits:
    """Per-joint position limits `lower < upper` (rad or m) and `max_velocity > 0` (units/s)."""

    lower: np.ndarray
    upper: np.ndarray
    max_velocity: np.ndarray

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("lower", "upper", "max_velocity"):
            value = np.array(getattr(self, name), dtype=np.float64)
            if value.ndim != 1 or value.size == 0:
                raise ValueError(
                    f"SafetyLimits.{name} must be a 1-D array (D,), got {value.shape}"
                )
            if not np.all(np.isfinite(value)):
                raise ValueError(f"SafetyLimits.{name} must be finite, got {value.tolist()}")
            value.setflags(write=False)
            arrays[name] = value
        dims = {name: a.shape[0] for name, a in arrays.items()}
        if len(set(dims.values())) != 1:
            raise ValueError(f"SafetyLimits: lower/upper/max_velocity lengths differ: {dims}")
        bad = np.nonzero(arrays["lower"] >= arrays["upper"])[0]
        if bad.size:
            raise ValueError(
                f"SafetyLimits: lower must be < upper, violated at joint index {bad.tolist()} "
                f"(lower={arrays['lower'][bad].tolist()}, upper={arrays['upper'][bad].tolist()})"
            )
        bad = np.nonzero(arrays["max_velocity"] <= 0)[0]
        if bad.size:
            raise ValueError(
                f"SafetyLimits.max_velocity must be > 0, violated at joint index {bad.tolist()}"
            )
        for name, value in arrays.items():
            object.__setattr__(self, name, value)

    @property
    def dim(self) -> int:
        return int(self.lower.shape[0])


def limits_from_action_range(
    action_min: ArrayLike,
    action_max: ArrayLike,
    margin_frac: float = 0.1,
    max_velocity: float | ArrayLike | None = None,
    min_margin: float = 1e-3,
) -> SafetyLimits:
    """Default limits from the demonstrated action range (the normalizer's min/max).

    Each joint's range is widened by `max(margin_frac * (max - min), min_margin)` on both sides,
    so a joint that never moved still gets a valid (small) range. Without `max_velocity` the arm
    may cross the widened range of a joint in one second (`upper - lower` per second): a
    conservative default for arms whose real velocity limits are not configured.
    """
    lo = np.asarray(action_min, dtype=np.float64)
    hi = np.asarray(action_max, dtype=np.float64)
    if lo.shape != hi.shape or lo.ndim != 1:
        raise ValueError(f"action_min/action_max must be (D,) arrays, got {lo.shape}, {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError("action_min/action_max must be finite")
    if np.any(hi < lo):
        raise ValueError(
            f"action_max < action_min at joint index {np.nonzero(hi < lo)[0].tolist()}"
        )
    if not (math.isfinite(margin_frac) and margin_frac >= 0):
        raise ValueError(f"margin_frac must be >= 0, got {margin_frac!r}")
    if not (math.isfinite(min_margin) and min_margin > 0):
        raise ValueError(f"min_margin must be > 0, got {min_margin!r}")
    margin = np.maximum(margin_frac * (hi - lo), min_margin)
    lower, upper = lo - margin, hi + margin
    if max_velocity is None:
        velocity = upper - lower
    else:
        velocity = np.broadcast_to(np.asarray(max_velocity, dtype=np.float64), lo.shape).copy()
    return SafetyLimits(lower, upper, velocity)


class SafetyFilter:
    """Clamp commands to `limits` and to `max_velocity * dt` per control step.

    Counters: `nonfinite_count` (rejected commands/trajectories), `position_clamp_count` and
    `velocity_clamp_count` (commands changed by each clamp), and per joint `position_clamps` /
    `velocity_clamps` (D,) (commands in which that joint was changed), for diagnostics.
    """

    def __init__(self, limits: SafetyLimits, dt: float) -> None:
        if not isinstance(limits, SafetyLimits):
            raise ValueError(f"limits must be a SafetyLimits, got {type(limits).__name__}")
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0 s, got {dt!r}")
        self.limits = limits
        self.dt = float(dt)
        self.max_step = limits.max_velocity * self.dt
        self.nonfinite_count = 0
        self.position_clamp_count = 0
        self.velocity_clamp_count = 0
        self.position_clamps = np.zeros(limits.dim, np.int64)
        self.velocity_clamps = np.zeros(limits.dim, np.int64)

    def _check(self, x: ArrayLike, what: str) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.limits.dim,):
            raise ValueError(f"{what} must have shape ({self.limits.dim},), got {x.shape}")
        return x

    def _step(self, cmd: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        out = np.clip(cmd, self.limits.lower, self.limits.upper)
        changed = out != cmd
        if changed.any():
            self.position_clamp_count += 1
            self.position_clamps += changed
        if previous is not None:
            limited = np.clip(out, previous - self.max_step, previous + self.max_step)
            changed = limited != out
            if changed.any():
                self.velocity_clamp_count += 1
                self.velocity_clamps += changed
            out = limited
        return out

    def filter(self, cmd: ArrayLike, previous: ArrayLike | None) -> np.ndarray | None:
        """The safe version of `cmd` (D,), or None (caller holds) if it holds a NaN/inf.

        Position limits are applied first, then the step from `previous` is limited to
        `max_velocity * dt`. The velocity limit wins when both cannot hold: if `previous` lies
        outside the limits (e.g. the measured start state), the command moves towards the limits
        at most `max_velocity * dt` per step instead of jumping; from an in-limit `previous` the
        result is always within limits.
        """
        cmd = self._check(cmd, "cmd")
        if not np.all(np.isfinite(cmd)):
            self.nonfinite_count += 1
            return None
        prev = None if previous is None else self._check(previous, "previous")
        if prev is not None and not np.all(np.isfinite(prev)):
            raise ValueError(f"previous command must be finite, got {prev.tolist()}")
        return self._step(cmd, prev)

    def filter_trajectory(self, actions: ArrayLike, start: ArrayLike) -> np.ndarray | None:
        """Filter a chunk (H, D) whose first action is one `dt` after the command `start` (D,),
        applying the velocity clamp cumulatively; None if any value is NaN/inf."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != self.limits.dim:
            raise ValueError(
                f"actions must have shape (H, {self.limits.dim}), got {actions.shape}"
            )
        prev = self._check(start, "start")
        if not np.all(np.isfinite(prev)):
            raise ValueError(f"start must be finite, got {prev.tolist()}")
        if not np.all(np.isfinite(actions)):
            self.nonfinite_count += 1
            return None
        out = np.empty_like(actions)
        for i in range(actions.shape[0]):
            prev = out[i] = self._step(actions[i], prev)
        return out
