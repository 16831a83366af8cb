"""Joint limits of the commanded joints, and where each came from (ROS-free).

Precedence, per joint and per kind of limit (position range, velocity):

1. parameters: `joint_lower_limits` / `joint_upper_limits` / `max_joint_velocity`;
2. the robot's URDF (`robot_description_file`, or the `/robot_description` topic that
   robot_state_publisher latches): the `<limit lower upper velocity>` of a revolute or
   prismatic joint (a continuous joint has no position range, only a velocity);
3. the demonstrated range (the checkpoint's action normalizer min/max), widened by
   `limit_margin_frac` of its span and to at least `min_limit_span`, so a joint that barely
   moved in the demonstrations is not frozen; velocity: that range per second.

`resolve_limits` returns the `SafetyLimits` and a `LimitSources` that says, per joint, which
source was used (the node logs it; `dp-info` prints it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .safety import SafetyLimits, limits_from_action_range
from .settings import NodeSettings

PARAMETER = "parameter"
URDF = "urdf"
DEMONSTRATIONS = "demonstrations"


@dataclass(frozen=True)
class UrdfJoint:
    """A joint's limits in a URDF; None where the URDF gives none (continuous, fixed)."""

    name: str
    type: str
    lower: float | None
    upper: float | None
    velocity: float | None


def parse_urdf(xml: str, where: str) -> dict[str, UrdfJoint]:
    """Joint name -> limits of a URDF document, parsed by urdf_parser_py (ROS's urdfdom-py).
    ValueError naming `where` (the file or topic) when it is not a URDF."""
    from urdf_parser_py import urdf as urdf_parser

    try:
        robot = urdf_parser.URDF.from_xml_string(xml.encode() if isinstance(xml, str) else xml)
    except Exception as exc:  # the parser raises whatever lxml or its own checks raise
        raise ValueError(f"robot description {where}: not a valid URDF ({exc})") from exc
    joints: dict[str, UrdfJoint] = {}
    for joint in robot.joints or []:
        lim = joint.limit
        lower = upper = velocity = None
        if lim is not None:
            velocity = float(lim.velocity) if lim.velocity else None
            if joint.type in ("revolute", "prismatic"):
                lower, upper = float(lim.lower or 0.0), float(lim.upper or 0.0)
                if not lower < upper:
                    lower = upper = None
        joints[joint.name] = UrdfJoint(joint.name, str(joint.type), lower, upper, velocity)
    if not joints:
        raise ValueError(f"robot description {where}: a URDF without joints")
    return joints


def read_urdf_file(path: str | Path) -> dict[str, UrdfJoint]:
    """`parse_urdf` of a file; ValueError naming it when unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(
            f"parameter robot_description_file={str(path)!r}: cannot be read ({exc})"
        ) from exc
    return parse_urdf(text, f"file {path}")


@dataclass(frozen=True)
class LimitSources:
    """Per commanded joint: where its position range and its velocity limit came from."""

    joints: tuple[str, ...]
    position: tuple[str, ...]
    velocity: tuple[str, ...]

    def describe(self) -> str:
        """One line per source, e.g. "position from urdf: [a, b]; velocity from parameter: [a]"."""
        parts = []
        for kind, sources in (("position", self.position), ("velocity", self.velocity)):
            for src in (PARAMETER, URDF, DEMONSTRATIONS):
                names = [j for j, s in zip(self.joints, sources, strict=True) if s == src]
                if names:
                    parts.append(f"{kind} from {src}: {names}")
        return "; ".join(parts)


def resolve_limits(
    settings: NodeSettings,
    action_min: Sequence[float] | np.ndarray,
    action_max: Sequence[float] | np.ndarray,
    urdf: dict[str, UrdfJoint] | None = None,
    urdf_where: str = "the robot description",
) -> tuple[SafetyLimits, LimitSources]:
    """Limits of the commanded joints (`settings.action_joints`) by the precedence of the
    module docstring. ValueError when the URDF lacks a commanded joint (a description of
    another robot) or the result is not a valid range."""
    params = settings.params
    joints = settings.action_joints
    dim = len(joints)
    demo = _demonstrated(
        action_min, action_max, dim, params.limit_margin_frac, params.min_limit_span
    )
    if urdf is not None:
        missing = [j for j in joints if j not in urdf]
        if missing:
            raise ValueError(
                f"{urdf_where} has no joint(s) {missing} (it has {sorted(urdf)}): it does "
                "not describe the commanded robot; fix the description or set "
                "joint_lower_limits/joint_upper_limits/max_joint_velocity"
            )
    lower, upper, velocity = demo.lower.copy(), demo.upper.copy(), demo.max_velocity.copy()
    pos_src = [DEMONSTRATIONS] * dim
    vel_src = [DEMONSTRATIONS] * dim
    for i, name in enumerate(joints):
        u = urdf.get(name) if urdf is not None else None
        if u is not None and u.lower is not None and u.upper is not None:
            lower[i], upper[i], pos_src[i] = u.lower, u.upper, URDF
        if u is not None and u.velocity is not None and u.velocity > 0:
            velocity[i], vel_src[i] = u.velocity, URDF
    if params.joint_lower_limits:
        lower = np.array(params.joint_lower_limits, dtype=np.float64)
    if params.joint_upper_limits:
        upper = np.array(params.joint_upper_limits, dtype=np.float64)
    if params.joint_lower_limits or params.joint_upper_limits:
        pos_src = [PARAMETER] * dim
    if params.max_joint_velocity:
        velocity = np.broadcast_to(
            np.array(params.max_joint_velocity, dtype=np.float64), (dim,)
        ).copy()
        vel_src = [PARAMETER] * dim
    elif params.joint_lower_limits or params.joint_upper_limits:
        # explicit ranges without velocities: cross the range in one second at most, unless
        # the URDF knows better
        for i in range(dim):
            if vel_src[i] == DEMONSTRATIONS:
                velocity[i] = upper[i] - lower[i]
    try:
        limits = SafetyLimits(lower, upper, velocity)
    except ValueError as exc:
        raise ValueError(
            f"joint limits of {list(joints)} (joint_lower_limits/joint_upper_limits/"
            f"max_joint_velocity, {urdf_where}): {exc}"
        ) from exc
    return limits, LimitSources(tuple(joints), tuple(pos_src), tuple(vel_src))


def _demonstrated(
    action_min: Sequence[float] | np.ndarray,
    action_max: Sequence[float] | np.ndarray,
    dim: int,
    margin_frac: float,
    min_span: float,
) -> SafetyLimits:
    """The demonstrated range widened by `margin_frac` and to at least `min_span` (centred)."""
    lo = np.asarray(action_min, dtype=np.float64)
    hi = np.asarray(action_max, dtype=np.float64)
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise ValueError(
            f"checkpoint action range has {lo.shape[-1] if lo.ndim else 0} dims but {dim} "
            "joints are commanded"
        )
    widened = limits_from_action_range(lo, hi, margin_frac=margin_frac)
    lower, upper = widened.lower.copy(), widened.upper.copy()
    short = (upper - lower) < min_span
    centre = 0.5 * (lower + upper)
    lower[short] = centre[short] - 0.5 * min_span
    upper[short] = centre[short] + 0.5 * min_span
    return SafetyLimits(lower, upper, upper - lower)
