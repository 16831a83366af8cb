"""Smoothness of the motion a controller executes, at chunk boundaries and within chunks.

The complaint about diffusion policies on real arms is motion at chunk boundaries: the arm rolls
back or jerks when a new chunk replaces the old one. The simulation's `MotionRecorder`
(`sim/motion.py`) samples the executed joint target once per control step (`dt`) and marks the
samples at which a new trajectory took over; `smoothness` turns that into finite-difference
acceleration and jerk

    a_k = (q_{k+2} - 2 q_{k+1} + q_k) / dt²
    j_k = (q_{k+3} - 3 q_{k+2} + 3 q_{k+1} - q_k) / dt³

(per sample the largest joint magnitude), and splits the jerk samples into those whose stencil
spans a chunk boundary (a sample k+1..k+3 is the first of a new trajectory) and the rest.
"""

from __future__ import annotations

import math

import numpy as np

from diffusion_policy_node.sim.motion import MotionRecorder

# |jerk| below this (rad/s³) is float rounding of a motion with none.
JERK_EPS = 1e-6


# The keys of `smoothness` that an episode record carries (dp-eval's driver, eval/rollout.py).
MOTION_KEYS = (
    "chunk_boundaries",
    "max_acc",
    "jerk_boundary_mean",
    "jerk_within_mean",
    "jerk_ratio",
)


def smoothness(q: np.ndarray, boundary: np.ndarray, dt: float) -> dict[str, float | int | None]:
    """Metrics of executed targets `q` (N, D) sampled every `dt`, `boundary` (N,) True where a
    new trajectory took over at that sample. Means are of the per-sample max-joint |jerk|;
    `jerk_ratio` = boundary mean / within mean (1: boundaries are as smooth as the rest).
    None where there are too few samples."""
    q = np.asarray(q, dtype=np.float64)
    boundary = np.asarray(boundary, dtype=bool)
    if q.ndim != 2 or boundary.shape != (q.shape[0],):
        raise ValueError(f"q must be (N, D) and boundary (N,), got {q.shape}, {boundary.shape}")
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0 s, got {dt!r}")
    out: dict[str, float | int | None] = {
        "motion_samples": int(q.shape[0]),
        "chunk_boundaries": int(boundary[1:].sum()) if q.shape[0] else 0,
        "max_acc": None,
        "jerk_boundary_mean": None,
        "jerk_within_mean": None,
        "jerk_ratio": None,
    }
    if q.shape[0] >= 3:
        acc = np.abs(np.diff(q, n=2, axis=0)).max(axis=1) / dt**2
        out["max_acc"] = float(acc.max())
    if q.shape[0] < 4:
        return out
    jerk = np.abs(np.diff(q, n=3, axis=0)).max(axis=1) / dt**3  # stencil k .. k+3
    spans = boundary[1:-2] | boundary[2:-1] | boundary[3:]
    if spans.any():
        out["jerk_boundary_mean"] = float(jerk[spans].mean())
    if (~spans).any():
        out["jerk_within_mean"] = float(jerk[~spans].mean())
    b, w = out["jerk_boundary_mean"], out["jerk_within_mean"]
    if b is not None and w is not None:
        # A perfectly smooth within-chunk motion (w = 0, up to rounding) leaves it undefined.
        out["jerk_ratio"] = float(b / w) if w > JERK_EPS else None
    return out


def recorded_smoothness(recorder: MotionRecorder) -> dict[str, float | int | None]:
    """`smoothness` of what `recorder` holds (all None but the counts when it is nearly empty)."""
    q, boundary = recorder.samples()
    return smoothness(q, boundary, recorder.dt)
