"""Joint states merged by name, from any number of publishers (ROS-free).

A robot often has several `sensor_msgs/JointState` publishers on one topic: ros2_control's
joint_state_broadcaster for the arm (6 joints at 100 Hz) and a separate gripper driver (1 joint
at 50 Hz). Each message names the joints it carries; none has to carry all of them. This module
is the one place where such messages are read, for the policy node (live observation) and for
the bag reader (training data), so both see the same thing:

- `select_joints` takes the wanted joints out of one message (by name, any order, extra joints
  ignored). A message that names a joint twice is refused (`DuplicateJointError`, naming the
  joint): which of the two values is the joint's is unknowable, so "last wins" would be a
  silent guess. A message whose `position` and `name` lengths differ, or with NaN/inf in a
  wanted joint, is refused too (`JointStateError`).
- `JointStateMerger` keeps the newest position of every wanted joint with its own stamp. The
  observation is the newest of each joint; its age is the age of the *oldest* of them, so a
  gripper driver that stops publishing makes the observation stale even while the arm's
  messages keep coming (`stale_joints` names it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DuplicateJointError",
    "JointStateError",
    "JointStateMerger",
    "MergeResult",
    "select_joints",
]


class JointStateError(ValueError):
    """A JointState message that cannot be used. `kind` is a short category for counting
    ("malformed", "duplicate", "non-finite"); the message says what and where."""

    def __init__(self, kind: str, text: str, joints: Sequence[str] = ()) -> None:
        super().__init__(text)
        self.kind = kind
        self.joints = tuple(joints)

    @property
    def summary(self) -> str:
        """A count key (the ingest summary's reason): a duplicate names its joints, e.g.
        "duplicate joint name(s) ['j2'] in one JointState"."""
        if self.kind == "duplicate":
            return f"duplicate joint name(s) {list(self.joints)} in one JointState"
        if self.kind == "non-finite":
            return "NaN/inf in a selected joint position"
        return "malformed JointState (len(position) != len(name))"


class DuplicateJointError(JointStateError):
    """One JointState names a joint more than once."""

    def __init__(self, joints: Sequence[str], where: str) -> None:
        super().__init__(
            "duplicate",
            f"{where}: joint name(s) {list(joints)} appear more than once in one JointState "
            "(which value is the joint's is unknown); the message is skipped. Fix the driver "
            "that publishes it",
            joints,
        )


def select_joints(
    names: Sequence[str], positions: Sequence[float], wanted: Sequence[str], where: str
) -> tuple[np.ndarray, np.ndarray]:
    """(columns into `wanted`, positions) of the wanted joints present in one message, in the
    message's order. Joints not wanted are ignored (even if NaN); none present gives empty
    arrays. Raises `DuplicateJointError` when any name repeats (wanted or not: the message is
    inconsistent), `JointStateError` for a length mismatch or a non-finite wanted position."""
    names = [str(n) for n in names]
    if len(positions) != len(names):
        raise JointStateError(
            "malformed",
            f"{where}: {len(names)} names but {len(positions)} positions; the driver published "
            "an inconsistent JointState",
        )
    if len(set(names)) != len(names):
        seen: set[str] = set()
        dups = []
        for n in names:
            if n in seen and n not in dups:
                dups.append(n)
            seen.add(n)
        raise DuplicateJointError(dups, where)
    column = {n: i for i, n in enumerate(wanted)}
    src = [k for k, n in enumerate(names) if n in column]
    cols = np.array([column[names[k]] for k in src], dtype=np.intp)
    values = np.asarray(positions, dtype=np.float64)[src] if src else np.zeros(0)
    bad = ~np.isfinite(values)
    if bad.any():
        joints = [wanted[c] for c in cols[bad]]
        raise JointStateError(
            "non-finite", f"{where}: non-finite position for joint(s) {joints}", joints
        )
    return cols, values


@dataclass(frozen=True)
class MergeResult:
    """What one message changed: the wanted joints it updated, and those it carried with a
    stamp older than the joint's newest (kept as they were)."""

    updated: tuple[str, ...]
    out_of_order: tuple[str, ...]


class JointStateMerger:
    """The newest position of each of `joint_names`, each with its own stamp (seconds)."""

    def __init__(self, joint_names: Sequence[str]) -> None:
        names = [str(n) for n in joint_names]
        if not names or len(set(names)) != len(names) or not all(names):
            raise ValueError(f"joint_names must be non-empty and unique, got {names!r}")
        self.joint_names = tuple(names)
        self._positions = np.zeros(len(names))
        self._stamps = np.full(len(names), -np.inf)

    def reset(self) -> None:
        """Forget every joint (as if nothing had been received)."""
        self._positions[:] = 0.0
        self._stamps[:] = -np.inf

    def offer(
        self,
        names: Sequence[str],
        positions: Sequence[float],
        stamp: float,
        where: str = "joint state",
    ) -> MergeResult:
        """Merge one message stamped `stamp`. Raises `JointStateError` (nothing merged) for a
        message `select_joints` refuses. A joint whose stamp is older than its newest is left
        as it was (`MergeResult.out_of_order`)."""
        cols, values = select_joints(names, positions, self.joint_names, where)
        return self.merge(cols, values, stamp)

    def merge(self, cols: np.ndarray, values: np.ndarray, stamp: float) -> MergeResult:
        """Merge positions `values` of the joints at `cols` (a `select_joints` result)."""
        cols = np.asarray(cols, dtype=np.intp)
        values = np.asarray(values, dtype=np.float64)
        older = self._stamps[cols] > stamp
        take = cols[~older]
        self._positions[take] = values[~older]
        self._stamps[take] = stamp
        return MergeResult(
            tuple(self.joint_names[c] for c in take),
            tuple(self.joint_names[c] for c in cols[older]),
        )

    @property
    def complete(self) -> bool:
        """Every joint received at least once."""
        return bool(np.all(np.isfinite(self._stamps)))

    def missing(self) -> list[str]:
        """Joints never received."""
        return [n for n, s in zip(self.joint_names, self._stamps, strict=True) if s == -np.inf]

    def received(self) -> list[str]:
        """Joints received at least once."""
        return [n for n, s in zip(self.joint_names, self._stamps, strict=True) if s > -np.inf]

    def positions(self) -> np.ndarray:
        """(D,) float64 newest positions in `joint_names` order (0 for joints never received)."""
        return self._positions.copy()

    def stamps(self) -> np.ndarray:
        """(D,) stamp of each joint's newest position (-inf: never received)."""
        return self._stamps.copy()

    def oldest_stamp(self) -> float:
        """The stamp of the observation: the oldest of the joints' newest stamps (-inf while a
        joint was never received)."""
        return float(self._stamps.min())

    def stale_joints(self, now: float, max_age: float) -> dict[str, float | None]:
        """{joint: age in seconds (None: never received)} of the joints older than `max_age`."""
        out: dict[str, float | None] = {}
        for name, s in zip(self.joint_names, self._stamps, strict=True):
            if s == -np.inf:
                out[name] = None
            elif now - s > max_age:
                out[name] = float(now - s)
        return out
