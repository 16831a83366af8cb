"""The topic interface of ros2_control's joint_trajectory_controller (JTC), without ROS.

Used by the test consumer node and by the simulation to execute `JointTrajectory` messages the
way JTC does (positions only, hence linear interpolation):

- a new message replaces the current trajectory;
- `header.stamp == 0` means "start now" (the receive time);
- point `j` is due at `start_time + time_from_start[j]`;
- before the first point, JTC interpolates from the state at the receive time to the first point;
- between points it interpolates linearly; points already passed are skipped by sampling the
  segment that contains the current time (a late message may therefore jump);
- after the last point it holds the last point;
- an empty message stops the motion: hold the current position.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike


class TrajectoryFollower:
    """Sample the position command of the active trajectory at any time `t` (float seconds)."""

    def __init__(self, dof: int | None = None) -> None:
        """`dof` fixes the joint count; otherwise the first trajectory fixes it."""
        if dof is not None and (not isinstance(dof, int) or dof < 1):
            raise ValueError(f"dof must be an int >= 1, got {dof!r}")
        self.dof = dof
        self._times: np.ndarray | None = None  # absolute point times (P,)
        self._positions: np.ndarray | None = None  # (P, D)
        self._receive_time = 0.0
        self._receive_position: np.ndarray | None = None
        self.trajectory_count = 0

    @property
    def has_trajectory(self) -> bool:
        return self._receive_position is not None

    def end_time(self) -> float | None:
        """Absolute time of the last point (None without a trajectory, receive time if empty)."""
        if self._receive_position is None:
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
        current_position: ArrayLike,
    ) -> None:
        """Replace the trajectory with points at `start_time + points_times` (relative, strictly
        increasing, >= 0); `positions` (P, D); `start_time` None or 0 means `now`;
        `current_position` (D,) is the state at the receive time `now`."""
        times = np.asarray(points_times, dtype=np.float64).reshape(-1)
        pos = np.asarray(positions, dtype=np.float64)
        cur = np.asarray(current_position, dtype=np.float64)
        if cur.ndim != 1 or cur.size == 0:
            raise ValueError(f"current_position must be a (D,) array, got shape {cur.shape}")
        dof = self.dof if self.dof is not None else cur.shape[0]
        if cur.shape != (dof,):
            raise ValueError(f"current_position must have shape ({dof},), got {cur.shape}")
        if not (math.isfinite(now) and np.all(np.isfinite(cur))):
            raise ValueError("now and current_position must be finite")
        if times.size == 0:
            pos = np.zeros((0, dof))
        elif pos.shape != (times.size, dof):
            raise ValueError(
                f"positions must have shape ({times.size}, {dof}) for {times.size} points, "
                f"got {pos.shape}"
            )
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(pos))):
            raise ValueError("trajectory times and positions must be finite (no NaN/inf)")
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
        self.dof = dof
        self._times = start + times
        self._positions = pos.copy()
        self._receive_time = float(now)
        self._receive_position = cur.copy()
        self.trajectory_count += 1

    def sample(self, t: float) -> np.ndarray | None:
        """Commanded position (D,) at time `t`; None before any trajectory was set."""
        if self._receive_position is None:
            return None
        times, pos = self._times, self._positions
        if times is None or pos is None or times.size == 0:
            return self._receive_position.copy()
        if t < times[0]:
            if t <= self._receive_time:
                return self._receive_position.copy()
            # Starting segment: from the state at the receive time to the first point.
            return _lerp(self._receive_time, self._receive_position, times[0], pos[0], t)
        if t >= times[-1]:
            return pos[-1].copy()
        j = int(np.searchsorted(times, t, side="right")) - 1
        return _lerp(times[j], pos[j], times[j + 1], pos[j + 1], t)

    def clear(self) -> None:
        """Forget the trajectory (sample() returns None again)."""
        self._times = None
        self._positions = None
        self._receive_position = None


def _lerp(t0: float, p0: np.ndarray, t1: float, p1: np.ndarray, t: float) -> np.ndarray:
    if t1 <= t0:
        return p1.copy()
    s = (t - t0) / (t1 - t0)
    return p0 + s * (p1 - p0)
