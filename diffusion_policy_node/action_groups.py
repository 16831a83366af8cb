"""Action groups: the action vector as the controllers see it (docs/design.md#timing-model).

A robot is commanded through several controllers: the arm's joint_trajectory_controller, a
gripper on its own controller (a JTC, or a forward position controller taking
std_msgs/Float64MultiArray). Each is one `ActionGroup`: its joints, its command topic and
message type, and where its actions come from in a recording (`source`):

    command      the recorded command topic: a JointTrajectory evaluated one step ahead (its
                 point at time_from_start = dt), or a Float64MultiArray taken as is;
    next_state   the group's joint positions one grid step later (commands not recorded).

The action vector of a policy is the groups' joints concatenated in group order; `split` and
`columns` map it back. The observation (state) is a separate list of joints read by name from
/joint_states; every action joint must be in it (hold and the velocity limit start from the
measured position).

ROS-free and numpy-only: data/, policy/, runtime/ and ros/ all use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

GROUP_TYPES = ("JointTrajectory", "Float64MultiArray")
GROUP_SOURCES = ("command", "next_state")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _bad(where: str, value: Any, why: str) -> ValueError:
    return ValueError(f"{where}={value!r}: {why}")


def check_topic(where: str, topic: Any) -> None:
    """ValueError unless `topic` is a fully qualified ROS topic name."""
    if not isinstance(topic, str) or not topic.startswith("/") or topic.endswith("/"):
        raise _bad(where, topic, "expected a fully qualified topic name such as '/joint_states'")


@dataclass(frozen=True)
class ActionGroup:
    """One controller's share of the action vector (see the module docstring)."""

    name: str
    joints: tuple[str, ...]
    topic: str
    type: str = "JointTrajectory"
    source: str = "command"

    def __post_init__(self) -> None:
        where = f"action group {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise _bad(
                "action group name", self.name, "expected letters, digits and _, e.g. 'arm'"
            )
        if isinstance(self.joints, str):
            raise _bad(f"{where} joints", self.joints, "expected a list of joint names")
        object.__setattr__(self, "joints", tuple(self.joints))
        if not self.joints or not all(isinstance(j, str) and j for j in self.joints):
            raise _bad(f"{where} joints", list(self.joints), "need a non-empty list of names")
        if len(set(self.joints)) != len(self.joints):
            raise _bad(f"{where} joints", list(self.joints), "duplicate joint name")
        check_topic(f"{where} topic", self.topic)
        if self.type not in GROUP_TYPES:
            raise _bad(f"{where} type", self.type, f"expected one of {GROUP_TYPES}")
        if self.source not in GROUP_SOURCES:
            raise _bad(f"{where} source", self.source, f"expected one of {GROUP_SOURCES}")

    @property
    def is_trajectory(self) -> bool:
        """True: trajectory_msgs/JointTrajectory chunks; False: one Float64MultiArray a tick."""
        return self.type == "JointTrajectory"

    def action_lead(self, dt: float) -> float:
        """The action-time convention of this group's recorded actions: a JointTrajectory
        command is evaluated at grid time + dt (the expert's point at time_from_start = dt),
        so its action at grid step t_k is the position to reach at t_k + dt; a Float64MultiArray
        command or next_state is the target of its own step (lead 0)."""
        return float(dt) if self.source == "command" and self.is_trajectory else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "joints": list(self.joints),
            "topic": self.topic,
            "type": self.type,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "action group") -> ActionGroup:
        if isinstance(data, ActionGroup):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"{where}: expected a mapping with name, joints, topic, got {data!r}")
        known = {"name", "joints", "topic", "type", "source"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
        missing = sorted({"name", "joints", "topic"} - set(data))
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from exc


def parse_groups(data: Any, where: str = "action_groups") -> tuple[ActionGroup, ...]:
    """Groups from a YAML list of mappings (or ActionGroups), checked with `check_groups`."""
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise ValueError(f"{where}: expected a list of groups, got {data!r}")
    groups = tuple(
        ActionGroup.from_dict(g, where=f"{where}[{i}]") for i, g in enumerate(list(data))
    )
    check_groups(groups, where=where)
    return groups


def check_groups(
    groups: Sequence[ActionGroup],
    state_joints: Sequence[str] | None = None,
    where: str = "action_groups",
) -> None:
    """ValueError naming the problem: no groups, duplicate group names, a joint in two groups,
    two groups on one topic, or (with `state_joints`) an action joint that is not observed."""
    if not groups:
        raise ValueError(f"{where}: need at least one action group")
    names = [g.name for g in groups]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"{where}: duplicate group name(s) {dup}")
    topics = [g.topic for g in groups]
    dup = sorted({t for t in topics if topics.count(t) > 1})
    if dup:
        raise ValueError(f"{where}: several groups publish to {dup}; one topic per controller")
    seen: dict[str, str] = {}
    for g in groups:
        for j in g.joints:
            if j in seen:
                raise ValueError(
                    f"{where}: joint {j!r} is in group {seen[j]!r} and in group {g.name!r}"
                )
            seen[j] = g.name
    if state_joints is not None:
        state = set(state_joints)
        for g in groups:
            missing = [j for j in g.joints if j not in state]
            if missing:
                raise ValueError(
                    f"{where}: group {g.name!r} commands joint(s) {missing} that are not in "
                    f"the observed joints {list(state_joints)}; every commanded joint must be "
                    "observed (add it to joint_names)"
                )


