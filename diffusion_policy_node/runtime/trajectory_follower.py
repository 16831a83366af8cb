"""The topic interface of ros2_control's joint_trajectory_controller (JTC), without ROS.

Used by the test consumer node, the simulation and the policy node's mirror to execute
`JointTrajectory` messages the way JTC's spline interpolator does (ros2_controllers
`joint_trajectory_controller/src/trajectory.cpp`, `Trajectory::sample` and
`interpolate_between_points`; `doc/userdoc.rst` "Trajectory representation"):

- a new message replaces the current trajectory; it is first sampled at its receive time `now`,
  where the state before it is taken: what JTC was commanding then (`interpolate_from_desired_
  state` / `open_loop_control`: position, velocity and acceleration of the previous trajectory
  at `now`), or the measured state given as `current_position` (+ `current_velocity`);
- `header.stamp == 0` means "start now": the points are timed from that first sample;
- point `j` is due at `start_time + time_from_start[j]`;
- before the first point, JTC interpolates from the state before the message to the first
  point; between points it interpolates the segment that contains the sample time (points
  already passed are skipped, so a late message may jump);
- the interpolation of a segment depends on what both of its ends carry: positions only →
  linear (velocity steps at every point); positions + velocities → cubic Hermite (velocity
  continuous); positions + velocities + accelerations → quintic (acceleration continuous).
  The state before the message counts as an end: without a velocity (a measured state of a
  position-only robot) the first segment is linear (newer JTC versions fill zeros when the
  points carry velocities, which is what `current_velocity=None` with velocities means here);
- after the last point it holds the last point (velocity and acceleration as given, else 0);
- an empty message stops the motion: hold the current position.

`sample(t)` is the commanded position; `sample_state(t)` the (position, velocity,
acceleration) JTC commands at `t`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class _End:
    """One end of a segment: position (D,), velocity and acceleration (D,) or None."""

    p: np.ndarray
    v: np.ndarray | None
    a: np.ndarray | None


class TrajectoryFollower:
    """Sample the command of the active trajectory at any time `t` (float seconds)."""

    def __init__(self, dof: int | None = None) -> None:
        """`dof` fixes the joint count; otherwise the first trajectory fixes it."""
        if dof is not None and (not isinstance(dof, int) or dof < 1):
            raise ValueError(f"dof must be an int >= 1, got {dof!r}")
        self.dof = dof
        self._times: np.ndarray | None = None  # absolute point times (P,)
        self._positions: np.ndarray | None = None  # (P, D)
        self._velocities: np.ndarray | None = None  # (P, D) or None (not in the message)
        self._accelerations: np.ndarray | None = None
        self._receive_time = 0.0
        self._before: _End | None = None  # the state before the message, at the receive time
        self.trajectory_count = 0

    @property
    def has_trajectory(self) -> bool:
        return self._before is not None

    @property
    def kind(self) -> str:
        """What the points carry: "positions", "velocities" or "accelerations"."""
        if self._velocities is None:
            return "positions"
        return "velocities" if self._accelerations is None else "accelerations"

    def end_time(self) -> float | None:
        """Absolute time of the last point (None without a trajectory, receive time if empty)."""
        if self._before is None:
            return None
        if self._times is None or self._times.size == 0:
            return self._receive_time
        return float(self._times[-1])

    def set_trajectory(
        self,
        points_times: ArrayLike,
        positions: ArrayLike,
        start_time: float | None,
        now: float,
        current_position: ArrayLike | None = None,
        velocities: ArrayLike | None = None,
        accelerations: ArrayLike | None = None,
        current_velocity: ArrayLike | None = None,
        from_desired: bool = False,
    ) -> None:
        """Replace the trajectory with points at `start_time + points_times` (relative, strictly
        increasing, >= 0); `positions` (P, D), optional `velocities`/`accelerations` (P, D)
        (accelerations need velocities, as in JTC); `start_time` None or 0 means `now`.

        The state before the message: with `from_desired` (JTC's interpolate_from_desired_state
        / open_loop_control) what this follower commands at `now` (position, velocity,
        acceleration), falling back to `current_position` without a previous trajectory;
        otherwise the measured `current_position` (D,) with `current_velocity` (D,) if the robot
        reports one (None: no velocity; zeros when the points carry velocities)."""
        times = np.asarray(points_times, dtype=np.float64).reshape(-1)
        before = self.sample_state(now) if from_desired and self.has_trajectory else None
        if before is None:
            if current_position is None:
                raise ValueError("current_position is required without a previous trajectory")
            cur = np.asarray(current_position, dtype=np.float64)
            if cur.ndim != 1 or cur.size == 0:
                raise ValueError(f"current_position must be a (D,) array, got shape {cur.shape}")
        else:
            cur = before[0]
        dof = self.dof if self.dof is not None else cur.shape[0]
        if cur.shape != (dof,):
            raise ValueError(f"current_position must have shape ({dof},), got {cur.shape}")
        if not (math.isfinite(now) and np.all(np.isfinite(cur))):
            raise ValueError("now and current_position must be finite")
        pos = _points(positions, times.size, dof, "positions")
        vel = None if velocities is None else _points(velocities, times.size, dof, "velocities")
        acc = (
            None
            if accelerations is None
            else _points(accelerations, times.size, dof, "accelerations")
        )
        if acc is not None and vel is None:
            raise ValueError("accelerations need velocities (JTC interpolates quintic only then)")
        if times.size and times[0] < 0:
            raise ValueError(f"time_from_start must be >= 0, got {times[0]}")
        if times.size > 1 and np.any(np.diff(times) <= 0):
            bad = int(np.nonzero(np.diff(times) <= 0)[0][0]) + 1
            raise ValueError(
                f"time_from_start must be strictly increasing; point {bad} has "
                f"{times[bad]} <= {times[bad - 1]} of point {bad - 1}"
            )
        if start_time is None or start_time == 0:
            start = float(now)
        elif math.isfinite(start_time):
            start = float(start_time)
        else:
            raise ValueError(f"start_time must be finite or None, got {start_time!r}")
        if before is not None:
            state = _End(before[0], before[1], before[2])
        else:
            v0 = None if current_velocity is None else np.asarray(current_velocity, np.float64)
            if v0 is not None and v0.shape != (dof,):
                raise ValueError(f"current_velocity must have shape ({dof},), got {v0.shape}")
            if v0 is None and vel is not None:
                v0 = np.zeros(dof)  # JTC fills zeros when the points carry velocities
            state = _End(cur.copy(), v0, None if acc is None else np.zeros(dof))
        if vel is None:  # a positions-only message: linear, whatever the state carries
            state = _End(state.p, None, None)
        elif acc is None:
            state = _End(state.p, state.v, None)
        self.dof = dof
        self._times = start + times
        self._positions = pos
        self._velocities = vel
        self._accelerations = acc
        self._receive_time = float(now)
        self._before = state
        self.trajectory_count += 1

    def _point(self, j: int) -> _End:
        v = None if self._velocities is None else self._velocities[j]
        a = None if self._accelerations is None else self._accelerations[j]
        return _End(self._positions[j], v, a)

    def sample_state(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(position, velocity, acceleration) (D,) commanded at time `t`; None before any
        trajectory was set."""
        before = self._before
        if before is None:
            return None
        times = self._times
        zeros = np.zeros_like(before.p)
        if times is None or times.size == 0 or t < self._receive_time:
            # an empty message, or a sample before the receive time: the state before
            return before.p.copy(), zeros.copy(), zeros.copy()
        if t < times[0]:
            return _interpolate(self._receive_time, before, times[0], self._point(0), t)
        if t >= times[-1]:
            last = self._point(times.size - 1)
            v = zeros.copy() if last.v is None else last.v.copy()
            a = zeros.copy() if last.a is None else last.a.copy()
            return last.p.copy(), v, a
        j = int(np.searchsorted(times, t, side="right")) - 1
        return _interpolate(times[j], self._point(j), times[j + 1], self._point(j + 1), t)

    def sample(self, t: float) -> np.ndarray | None:
        """Commanded position (D,) at time `t`; None before any trajectory was set."""
        state = self.sample_state(t)
        return None if state is None else state[0]

    def clear(self) -> None:
        """Forget the trajectory (sample() returns None again)."""
        self._times = None
        self._positions = None
        self._velocities = None
        self._accelerations = None
        self._before = None


