"""The motion a simulated controller executes, recorded for the smoothness metrics.

`MotionRecorder` samples the executed joint target once per control step (`dt`) and marks the
samples at which a new trajectory took over (a chunk boundary). The metrics computed from a
recording (acceleration, jerk at and between chunk boundaries) are evaluation and live in
`eval/smoothness.py`. The simulation thread records while other threads (a `~/report` service)
read, so every method holds the recorder's lock.
"""

from __future__ import annotations

import math
import threading

import numpy as np


class MotionRecorder:
    """Executed targets sampled once per control step, with chunk-boundary marks."""

    def __init__(self, dt: float) -> None:
        if not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt must be a finite number > 0 s, got {dt!r}")
        self.dt = float(dt)
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._q: list[np.ndarray] = []
            self._boundary: list[bool] = []
            self._new_chunk = False

    def new_chunk(self) -> None:
        """A new trajectory replaced the one being executed (marks the next sample)."""
        with self._lock:
            self._new_chunk = True

    def record(self, q: np.ndarray) -> None:
        """The target executed at this control step (D,)."""
        sample = np.array(q, dtype=np.float64)
        with self._lock:
            self._q.append(sample)
            self._boundary.append(self._new_chunk)
            self._new_chunk = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._q)

    def samples(self) -> tuple[np.ndarray, np.ndarray]:
        """A copy of the recording: targets (N, D) and boundary marks (N,), True where a new
        trajectory took over at that sample; (0, 1) and (0,) when nothing was recorded."""
        with self._lock:
            if not self._q:
                return np.zeros((0, 1)), np.zeros(0, bool)
            return np.stack(self._q), np.array(self._boundary, dtype=bool)
