"""Smoothness metrics of executed targets: golden finite differences, boundary split."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_policy_node.eval.smoothness import recorded_smoothness, smoothness
from diffusion_policy_node.sim.motion import MotionRecorder

DT = 0.1


def test_a_cubic_has_constant_jerk_and_linear_acceleration() -> None:
    t = np.arange(10) * DT
    q = np.stack([t**3, -2 * t**3], axis=1)  # the second joint is the largest: x2
    m = smoothness(q, np.zeros(10, bool), DT)
    assert m["jerk_within_mean"] == pytest.approx(12.0)  # 6 * 2
    assert m["max_acc"] == pytest.approx(2 * 6 * 8 * DT)  # a_k = 6 (k+1) dt, k = 7
    assert m["jerk_boundary_mean"] is None and m["jerk_ratio"] is None
    assert m["chunk_boundaries"] == 0 and m["motion_samples"] == 10


def test_a_rollback_at_a_chunk_boundary_is_counted_at_the_boundary_only() -> None:
    q = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.3, 0.4, 0.5, 0.6, 0.7])[:, None]
    boundary = np.zeros(10, bool)
    boundary[5] = True  # the new chunk starts one step behind: the arm rolls back
    m = smoothness(q, boundary, DT)
    # stencils k = 2, 3, 4 span sample 5: |third differences| 0.2, 0.4, 0.2 over dt^3
    assert m["jerk_boundary_mean"] == pytest.approx((200 + 400 + 200) / 3)
    assert m["jerk_within_mean"] == pytest.approx(0.0, abs=1e-9)
    assert m["jerk_ratio"] is None  # undefined over a perfectly smooth rest
    assert m["chunk_boundaries"] == 1
    # with some motion within, the ratio is boundary / within
    wiggle = q + np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0.001])[:, None]
    m = smoothness(wiggle, boundary, DT)
    assert m["jerk_ratio"] == pytest.approx(m["jerk_boundary_mean"] / m["jerk_within_mean"])
    assert m["jerk_ratio"] > 100


def test_recorder_marks_the_sample_after_a_new_chunk() -> None:
    rec = MotionRecorder(DT)
    for k in range(6):
        if k == 3:
            rec.new_chunk()
        rec.record(np.array([0.1 * k]))
    m = recorded_smoothness(rec)
    assert len(rec) == 6
    assert m["chunk_boundaries"] == 1 and m["motion_samples"] == 6
    rec.clear()
    assert recorded_smoothness(rec)["motion_samples"] == 0 and len(rec) == 0
    with pytest.raises(ValueError, match="boundary"):
        smoothness(np.zeros((4, 2)), np.zeros(3, bool), DT)
