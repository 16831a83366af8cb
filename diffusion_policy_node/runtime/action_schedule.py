"""Action schedule: timestamped actions on a fixed `dt` grid, merged chunk by chunk.

A chunk predicted from the observation at tick time `t_k` gives action `i` the target time
`t0 + i*dt` (docs/design.md#timing-model). On arrival, actions whose time has strictly passed
are dropped and the rest are merged:

- `replace`: the newest chunk wins from its first kept action on; older actions after that time
  (including any beyond the new chunk's end) are discarded.
- `ensemble`: temporal ensembling (Zhao et al. 2023, ACT): every target time keeps the predictions
  of all chunks that covered it, and the command is their weighted mean with
  `w_i = exp(-m * i)`, `i = 0` the oldest prediction (with `m > 0` older predictions weigh more,
  which smooths; `m = 0` is a plain mean).

Target times live on a grid anchored at the first chunk's `t0` (re-anchored when the schedule has
fully passed or is cleared); later chunks are snapped to the nearest grid point, so float jitter in
tick times never creates two slots for one tick. Time is float seconds from an injected clock.
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("replace", "ensemble")


class ActionSchedule:
    """Future actions keyed by grid index; `at(t)` for stream mode, `remaining(t)` for chunk mode.

    `version` changes whenever the scheduled content changes (a merge that kept an action, or
    `clear()`), so the node knows when to publish a new trajectory. `dry_count` counts the ticks
    at which no action was scheduled and the last command was held.
    """

    def __init__(
        self,
        dt: float,
        mode: str = "replace",
        ensemble_m: float = 0.1,
        time_eps: float | None = None,
    ) -> None:
        """`time_eps` (default `0.01*dt`) is the tolerance for "at the same time" comparisons."""
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0 s, got {dt!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not (math.isfinite(ensemble_m) and ensemble_m >= 0):
            raise ValueError(f"ensemble_m must be a finite number >= 0, got {ensemble_m!r}")
        if time_eps is None:
            time_eps = 0.01 * dt
        if not (math.isfinite(time_eps) and 0 <= time_eps < 0.5 * dt):
            raise ValueError(f"time_eps must be in [0, dt/2), got {time_eps!r} (dt={dt})")
        self.dt = float(dt)
        self.mode = mode
        self.ensemble_m = float(ensemble_m)
        self.time_eps = float(time_eps)
        self.version = 0
        self.dry_count = 0
        self._dim: int | None = None
        self._anchor: float | None = None
        self._values: dict[int, np.ndarray] = {}
        # ensemble: grid index -> predictions for that slot, oldest first
        self._predictions: dict[int, list[np.ndarray]] = {}
        self._last_command: np.ndarray | None = None

    # ------------------------------------------------------------------------------ helpers
    def _time(self, k: int) -> float:
        return self._anchor + k * self.dt  # type: ignore[operator]

    def _keys(self) -> list[int]:
        return sorted(self._values)

    def _current_key(self, t: float) -> int | None:
        """Grid index of the latest scheduled action at or before `t` (within `time_eps`)."""
        best = None
        for k in self._values:
            if self._time(k) <= t + self.time_eps and (best is None or k > best):
                best = k
        return best

    def _prune(self, t: float) -> None:
        """Forget actions older than the current one at `t`: they can never be commanded again."""
        cur = self._current_key(t)
        if cur is None:
            return
        for k in [k for k in self._values if k < cur]:
            del self._values[k]
            self._predictions.pop(k, None)

    def _ensemble_value(self, predictions: list[np.ndarray]) -> np.ndarray:
        weights = np.exp(-self.ensemble_m * np.arange(len(predictions)))
        return np.tensordot(weights, np.stack(predictions), axes=1) / weights.sum()

    # ------------------------------------------------------------------------------ API
    @property
    def action_dim(self) -> int | None:
        return self._dim

    @property
    def last_command(self) -> np.ndarray | None:
        """The last action returned by `at()` (what a dry schedule holds)."""
        return None if self._last_command is None else self._last_command.copy()

    def __len__(self) -> int:
        return len(self._values)

    def merge(self, chunk: np.ndarray, t0: float, now: float) -> int:
        """Merge `chunk` (H, D) whose action `i` targets `t0 + i*dt`; returns how many actions
        were kept (those at or after `now`, within `time_eps`)."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] < 1:
            raise ValueError(f"chunk must have shape (H, D) with H, D >= 1, got {chunk.shape}")
        if self._dim is not None and chunk.shape[1] != self._dim:
            raise ValueError(
                f"chunk action_dim {chunk.shape[1]} differs from the schedule's {self._dim}"
            )
        if not (math.isfinite(t0) and math.isfinite(now)):
            raise ValueError(f"t0 and now must be finite, got t0={t0!r}, now={now!r}")
        end = self.horizon_end()
        if end is None or end < now - self.time_eps:
            # Nothing scheduled can overlap the new chunk: start a fresh grid at its t0.
            self._values.clear()
            self._predictions.clear()
            self._anchor = float(t0)
        k0 = round((t0 - self._anchor) / self.dt)  # type: ignore[operator]
        keys = [k0 + i for i in range(chunk.shape[0])]
        kept = [i for i, k in enumerate(keys) if self._time(k) >= now - self.time_eps]
        if not kept:
            return 0
        self._dim = chunk.shape[1]
        first = keys[kept[0]]
        if self.mode == "replace":
            for k in [k for k in self._values if k >= first]:
                del self._values[k]
            for i in kept:
                self._values[keys[i]] = chunk[i].copy()
        else:
            for i in kept:
                preds = self._predictions.setdefault(keys[i], [])
                preds.append(chunk[i].copy())
                self._values[keys[i]] = self._ensemble_value(preds)
        self._prune(now)
        self.version += 1
        return len(kept)

    def is_dry(self, t: float) -> bool:
        """True when no action is scheduled for the tick at `t` (none at or within one `dt`
        before it)."""
        cur = self._current_key(t)
        return cur is None or t >= self._time(cur) + self.dt - self.time_eps

    def at(self, t: float) -> np.ndarray | None:
        """Stream mode: the action scheduled for the tick at (or just before) `t`.

        When the schedule has run dry the last command is held and `dry_count` incremented;
        before any command exists the result is None.
        """
        self._prune(t)
        if self.is_dry(t):
            cur = self._current_key(t)
            if self._last_command is None and cur is None:
                return None
            self.dry_count += 1
            if self._last_command is None:
                self._last_command = self._values[cur].copy()  # type: ignore[index]
            return self._last_command.copy()
        value = self._values[self._current_key(t)]  # type: ignore[index]
        self._last_command = value.copy()
        return value.copy()

    def remaining(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Chunk mode: (times (K,), actions (K, D)) of every scheduled action at or after `t`
        (within `time_eps`), times strictly increasing. Empty arrays when none."""
        keys = [k for k in self._keys() if self._time(k) >= t - self.time_eps]
        dim = self._dim or 0
        if not keys:
            return np.zeros(0), np.zeros((0, dim))
        times = np.array([self._time(k) for k in keys])
        return times, np.stack([self._values[k] for k in keys])

    def horizon_end(self) -> float | None:
        """Time of the last scheduled action (None when nothing is scheduled)."""
        if not self._values:
            return None
        return self._time(max(self._values))

    def clear(self) -> None:
        """Drop every scheduled action and the held command (stop / reset)."""
        if self._values or self._last_command is not None:
            self.version += 1
        self._values.clear()
        self._predictions.clear()
        self._anchor = None
        self._last_command = None
