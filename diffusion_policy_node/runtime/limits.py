"""Joint limits of the commanded joints, and where each came from (ROS-free).

Precedence, per joint and per kind of limit (position range, velocity):

1. parameters: `joint_lower_limits` / `joint_upper_limits` / `max_joint_velocity`; within a
   valid URDF limit only (a parameter beyond it is narrowed to the URDF's, with a warning:
   nothing ever widens beyond a URDF limit);
2. the robot's URDF (`robot_description_file`, or the `/robot_description` topic that
   robot_state_publisher latches): the `<limit lower upper velocity>` of a revolute or
   prismatic joint (a continuous joint has no position range, only a velocity). A commanded
   joint whose URDF limits are unusable is an error naming the joint and why, unless the
   parameters set the limit in question: a revolute/prismatic joint without `<limit>`, lower >
   upper, NaN/inf, a zero-width range (a missing lower/upper defaults to 0 in URDF), a
   velocity <= 0 or missing; a fixed/floating/planar joint cannot be commanded at all;
3. the demonstrated range (the checkpoint's action normalizer min/max), widened by
   `limit_margin_frac` of its span and to at least `min_limit_span`, so a joint that barely
   moved in the demonstrations is not frozen; velocity: that range per second. Used only when
   no URDF is given at all (one warning per joint), and for the position of a continuous joint.

`resolve_limits` returns the `SafetyLimits` and a `LimitSources` that says, per joint, which
source was used and what to warn about (the node logs it; `dp-info` prints it).
"""

from __future__ import annotations

import math
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
    """A joint of a URDF as written: `has_limit` whether it has a `<limit>`; `lower`/`upper`
    as given (URDF's default 0 when absent; None for a continuous/fixed joint), `velocity`
    None when absent. Validation happens for the commanded joints only (`resolve_limits`)."""

    name: str
    type: str
    lower: float | None
    upper: float | None
    velocity: float | None
    has_limit: bool = True


