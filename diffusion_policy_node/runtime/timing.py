"""Control-loop timing statistics (ROS-free): lateness of each tick against its ideal grid."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np


class TickTiming:
    """Lateness of the control loop against its ideal grid (node clock): when each tick
    started, when a command was published (the moment `publish` returned; stream mode publishes
    every tick, chunk mode on the ticks where the schedule changed) and when the tick's work
    (observation sampling, starting inference) was done. `missed` counts grid points skipped
    because a tick overran (the loop then continues on the grid, it never bunches ticks)."""

    def __init__(self, dt: float, window: int = 4000) -> None:
        self.dt = float(dt)
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Clear the statistics."""
        self.ticks = 0
        self.missed = 0
        self.tick_lateness: deque[float] = deque(maxlen=self.window)
        self.publish_lateness: deque[float] = deque(maxlen=self.window)
        self.done_lateness: deque[float] = deque(maxlen=self.window)

    def tick(self, ideal: float, t_start: float, skipped: int = 0) -> None:
        """A tick due at `ideal` started at `t_start`, after `skipped` missed grid points."""
        self.ticks += 1
        self.missed += skipped
        self.tick_lateness.append(t_start - ideal)

    def published(self, ideal: float, t: float) -> None:
        """The tick due at `ideal` published a command at `t`."""
        self.publish_lateness.append(t - ideal)

    def done(self, ideal: float, t: float) -> None:
        """The tick due at `ideal` finished its work at `t`."""
        self.done_lateness.append(t - ideal)

    @staticmethod
    def _pct(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
        if not values:
            return None, None, None
        a = np.asarray(values) * 1e3
        p50, p99 = np.percentile(a, [50, 99])
        return float(p50), float(p99), float(a.max())

    def snapshot(self) -> tuple[list[float], list[float], list[float], int, int]:
        """Cheap copy of the raw figures (taken under the node's lock; see `summarize`)."""
        return (
            list(self.publish_lateness),
            list(self.tick_lateness),
            list(self.done_lateness),
            self.ticks,
            self.missed,
        )

    @classmethod
    def summarize(
        cls, snapshot: tuple[list[float], list[float], list[float], int, int]
    ) -> dict[str, float | int | None]:
        publish, start, done, ticks, missed = snapshot
        p50, p99, mx = cls._pct(publish)
        s50, s99, smx = cls._pct(start)
        d50, d99, dmx = cls._pct(done)
        return {
            "jitter_p50_ms": p50,
            "jitter_p99_ms": p99,
            "jitter_max_ms": mx,
            "published_ticks": len(publish),
            "tick_start_p50_ms": s50,
            "tick_start_p99_ms": s99,
            "tick_start_max_ms": smx,
            "tick_done_p50_ms": d50,
            "tick_done_p99_ms": d99,
            "tick_done_max_ms": dmx,
            "timed_ticks": ticks,
            "missed_ticks": missed,
        }
