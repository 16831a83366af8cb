"""The UR5e + parallel gripper URDF (primitive geometry), generated here, checked in as
`description/urdf/ur5e_gripper.urdf`.

    python -m diffusion_policy_node.sim.ur5e_description description/urdf/ur5e_gripper.urdf

Kinematics: Universal Robots' nominal UR5e parameters (ur_description
`config/ur5e/default_kinematics.yaml`: d1 = 0.1625, a2 = -0.425, a3 = -0.3922, d4 = 0.1333,
d5 = 0.0997, d6 = 0.0996), with the same link frames and joint origins as ur_description's
`ur.urdf.xacro` (base_link -> base_link_inertia rotated by pi about z, flange, tool0).
Joint limits: ur_description `config/ur5e/joint_limits.yaml`: position +-2 pi (elbow +-pi),
velocity pi rad/s (180 deg/s) for every joint, effort 150 N m (base, shoulder, elbow) and
28 N m (wrists). Masses: ur_description `config/ur5e/physical_parameters.yaml`; inertias are
those of the primitive shapes (MuJoCo and Gazebo need plausible values, not exact ones).

Geometry: cylinders, capsules-as-cylinders and boxes only (cheap to render on a CPU), placed
over the UR5e's real link offsets. Gripper: a palm on tool0 and two fingers on prismatic joints
along tool0's y axis: `gripper_finger_joint` (0 = closed .. 0.04 m = open per finger, 8 cm
between the fingers) and `gripper_right_finger_joint`, a URDF mimic of it (MuJoCo: an equality
constraint, see `sim/robot_model.py`). `gripper_tcp` (fixed) is the grasp centre between the
fingertips. Cameras are not part of URDF; the sim and the Gazebo files add them.

The generated text is deterministic; `tests/unit/test_pick_place.py` checks that the checked-in
file is this module's output, so edit this module and regenerate, never the file.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

PI = math.pi
ARM_JOINTS: tuple[str, ...] = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
GRIPPER_JOINT = "gripper_finger_joint"
GRIPPER_MIMIC_JOINT = "gripper_right_finger_joint"
GRIPPER_RANGE: tuple[float, float] = (0.0, 0.04)  # m per finger
GRIPPER_VELOCITY = 0.2  # m/s per finger (a fast parallel gripper: closes in 0.2 s)
GRIPPER_EFFORT = 40.0  # N

# UR5e DH parameters (m), ur_description default_kinematics.yaml.
D1, A2, A3, D4, D5, D6 = 0.1625, -0.425, -0.3922, 0.1333, 0.0997, 0.0996
# (lower, upper, velocity, effort) per arm joint, ur_description joint_limits.yaml (ur5e).
JOINT_LIMITS: dict[str, tuple[float, float, float, float]] = {
    "shoulder_pan_joint": (-2 * PI, 2 * PI, PI, 150.0),
    "shoulder_lift_joint": (-2 * PI, 2 * PI, PI, 150.0),
    "elbow_joint": (-PI, PI, PI, 150.0),
    "wrist_1_joint": (-2 * PI, 2 * PI, PI, 28.0),
    "wrist_2_joint": (-2 * PI, 2 * PI, PI, 28.0),
    "wrist_3_joint": (-2 * PI, 2 * PI, PI, 28.0),
}
# Link masses (kg), ur_description physical_parameters.yaml (ur5e).
MASSES = {
    "base_link_inertia": 4.0,
    "shoulder_link": 3.761,
    "upper_arm_link": 8.058,
    "forearm_link": 2.846,
    "wrist_1_link": 1.37,
    "wrist_2_link": 1.3,
    "wrist_3_link": 0.365,
}
# Gripper geometry (m), in tool0's frame (z out of the flange, fingers slide along y).
PALM_HALF = (0.025, 0.055, 0.02)  # half sizes of the palm box, from z = 0 to 2 * PALM_HALF[2]
FINGER_HALF = (0.012, 0.006, 0.045)  # half sizes of one finger box
FINGER_BASE_Z = 2 * PALM_HALF[2]  # fingers hang from the palm's far face
TCP_Z = FINGER_BASE_Z + 2 * FINGER_HALF[2] - 0.018  # grasp centre, 18 mm above the tips

# Geometry per link: (kind, size, xyz, rpy). kind "cylinder": size (radius, length) along the
# shape's z; "box": size (x, y, z) full lengths. Link frames are ur_description's.
_HALF_PI = PI / 2
_GEOMETRY: dict[str, list[tuple[str, tuple[float, ...], tuple[float, ...], tuple[float, ...]]]] = {
    "base_link_inertia": [("cylinder", (0.075, 0.09), (0, 0, 0.045), (0, 0, 0))],
    "shoulder_link": [("cylinder", (0.06, 0.13), (0, 0, 0), (0, 0, 0))],
    "upper_arm_link": [
        ("cylinder", (0.06, 0.12), (0, 0, 0.138), (0, 0, 0)),  # shoulder-side housing
        ("cylinder", (0.05, 0.425), (A2 / 2, 0, 0.138), (0, _HALF_PI, 0)),  # tube
        ("cylinder", (0.05, 0.14), (A2, 0, 0.07), (0, 0, 0)),  # elbow housing
    ],
    "forearm_link": [
        ("cylinder", (0.038, 0.3922), (A3 / 2, 0, 0.0), (0, _HALF_PI, 0)),
        ("cylinder", (0.04, 0.15), (A3, 0, 0.065), (0, 0, 0)),  # wrist 1 housing
    ],
    "wrist_1_link": [("cylinder", (0.04, 0.11), (0, 0, 0), (0, 0, 0))],
    "wrist_2_link": [("cylinder", (0.04, 0.1), (0, 0, 0), (0, 0, 0))],
    "wrist_3_link": [("cylinder", (0.038, 0.04), (0, 0, -0.02), (0, 0, 0))],
    "gripper_base_link": [
        ("box", tuple(2 * h for h in PALM_HALF), (0, 0, PALM_HALF[2]), (0, 0, 0))
    ],
    "gripper_left_finger": [
        ("box", tuple(2 * h for h in FINGER_HALF), (0, FINGER_HALF[1], FINGER_HALF[2]), (0, 0, 0))
    ],
    "gripper_right_finger": [
        (
            "box",
            tuple(2 * h for h in FINGER_HALF),
            (0, -FINGER_HALF[1], FINGER_HALF[2]),
            (0, 0, 0),
        )
    ],
}
_EXTRA_MASSES = {
    "gripper_base_link": 0.4,
    "gripper_left_finger": 0.05,
    "gripper_right_finger": 0.05,
}
LINK_COLORS = {
    "base_link_inertia": "0.25 0.25 0.27 1",
    "shoulder_link": "0.55 0.70 0.85 1",
    "upper_arm_link": "0.80 0.82 0.85 1",
    "forearm_link": "0.80 0.82 0.85 1",
    "wrist_1_link": "0.55 0.70 0.85 1",
    "wrist_2_link": "0.55 0.70 0.85 1",
    "wrist_3_link": "0.25 0.25 0.27 1",
    "gripper_base_link": "0.15 0.15 0.15 1",
    "gripper_left_finger": "0.95 0.60 0.10 1",
    "gripper_right_finger": "0.95 0.60 0.10 1",
}


def _f(x: float) -> str:
    """Shortest exact-enough text for a number (deterministic)."""
    text = f"{x:.10g}"
    return "0" if text == "-0" else text


def _v(values: tuple[float, ...]) -> str:
    return " ".join(_f(v) for v in values)


def _shape_inertia(kind: str, size: tuple[float, ...], mass: float) -> tuple[float, float, float]:
    """Principal moments (shape frame) of a solid cylinder (r, l) or box (x, y, z)."""
    if kind == "cylinder":
        r, length = size
        side = mass * (3 * r * r + length * length) / 12
        return side, side, mass * r * r / 2
    x, y, z = size
    return mass * (y * y + z * z) / 12, mass * (x * x + z * z) / 12, mass * (x * x + y * y) / 12


def _link(name: str) -> str:
    shapes = _GEOMETRY.get(name, [])
    mass = MASSES.get(name, _EXTRA_MASSES.get(name, 0.0))
    if not shapes:
        return f'  <link name="{name}"/>'
    lines = [f'  <link name="{name}">']
    for kind, size, xyz, rpy in shapes:
        if kind == "cylinder":
            geometry = f'<cylinder radius="{_f(size[0])}" length="{_f(size[1])}"/>'
        else:
            geometry = f'<box size="{_v(size)}"/>'
        origin = f'<origin xyz="{_v(xyz)}" rpy="{_v(rpy)}"/>'
        lines.append(f"    <visual>{origin}<geometry>{geometry}</geometry>")
        lines.append(
            f'      <material name="{name}_color"><color rgba="{LINK_COLORS[name]}"/></material>'
        )
        lines.append("    </visual>")
        lines.append(f"    <collision>{origin}<geometry>{geometry}</geometry></collision>")
    if mass > 0:
        # Point the inertia at the first (largest) shape; the axis-aligned approximation is
        # good enough for position-servoed joints with gravity compensation.
        kind, size, xyz, rpy = shapes[0] if len(shapes) == 1 else shapes[1]
        ixx, iyy, izz = _shape_inertia(kind, size, mass)
        lines.append("    <inertial>")
        lines.append(f'      <origin xyz="{_v(xyz)}" rpy="{_v(rpy)}"/>')
        lines.append(f'      <mass value="{_f(mass)}"/>')
        lines.append(
            f'      <inertia ixx="{_f(ixx)}" ixy="0" ixz="0" iyy="{_f(iyy)}" iyz="0" '
            f'izz="{_f(izz)}"/>'
        )
        lines.append("    </inertial>")
    lines.append("  </link>")
    return "\n".join(lines)


def _joint(
    name: str,
    kind: str,
    parent: str,
    child: str,
    xyz: tuple[float, ...],
    rpy: tuple[float, ...],
    axis: str | None = None,
    limit: tuple[float, float, float, float] | None = None,
    mimic: str | None = None,
) -> str:
    lines = [f'  <joint name="{name}" type="{kind}">']
    lines.append(f'    <parent link="{parent}"/>')
    lines.append(f'    <child link="{child}"/>')
    lines.append(f'    <origin xyz="{_v(xyz)}" rpy="{_v(rpy)}"/>')
    if axis is not None:
        lines.append(f'    <axis xyz="{axis}"/>')
    if limit is not None:
        lower, upper, velocity, effort = limit
        lines.append(
            f'    <limit lower="{_f(lower)}" upper="{_f(upper)}" velocity="{_f(velocity)}" '
            f'effort="{_f(effort)}"/>'
        )
    if mimic is not None:
        lines.append(f'    <mimic joint="{mimic}" multiplier="1" offset="0"/>')
    lines.append("  </joint>")
    return "\n".join(lines)


def ur5e_gripper_urdf() -> str:
    """The URDF text (the content of description/urdf/ur5e_gripper.urdf)."""
    arm = [
        # (joint, parent, child, xyz, rpy), ur_description ur.urdf.xacro with ur5e kinematics.
        ("shoulder_pan_joint", "base_link_inertia", "shoulder_link", (0, 0, D1), (0, 0, 0)),
        ("shoulder_lift_joint", "shoulder_link", "upper_arm_link", (0, 0, 0), (_HALF_PI, 0, 0)),
        ("elbow_joint", "upper_arm_link", "forearm_link", (A2, 0, 0), (0, 0, 0)),
        ("wrist_1_joint", "forearm_link", "wrist_1_link", (A3, 0, D4), (0, 0, 0)),
        ("wrist_2_joint", "wrist_1_link", "wrist_2_link", (0, -D5, 0), (_HALF_PI, 0, 0)),
        ("wrist_3_joint", "wrist_2_link", "wrist_3_link", (0, D6, 0), (_HALF_PI, PI, PI)),
    ]
    links = [
        "world",
        "base_link",
        "base_link_inertia",
        *[a[2] for a in arm],
        "flange",
        "tool0",
        "gripper_base_link",
        "gripper_left_finger",
        "gripper_right_finger",
        "gripper_tcp",
    ]
    out = [
        '<?xml version="1.0"?>',
        "<!-- Generated by diffusion_policy_node/sim/ur5e_description.py; do not edit. -->",
        "<!-- UR5e (Universal Robots' published kinematics and joint limits, primitive",
        "     geometry) with a parallel two-finger gripper. -->",
        '<robot name="ur5e_gripper">',
    ]
    out += [_link(name) for name in links]
    out.append(_joint("world_joint", "fixed", "world", "base_link", (0, 0, 0), (0, 0, 0)))
    out.append(
        _joint("base_link-base_link_inertia", "fixed", "base_link", "base_link_inertia",
               (0, 0, 0), (0, 0, PI))
    )  # fmt: skip
    for joint, parent, child, xyz, rpy in arm:
        out.append(
            _joint(joint, "revolute", parent, child, xyz, rpy, "0 0 1", JOINT_LIMITS[joint])
        )
    out.append(
        _joint("wrist_3-flange", "fixed", "wrist_3_link", "flange", (0, 0, 0),
               (0, -_HALF_PI, -_HALF_PI))
    )  # fmt: skip
    out.append(
        _joint("flange-tool0", "fixed", "flange", "tool0", (0, 0, 0), (_HALF_PI, 0, _HALF_PI))
    )
    out.append(
        _joint("tool0-gripper_base", "fixed", "tool0", "gripper_base_link", (0, 0, 0), (0, 0, 0))
    )
    gripper_limit = (*GRIPPER_RANGE, GRIPPER_VELOCITY, GRIPPER_EFFORT)
    out.append(
        _joint(GRIPPER_JOINT, "prismatic", "gripper_base_link", "gripper_left_finger",
               (0, 0, FINGER_BASE_Z), (0, 0, 0), "0 1 0", gripper_limit)
    )  # fmt: skip
    out.append(
        _joint(GRIPPER_MIMIC_JOINT, "prismatic", "gripper_base_link", "gripper_right_finger",
               (0, 0, FINGER_BASE_Z), (0, 0, 0), "0 -1 0", gripper_limit, mimic=GRIPPER_JOINT)
    )  # fmt: skip
    out.append(
        _joint("gripper_base-tcp", "fixed", "gripper_base_link", "gripper_tcp",
               (0, 0, TCP_Z), (0, 0, 0))
    )  # fmt: skip
    out.append("</robot>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m diffusion_policy_node.sim.ur5e_description OUT.urdf", file=sys.stderr
        )
        return 2
    Path(args[0]).write_text(ur5e_gripper_urdf())
    return 0


if __name__ == "__main__":
    sys.exit(main())
