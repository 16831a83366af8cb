"""Velocities and accelerations of a chunk's points: one C2 spline from what executes when the
chunk lands, the last point at rest, within the velocity limit."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower
from diffusion_policy_node.runtime.trajectory_shape import point_derivatives

BIG = np.full(2, 1e9)


def test_spline_through_the_points_is_c2_and_ends_at_rest() -> None:
    t = np.arange(1, 9) * 0.1
    pos = np.stack([np.sin(3 * t), 0.5 * t**2], axis=1)
    v0 = np.array([3.0, 0.0])
    vel, acc = point_derivatives(t, pos, np.zeros(2), v0, -BIG, BIG, BIG)
    assert vel.shape == acc.shape == (8, 2)
    np.testing.assert_allclose(vel[-1], 0.0)
    np.testing.assert_allclose(acc[-1], 0.0)
    # executed by a JTC (quintic with these values) the motion passes every point, its
    # velocity is continuous from the start state and the spline's
    f = TrajectoryFollower()
    f.set_trajectory(
        t, pos, None, now=0.0, current_position=np.zeros(2), current_velocity=v0,
        velocities=vel, accelerations=acc,
    )  # fmt: skip
    for k, tk in enumerate(t):
        np.testing.assert_allclose(f.sample(tk), pos[k], atol=1e-12)
    fine = np.arange(0.0, 0.8, 0.001)
    v = np.array([f.sample_state(x)[1] for x in fine])
    assert np.abs(np.diff(v, axis=0)).max() < 0.1  # no velocity step anywhere (per ms) ...
    lin = TrajectoryFollower()
    lin.set_trajectory(t, pos, None, now=0.0, current_position=np.zeros(2))
    v_lin = np.array([lin.sample_state(x)[1] for x in fine])
    assert np.abs(np.diff(v_lin, axis=0)).max() > 0.25  # ... as positions only have
    np.testing.assert_allclose(v[0], v0)
    # interior velocities are those of the C2 spline: the cubic's acceleration is continuous
    x = np.concatenate([[0.0], t])
    y = np.concatenate([[np.zeros(2)], pos])
    vv = np.concatenate([[v0], vel])
    h = np.diff(x)
    dy = np.diff(y, axis=0)
    start_acc = 6 * dy / h[:, None] ** 2 - (4 * vv[:-1] + 2 * vv[1:]) / h[:, None]
    end_acc = -6 * dy / h[:, None] ** 2 + (2 * vv[:-1] + 4 * vv[1:]) / h[:, None]
    np.testing.assert_allclose(end_acc[:-2], start_acc[1:-1], atol=1e-9)


def test_a_straight_line_at_constant_speed_keeps_its_speed() -> None:
    t = np.arange(1, 6) * 0.1
    pos = (t * 2.0)[:, None]
    vel, _ = point_derivatives(t, pos, np.zeros(1), np.array([2.0]), -BIG[:1], BIG[:1], BIG[:1])
    # the interior knots near the start move at ~2/s; the end is brought to rest
    assert vel[0, 0] == pytest.approx(2.0, abs=0.2)
    assert vel[-1, 0] == 0.0


def test_velocity_limit_and_points_at_a_position_limit() -> None:
    t = np.array([0.1, 0.2, 0.3])
    pos = np.array([[0.5], [1.0], [1.0]])  # reaches the upper limit 1.0
    vel, acc = point_derivatives(
        t, pos, np.zeros(1), np.zeros(1), np.array([-1.0]), np.array([1.0]), np.array([3.0])
    )
    assert np.all(np.abs(vel) <= 3.0)
    assert vel[1, 0] == 0.0 and acc[1, 0] == 0.0  # at the limit: no overshoot past it
