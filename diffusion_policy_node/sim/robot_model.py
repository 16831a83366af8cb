"""MuJoCo model of the pick-and-place scene: the UR5e + gripper URDF loaded with `mujoco.MjSpec`,
then cameras, servos, table, cube, bins, cue, lights and floor added through the MjSpec API
(a URDF cannot declare cameras or actuators). ROS-free.

World frame: the robot base at the origin on the table top (z = 0), the arm reaching along +x
(ur_description's base_link). The left bin (+y) is red, the right bin (-y) is blue; the cue,
a flat marker at the far edge of the table, takes one of the two colours per episode.

Collision groups: robot geoms contype 1 / conaffinity 2 (no self-collisions; the UR5e's
links cannot reach each other in the expert's workspace), static scene geoms 2 / 1 (they touch
the robot, not each other), the cube 3 / 3 (touches everything).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from diffusion_policy_node.sim.ur5e_description import (
    ARM_JOINTS,
    GRIPPER_JOINT,
    GRIPPER_MIMIC_JOINT,
    ur5e_gripper_urdf,
)

SCENE_CAMERA = "scene_camera"
WRIST_CAMERA = "wrist_camera"
CAMERAS: tuple[str, str] = (SCENE_CAMERA, WRIST_CAMERA)
BINS: tuple[str, str] = ("left", "right")
BIN_COLORS = {"left": (0.85, 0.15, 0.15, 1.0), "right": (0.15, 0.30, 0.90, 1.0)}
CUBE_HALF = 0.02  # m, half edge of the cube
CUBE_MASS = 0.05  # kg
TABLE_HALF = (0.55, 0.65, 0.02)  # m, half sizes of the table box; its top is z = 0
TABLE_CENTER_XY = (0.40, 0.0)
BIN_INNER_HALF = 0.07  # m, half width of a bin's inside (square)
BIN_WALL = 0.008  # m, wall thickness
BIN_HEIGHT = 0.05  # m, wall height
CUE_POS = (0.78, 0.0)  # m, centre of the cue marker on the table
CUE_HALF = (0.05, 0.09, 0.004)
FINGER_GEOMS = ("gripper_left_finger_geom0", "gripper_right_finger_geom0")
# Position-servo stiffness per arm joint (N m/rad), critically damped at the home pose.
ARM_KP = (2500.0, 2500.0, 1500.0, 400.0, 400.0, 200.0)
# Wrist camera on tool0 (z out of the flange): behind the palm, looking past the fingertips,
# tilted from tool0's z towards its +x. The Gazebo description uses the same pose.
WRIST_CAMERA_POS = (-0.075, 0.0, 0.015)  # m, in tool0
WRIST_CAMERA_TILT = math.radians(22.0)
WRIST_CAMERA_FOVY = 75.0  # deg
GRIPPER_KP = 1500.0  # N/m
GRIPPER_FORCE = 25.0  # N, the servo's force limit (the grasp force when closed on the cube)


@dataclass(frozen=True)
class SceneLayout:
    """Where the static scene sits (world frame, m)."""

    bin_centers: dict[str, tuple[float, float]]
    scene_camera_pos: tuple[float, float, float] = (1.10, 0.0, 0.85)
    scene_camera_target: tuple[float, float, float] = (0.36, 0.0, 0.12)
    scene_camera_fovy: float = 62.0


DEFAULT_LAYOUT = SceneLayout(bin_centers={"left": (0.28, 0.40), "right": (0.28, -0.40)})


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF rpy (fixed axes x, y, z) as a rotation matrix: Rz(yaw) Ry(pitch) Rx(roll)."""
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch), math.cos(yaw),
        math.sin(yaw),
    )  # fmt: skip
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


def _mat_to_quat(mat: np.ndarray) -> list[float]:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(mat, dtype=np.float64).reshape(9))
    return quat.tolist()