def parse_urdf(xml: str, where: str) -> dict[str, UrdfJoint]:
    """Joint name -> limits of a URDF document, parsed by urdf_parser_py (ROS's urdfdom-py).
    ValueError naming `where` (the file or topic) when it is not a URDF. Tags the parser does
    not model (ros2_control, transmission, gazebo) print nothing."""
    from urdf_parser_py import urdf as urdf_parser
    from urdf_parser_py.xml_reflection import core as xml_core

    printed = xml_core.on_error
    xml_core.on_error = lambda message: None  # "Unknown tag ..." would go to stderr
    try:
        robot = urdf_parser.URDF.from_xml_string(xml.encode() if isinstance(xml, str) else xml)
    except Exception as exc:  # the parser raises whatever lxml or its own checks raise
        raise ValueError(f"robot description {where}: not a valid URDF ({exc})") from exc
    finally:
        xml_core.on_error = printed
    joints: dict[str, UrdfJoint] = {}
    for joint in robot.joints or []:
        lim = joint.limit
        lower = upper = velocity = None
        if lim is not None:
            velocity = None if lim.velocity is None else float(lim.velocity)
            if joint.type in ("revolute", "prismatic"):
                lower = 0.0 if lim.lower is None else float(lim.lower)
                upper = 0.0 if lim.upper is None else float(lim.upper)
        joints[joint.name] = UrdfJoint(
            joint.name, str(joint.type), lower, upper, velocity, lim is not None
        )
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
    """Per commanded joint: where its position range and its velocity limit came from, and
    one warning per joint whose limits are weaker than a URDF's (the node logs them)."""

    joints: tuple[str, ...]
    position: tuple[str, ...]
    velocity: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line per source, e.g. "position from urdf: [a, b]; velocity from parameter: [a]"."""
        parts = []
        for kind, sources in (("position", self.position), ("velocity", self.velocity)):
            for src in (PARAMETER, URDF, DEMONSTRATIONS):
                names = [j for j, s in zip(self.joints, sources, strict=True) if s == src]
                if names:
                    parts.append(f"{kind} from {src}: {names}")
        return "; ".join(parts)


def _urdf_problems(u: UrdfJoint) -> tuple[list[str], list[str], list[str]]:
    """(problems of lower, of upper, of velocity) of a commanded joint's URDF limits; a range
    problem (no <limit>, lower > upper, zero width) is listed under both lower and upper."""
    lower: list[str] = []
    upper: list[str] = []
    vel: list[str] = []
    if u.type not in ("revolute", "prismatic", "continuous"):
        why = f"is a {u.type} joint in the URDF: it cannot be commanded"
        return [why], [why], [why]
    if u.type != "continuous":
        if not u.has_limit:
            why = f"is {u.type} but has no <limit> in the URDF"
            return [why], [why], [why]
        lo, hi = u.lower, u.upper
        if not math.isfinite(lo):
            lower.append(f"URDF lower={lo}")
        if not math.isfinite(hi):
            upper.append(f"URDF upper={hi}")
        if math.isfinite(lo) and math.isfinite(hi):
            if lo > hi:
                lower.append(f"URDF lower={lo:g} > upper={hi:g}")
                upper.append(lower[-1])
            elif lo == hi:
                why = (
                    f"URDF range [{lo:g}, {hi:g}] has zero width (a lower/upper left out "
                    "defaults to 0)"
                )
                lower.append(why)
                upper.append(why)
    if u.has_limit:
        v = u.velocity
        if v is None:
            vel.append("URDF <limit> has no velocity")
        elif not math.isfinite(v) or v <= 0:
            vel.append(f"URDF velocity={v:g} (must be > 0)")
    return lower, upper, vel


def resolve_limits(
    settings: NodeSettings,
    action_min: Sequence[float] | np.ndarray,
    action_max: Sequence[float] | np.ndarray,
    urdf: dict[str, UrdfJoint] | None = None,
    urdf_where: str = "the robot description",
) -> tuple[SafetyLimits, LimitSources]:
    """Limits of the commanded joints (`settings.action_joints`) by the precedence of the
    module docstring. ValueError when the URDF lacks a commanded joint (a description of
    another robot), when a commanded joint's URDF limits are unusable and no parameter sets
    them (every such joint named with the reason), or the result is not a valid range."""
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
    p_lower = (
        np.array(params.joint_lower_limits, dtype=np.float64)
        if params.joint_lower_limits
        else None
    )
    p_upper = (
        np.array(params.joint_upper_limits, dtype=np.float64)
        if params.joint_upper_limits
        else None
    )
    p_vel = (
        np.broadcast_to(np.array(params.max_joint_velocity, dtype=np.float64), (dim,)).copy()
        if params.max_joint_velocity
        else None
    )
    lower, upper, velocity = demo.lower.copy(), demo.upper.copy(), demo.max_velocity.copy()
    pos_src = [DEMONSTRATIONS] * dim
    vel_src = [DEMONSTRATIONS] * dim
    warnings: list[str] = []
    errors: list[str] = []
    for i, name in enumerate(joints):
        u = urdf.get(name) if urdf is not None else None
        if u is None:
            continue
        bad_lo, bad_hi, bad_v = _urdf_problems(u)
        for bad, given, param in (
            (bad_lo, p_lower, "joint_lower_limits"),
            (bad_hi, p_upper, "joint_upper_limits"),
            (bad_v, p_vel, "max_joint_velocity"),
        ):
            if bad and given is None:
                errors += [f"joint {name!r}: {why} (or set {param})" for why in bad]
        if u.lower is not None and not (bad_lo or bad_hi):
            lower[i], upper[i], pos_src[i] = u.lower, u.upper, URDF
        elif u.type == "continuous":
            warnings.append(
                f"joint {name!r} is continuous (no position limit in {urdf_where}): its "
                f"commands stay within the demonstrated range [{lower[i]:.4g}, {upper[i]:.4g}]"
            )
        if u.velocity is not None and not bad_v:
            velocity[i], vel_src[i] = u.velocity, URDF
    if errors:
        raise ValueError(
            f"joint limits from {urdf_where} cannot be used: "
            + "; ".join(errors)
            + ". Fix the URDF, or set the parameter for that limit"
        )
    urdf_lower, urdf_upper = lower.copy(), upper.copy()
    urdf_vel = velocity.copy()
    for values, target, src, param, side in (
        (p_lower, lower, pos_src, "joint_lower_limits", "lower"),
        (p_upper, upper, pos_src, "joint_upper_limits", "upper"),
        (p_vel, velocity, vel_src, "max_joint_velocity", "velocity"),
    ):
        if values is None:
            continue
        for i, name in enumerate(joints):
            from_urdf = src[i] == URDF
            v = float(values[i])
            if from_urdf and side == "lower" and v < urdf_lower[i]:
                warnings.append(
                    f"{param}[{i}]={v:g} is below the URDF's lower limit {urdf_lower[i]:g} of "
                    f"joint {name!r}: the URDF's is used"
                )
                v = urdf_lower[i]
            elif from_urdf and side == "upper" and v > urdf_upper[i]:
                warnings.append(
                    f"{param}[{i}]={v:g} is above the URDF's upper limit {urdf_upper[i]:g} of "
                    f"joint {name!r}: the URDF's is used"
                )
                v = urdf_upper[i]
            elif from_urdf and side == "velocity" and v > urdf_vel[i]:
                warnings.append(
                    f"{param}[{i}]={v:g} is above the URDF's velocity limit {urdf_vel[i]:g} "
                    f"of joint {name!r}: the URDF's is used"
                )
                v = urdf_vel[i]
            target[i] = v
    if p_lower is not None or p_upper is not None:
        pos_src = [PARAMETER] * dim
    if p_vel is not None:
        vel_src = [PARAMETER] * dim
    elif p_lower is not None or p_upper is not None:
        # explicit ranges without velocities: cross the range in one second at most, unless
        # the URDF knows better
        for i in range(dim):
            if vel_src[i] == DEMONSTRATIONS:
                velocity[i] = upper[i] - lower[i]
    if urdf is None:
        for i, name in enumerate(joints):
            weak = [
                kind
                for kind, src in (("position", pos_src[i]), ("velocity", vel_src[i]))
                if src == DEMONSTRATIONS
            ]
            if weak:
                warnings.append(
                    f"joint {name!r}: no URDF given, {' and '.join(weak)} limits from the "
                    f"demonstrated range ([{lower[i]:.4g}, {upper[i]:.4g}], "
                    f"{velocity[i]:.4g}/s, widened by limit_margin_frac="
                    f"{params.limit_margin_frac:g}); set robot_description_file or "
                    "robot_description_topic (or the limit parameters)"
                )
    try:
        limits = SafetyLimits(lower, upper, velocity)
    except ValueError as exc:
        raise ValueError(
            f"joint limits of {list(joints)} (joint_lower_limits/joint_upper_limits/"
            f"max_joint_velocity, {urdf_where}): {exc}"
        ) from exc
    return limits, LimitSources(tuple(joints), tuple(pos_src), tuple(vel_src), tuple(warnings))


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