def _points(values: ArrayLike, n: int, dof: int, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if n == 0:
        return np.zeros((0, dof))
    if arr.shape != (n, dof):
        raise ValueError(f"{name} must have shape ({n}, {dof}) for {n} points, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"trajectory {name} must be finite (no NaN/inf)")
    return arr.copy()


def _interpolate(
    t0: float, a: _End, t1: float, b: _End, t: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """JTC's `interpolate_between_points`: linear, cubic or quintic by what both ends carry;
    outside [t0, t1] clamped to the end and linear."""
    T = t1 - t0
    s = t - t0
    has_vel = a.v is not None and b.v is not None
    has_acc = has_vel and a.a is not None and b.a is not None
    if s < 0.0:
        s, has_vel, has_acc = 0.0, False, False
    if s > T:
        s, has_vel, has_acc = T, False, False
    p0, p1 = a.p, b.p
    zeros = np.zeros_like(p0)
    if not has_vel:
        c1 = (p1 - p0) / T if T != 0.0 else zeros
        return p0 + c1 * s, c1.copy(), zeros
    v0, v1 = a.v, b.v
    if not has_acc:
        if T != 0.0:
            c2 = (-3.0 * p0 + 3.0 * p1 - 2.0 * v0 * T - v1 * T) / T**2
            c3 = (2.0 * p0 - 2.0 * p1 + v0 * T + v1 * T) / T**3
        else:
            c2 = c3 = zeros
        pos = p0 + v0 * s + c2 * s**2 + c3 * s**3
        vel = v0 + 2.0 * c2 * s + 3.0 * c3 * s**2
        acc = 2.0 * c2 + 6.0 * c3 * s
        return pos, vel, acc
    a0, a1 = a.a, b.a
    c2 = 0.5 * a0
    if T != 0.0:
        c3 = (
            -20.0 * p0 + 20.0 * p1 - 3.0 * a0 * T**2 + a1 * T**2 - 12.0 * v0 * T - 8.0 * v1 * T
        ) / (2.0 * T**3)
        c4 = (
            30.0 * p0
            - 30.0 * p1
            + 3.0 * a0 * T**2
            - 2.0 * a1 * T**2
            + 16.0 * v0 * T
            + 14.0 * v1 * T
        ) / (2.0 * T**4)
        c5 = (-12.0 * p0 + 12.0 * p1 - a0 * T**2 + a1 * T**2 - 6.0 * v0 * T - 6.0 * v1 * T) / (
            2.0 * T**5
        )
    else:
        c3 = c4 = c5 = zeros
    pos = p0 + v0 * s + c2 * s**2 + c3 * s**3 + c4 * s**4 + c5 * s**5
    vel = v0 + 2.0 * c2 * s + 3.0 * c3 * s**2 + 4.0 * c4 * s**3 + 5.0 * c5 * s**4
    acc = 2.0 * c2 + 6.0 * c3 * s + 12.0 * c4 * s**2 + 20.0 * c5 * s**3
    return pos, vel, acc