def _look_at_quat(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> list[float]:
    """Camera orientation looking from `pos` at `target` (MuJoCo cameras look along -z)."""
    back = pos - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    return _mat_to_quat(np.column_stack([right, cam_up, back]))


def build_spec(
    physics_dt: float = 0.002,
    max_render_size: int = 256,
    layout: SceneLayout = DEFAULT_LAYOUT,
) -> mujoco.MjSpec:
    """The scene as an MjSpec (compile with `spec.compile()`)."""
    spec = mujoco.MjSpec.from_string(ur5e_gripper_urdf())
    spec.modelname = "ur5e_pick_place"
    spec.option.timestep = physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 5.0
    spec.visual.global_.offwidth = max_render_size
    spec.visual.global_.offheight = max_render_size
    spec.visual.headlight.ambient = [0.45, 0.45, 0.45]
    spec.visual.headlight.diffuse = [0.35, 0.35, 0.35]
    spec.visual.headlight.specular = [0.0, 0.0, 0.0]
    spec.visual.quality.shadowsize = 0

    # Robot geoms: names, colours from the URDF materials (dropped by the importer), groups.
    colors = _urdf_colors()
    for body in spec.bodies:
        for i, geom in enumerate(body.geoms):
            geom.name = f"{body.name}_geom{i}"
            geom.rgba = colors.get(body.name, (0.7, 0.7, 0.7, 1.0))
            geom.contype, geom.conaffinity = 1, 2
            if body.name.startswith("gripper_") and "finger" in body.name:
                geom.friction = [1.5, 0.02, 0.002]
                geom.condim = 4
        if body.name not in ("world", "base_link", "base_link_inertia"):
            body.gravcomp = 1.0  # servos hold the pose, like the real controller

    for name in ARM_JOINTS:
        joint = spec.joint(name)
        joint.damping = [2.0 if name in ARM_JOINTS[:3] else 0.5, 0.0, 0.0]
        joint.armature = 0.1 if name in ARM_JOINTS[:3] else 0.02
    for name in (GRIPPER_JOINT, GRIPPER_MIMIC_JOINT):
        spec.joint(name).damping = [5.0, 0.0, 0.0]
        spec.joint(name).armature = 0.01

    # Servos: ctrlrange = the URDF limits (the published ones).
    for name, kp in zip(ARM_JOINTS, ARM_KP, strict=True):
        act = spec.add_actuator(name=f"{name}_servo", target=name)
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        act.set_to_position(kp=kp, dampratio=1.0)
        act.ctrlrange = list(spec.joint(name).range)  # as parsed from the URDF
        act.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    grip = spec.add_actuator(name="gripper_servo", target=GRIPPER_JOINT)
    grip.trntype = mujoco.mjtTrn.mjTRN_JOINT
    grip.set_to_position(kp=GRIPPER_KP, kv=40.0)
    grip.ctrlrange = list(spec.joint(GRIPPER_JOINT).range)
    grip.ctrllimited = mujoco.mjtLimited.mjLIMITED_TRUE
    grip.forcerange = [-GRIPPER_FORCE, GRIPPER_FORCE]
    grip.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
    spec.add_exclude(bodyname1="gripper_left_finger", bodyname2="gripper_right_finger")

    # Grasp centre and wrist camera, on the gripper's frames (fused into wrist_3 at compile).
    spec.body("gripper_tcp").add_site(name="tcp", size=[0.005, 0, 0], group=5)
    tilt = WRIST_CAMERA_TILT
    cam_dir = np.array([math.sin(tilt), 0.0, math.cos(tilt)])  # in tool0: forward, towards +x
    cam_pos = np.array(WRIST_CAMERA_POS)
    cam_rot = np.column_stack(
        [np.array([0.0, -1.0, 0.0]), np.cross(-cam_dir, [0.0, -1.0, 0.0]), -cam_dir]
    )
    spec.body("tool0").add_camera(
        name=WRIST_CAMERA, pos=cam_pos.tolist(), quat=_mat_to_quat(cam_rot), fovy=WRIST_CAMERA_FOVY
    )
    spec.body("tool0").add_geom(
        name="wrist_camera_housing",
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.015, 0.02, 0.015],
        pos=(cam_pos - 0.012 * cam_dir).tolist(),
        rgba=[0.1, 0.1, 0.1, 1.0],
        contype=1,
        conaffinity=2,
    )

    world = spec.worldbody
    cam_pos_w = np.asarray(layout.scene_camera_pos, dtype=float)
    world.add_camera(
        name=SCENE_CAMERA,
        pos=cam_pos_w.tolist(),
        quat=_look_at_quat(
            cam_pos_w, np.asarray(layout.scene_camera_target), np.array([0, 0, 1.0])
        ),
        fovy=layout.scene_camera_fovy,
    )
    world.add_light(
        name="sun", pos=[0.5, 0.3, 2.0], dir=[-0.2, -0.1, -1.0], diffuse=[0.5, 0.5, 0.5],
        castshadow=False,
    )  # fmt: skip
    static = {"contype": 2, "conaffinity": 1}
    world.add_geom(
        name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.05],
        pos=[0.0, 0.0, -0.75], rgba=[0.35, 0.37, 0.40, 1.0], contype=0, conaffinity=0,
    )  # fmt: skip
    world.add_geom(
        name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF),
        pos=[TABLE_CENTER_XY[0], TABLE_CENTER_XY[1], -TABLE_HALF[2]],
        rgba=[0.78, 0.74, 0.66, 1.0], **static,
    )  # fmt: skip
    for side, (bx, by) in layout.bin_centers.items():
        rgba = list(BIN_COLORS[side])
        outer = BIN_INNER_HALF + BIN_WALL
        half_h = BIN_HEIGHT / 2
        walls = [
            ((bx + outer - BIN_WALL / 2, by), (BIN_WALL / 2, outer, half_h)),
            ((bx - outer + BIN_WALL / 2, by), (BIN_WALL / 2, outer, half_h)),
            ((bx, by + outer - BIN_WALL / 2), (outer, BIN_WALL / 2, half_h)),
            ((bx, by - outer + BIN_WALL / 2), (outer, BIN_WALL / 2, half_h)),
        ]
        for k, ((x, y), size) in enumerate(walls):
            world.add_geom(
                name=f"bin_{side}_wall{k}", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(size),
                pos=[x, y, half_h], rgba=rgba, **static,
            )  # fmt: skip
        world.add_geom(
            name=f"bin_{side}_floor", type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[BIN_INNER_HALF, BIN_INNER_HALF, 0.001], pos=[bx, by, 0.001],
            rgba=[0.5 * c for c in rgba[:3]] + [1.0], contype=0, conaffinity=0,
        )  # fmt: skip
    world.add_geom(
        name="cue", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(CUE_HALF),
        pos=[CUE_POS[0], CUE_POS[1], CUE_HALF[2]], rgba=list(BIN_COLORS["left"]), **static,
    )  # fmt: skip
    cube = world.add_body(name="cube", pos=[0.45, 0.0, CUBE_HALF])
    cube.add_freejoint(name="cube_joint")
    cube.add_geom(
        name="cube_geom", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3, mass=CUBE_MASS,
        rgba=[0.95, 0.85, 0.15, 1.0], friction=[1.2, 0.02, 0.002], condim=4,
        contype=3, conaffinity=3,
    )  # fmt: skip
    return spec


def _urdf_colors() -> dict[str, tuple[float, float, float, float]]:
    from diffusion_policy_node.sim import ur5e_description

    return {
        name: tuple(float(v) for v in rgba.split())  # type: ignore[misc]
        for name, rgba in ur5e_description.LINK_COLORS.items()
    }


def build_model(
    physics_dt: float = 0.002,
    max_render_size: int = 256,
    layout: SceneLayout = DEFAULT_LAYOUT,
) -> mujoco.MjModel:
    """The compiled scene."""
    return build_spec(physics_dt, max_render_size, layout).compile()