def action_joints(groups: Sequence[ActionGroup]) -> tuple[str, ...]:
    """The action vector's joints: the groups' joints concatenated in group order."""
    return tuple(j for g in groups for j in g.joints)


def columns(groups: Sequence[ActionGroup]) -> dict[str, slice]:
    """Group name -> its slice of the action vector."""
    out, start = {}, 0
    for g in groups:
        out[g.name] = slice(start, start + len(g.joints))
        start += len(g.joints)
    return out


def split(actions: np.ndarray, groups: Sequence[ActionGroup]) -> dict[str, np.ndarray]:
    """Split (..., D) actions into {group name: (..., d_group)} along the last axis."""
    actions = np.asarray(actions)
    dim = sum(len(g.joints) for g in groups)
    if actions.shape[-1] != dim:
        raise ValueError(
            f"actions have {actions.shape[-1]} values per step but the groups "
            f"{[g.name for g in groups]} command {dim} joints"
        )
    return {name: actions[..., sl] for name, sl in columns(groups).items()}


def concat(parts: Mapping[str, np.ndarray], groups: Sequence[ActionGroup]) -> np.ndarray:
    """Inverse of `split`: (..., D) from {group name: (..., d_group)}."""
    missing = [g.name for g in groups if g.name not in parts]
    if missing:
        raise ValueError(f"no actions for group(s) {missing}")
    for g in groups:
        if np.shape(parts[g.name])[-1] != len(g.joints):
            raise ValueError(
                f"group {g.name!r}: {np.shape(parts[g.name])[-1]} values per step, expected "
                f"{len(g.joints)} ({list(g.joints)})"
            )
    return np.concatenate([np.asarray(parts[g.name]) for g in groups], axis=-1)


def indices_in(names: Sequence[str], within: Sequence[str], what: str) -> np.ndarray:
    """Index of each of `names` in `within`; ValueError naming the missing ones."""
    pos = {n: i for i, n in enumerate(within)}
    missing = [n for n in names if n not in pos]
    if missing:
        raise ValueError(f"joint(s) {missing} missing from {what} (it has {list(within)})")
    return np.array([pos[n] for n in names], dtype=np.int64)


def trajectory_lead(groups: Sequence[ActionGroup], dt: float) -> float:
    """The one action lead of the trajectory groups (they are published as one schedule);
    ValueError when they disagree. No trajectory group: 0."""
    leads = {g.name: g.action_lead(dt) for g in groups if g.is_trajectory}
    values = sorted(set(leads.values()))
    if len(values) > 1 and not math.isclose(values[0], values[-1]):
        raise ValueError(
            f"action groups {sorted(leads)} are JointTrajectory groups with different action "
            f"times {leads} (recorded commands are one step ahead, next_state is not); use "
            "the same source for all JointTrajectory groups"
        )
    return values[0] if values else 0.0


def single_group(
    joints: Sequence[str], topic: str, type_: str = "JointTrajectory", source: str = "command"
) -> tuple[ActionGroup, ...]:
    """Today's simplest config and what checkpoints without groups mean: one group 'arm' of
    all joints on one topic."""
    return (ActionGroup("arm", tuple(joints), topic, type_, source),)
