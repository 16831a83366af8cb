"""Velocities and accelerations for the points of a JointTrajectory chunk (ROS-free).

With positions only, joint_trajectory_controller (JTC) interpolates linearly between points a
control step apart: the commanded velocity steps at every point, an acceleration spike each
step on a real arm. With velocities (and accelerations) in the points JTC runs cubic (quintic)
splines (`runtime/trajectory_follower.py`). `point_derivatives` gives the points those values
from one clamped cubic spline through

    (0, q0), (t_1, p_1), ..., (t_K, p_K)

where (q0, v0) is what the controller executes when the chunk lands (the previous chunk's state
at that time: the motion stays continuous across chunk boundaries), the spline's velocity is v0
at the start and 0 at the last point (at rest: JTC rejects a last point that moves unless
`allow_nonzero_velocity_at_trajectory_end`). The spline is C2, so the velocities and
accelerations are consistent with the scheduled positions and continuous at every point.
Velocities are clipped to the joint's velocity limit; a point at a position limit gets velocity
and acceleration 0 (the spline would otherwise overshoot the limit between points).
"""

from __future__ import annotations

import numpy as np

# What the points carry (the `trajectory_derivatives` parameter).
DERIVATIVES = ("accelerations", "velocities", "none")


def point_derivatives(
    times: np.ndarray,
    positions: np.ndarray,
    q0: np.ndarray,
    v0: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    max_velocity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(velocities, accelerations) (K, D) at the points `positions` (K, D) due `times` (K,)
    seconds after the start state (q0, v0) (D,); the last point at rest (velocity and
    acceleration 0). See the module docstring."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64)
    k, d = pos.shape
    if times.shape != (k,) or k == 0:
        raise ValueError(f"need K >= 1 points with K times, got {pos.shape} and {times.shape}")
    x = np.concatenate([[0.0], times])
    y = np.concatenate([np.asarray(q0, np.float64)[None, :], pos])
    h = np.diff(x)
    if np.any(h <= 0):
        raise ValueError(f"point times must be increasing and after the start, got {times}")
    n = k + 1  # knots
    vel = np.zeros((n, d))
    vel[0] = v0
    # Interior knots 1..n-2: h_i v_{i-1} + 2 (h_{i-1} + h_i) v_i + h_{i-1} v_{i+1}
    #   = 3 (h_i (y_i - y_{i-1}) / h_{i-1} + h_{i-1} (y_{i+1} - y_i) / h_i)  (C2 at knot i)
    m = n - 2
    if m > 0:
        system = np.zeros((m, m))
        rhs = np.zeros((m, d))
        for r, i in enumerate(range(1, n - 1)):
            hp, hn = h[i - 1], h[i]
            system[r, r] = 2.0 * (hp + hn)
            if r > 0:
                system[r, r - 1] = hn
            if r < m - 1:
                system[r, r + 1] = hp
            rhs[r] = 3.0 * (hn * (y[i] - y[i - 1]) / hp + hp * (y[i + 1] - y[i]) / hn)
            if i == 1:
                rhs[r] -= hn * vel[0]
            # v_{n-1} (the last point) is 0: no term
        vel[1 : n - 1] = np.linalg.solve(system, rhs)
    # accelerations at the start of each segment of the cubic Hermite spline
    acc = np.zeros((n, d))
    dy = np.diff(y, axis=0)
    for i in range(n - 1):
        acc[i] = 6.0 * dy[i] / h[i] ** 2 - (4.0 * vel[i] + 2.0 * vel[i + 1]) / h[i]
    vel, acc = vel[1:], acc[1:]
    vmax = np.broadcast_to(np.asarray(max_velocity, np.float64), (d,))
    vel = np.clip(vel, -vmax, vmax)
    at_limit = (pos <= np.asarray(lower)[None, :]) | (pos >= np.asarray(upper)[None, :])
    vel[at_limit] = 0.0
    acc[at_limit] = 0.0
    vel[-1] = 0.0
    acc[-1] = 0.0
    return vel, acc
