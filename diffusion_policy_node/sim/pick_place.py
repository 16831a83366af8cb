"""Pick-and-place task for a UR5e with a parallel gripper in MuJoCo, two cameras (ROS-free).

Each episode places a yellow cube at a random position and yaw on the table in front of the
arm and lights the cue marker red or blue. The cube must end up resting inside the bin of the
cue's colour (red: left bin, +y; blue: right bin, -y). The cue colour is visible only in the
images (the scene camera sees it; the wrist camera too from the home pose); the arm starts from
the same home pose every episode and the joint state carries nothing about it.
`target_bin()` exists for evaluation and the expert only.

Outcome, checked every physics step and latched until the next `reset` (physics keeps running
if stepped further): success = the cube at rest (speed < `rest_speed`) inside the target bin,
not touching the fingers, before `time_limit`; failure = the cube at rest in the other bin
(`wrong_bin`), the cube off the table, an arm link or the palm touching the table, a bin or
the cue (`collided`), or the time limit.

Interface as `sim.arm_task.ArmTask` (so `sim.engine.SimEngine` hosts either): `reset(seed)`,
`set_joint_targets(q)` for the six UR joints, `set_gripper_target(width)` for
`gripper_finger_joint` (0 closed .. 0.04 m open), `step_physics(duration)`, `render(camera=)`
for "scene_camera" and "wrist_camera". Not thread-safe; use from one thread.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import ClassVar

# MUJOCO_GL must be set before mujoco is imported; egl renders headless (GPU or Mesa on CPU).
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from diffusion_policy_node.sim.robot_model import (
    BIN_COLORS,
    BIN_HEIGHT,
    BIN_INNER_HALF,
    BINS,
    CAMERAS,
    CUBE_HALF,
    DEFAULT_LAYOUT,
    FINGER_GEOMS,
    SCENE_CAMERA,
    TABLE_CENTER_XY,
    TABLE_HALF,
    build_model,
)
from diffusion_policy_node.sim.task_common import (
    MujocoTask,
    Renderers,
    SimTaskConfig,
    check_range,
)
from diffusion_policy_node.sim.ur5e_description import (
    ARM_JOINTS,
    GRIPPER_JOINT,
    GRIPPER_RANGE,
)

JOINT_NAMES: tuple[str, ...] = ARM_JOINTS
STATE_JOINT_NAMES: tuple[str, ...] = (*ARM_JOINTS, GRIPPER_JOINT)
# The home pose: tool pointing down, the grasp centre 0.30 m above the table at (0.40, 0):
# solved once with `sim.pick_place_expert.solve_ik` from UR's usual [0, -pi/2, pi/2, -pi/2,
# -pi/2, 0]; tests/unit/test_pick_place.py checks it.
HOME_QPOS: np.ndarray = np.array(
    [
        -0.339748522922,
        -1.832411511677,
        1.989710921633,
        -1.728095736545,
        -1.570796327,
        -0.339748522306,
    ]
)
HOME_TCP: tuple[float, float, float] = (0.40, 0.0, 0.30)
GRIPPER_OPEN = GRIPPER_RANGE[1]


def _check_range(name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    check_range("PickPlaceConfig", name, value, lo, hi)


@dataclass(frozen=True)
class PickPlaceConfig(SimTaskConfig):
    """The pick-and-place task's settings (besides `SimTaskConfig`'s, whose time_limit is 20 s
    here; the image size is both cameras'); validated on construction.

    cube_x_range / cube_y_range / cube_yaw_range: the cube's random pose on the table (m, rad).
    rest_speed: cube speed (m/s) below which it counts as resting.
    """

    time_limit: float = 20.0
    cube_x_range: tuple[float, float] = (0.38, 0.56)
    cube_y_range: tuple[float, float] = (-0.15, 0.15)
    cube_yaw_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    rest_speed: float = 0.02

    positive: ClassVar[tuple[str, ...]] = ("rest_speed",)

    def _check(self) -> None:
        _check_range("cube_x_range", self.cube_x_range, 0.30, 0.65)
        _check_range("cube_y_range", self.cube_y_range, -0.25, 0.25)
        _check_range("cube_yaw_range", self.cube_yaw_range, -math.pi, math.pi)


@dataclass(frozen=True)
class PickPlaceResult:
    """Episode status: `done` once the cube rests in a bin, left the table, the arm collided,
    or time ran out; `success` only for the cube at rest in the cued bin."""

    done: bool
    success: bool
    collided: bool
    wrong_bin: bool = False
    dropped: bool = False


class PickPlaceTask(MujocoTask):
    """See the module docstring."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    state_joint_names: tuple[str, ...] = STATE_JOINT_NAMES
    camera_names: tuple[str, ...] = CAMERAS
    has_gripper = True

    def __init__(self, config: PickPlaceConfig | None = None) -> None:
        self.config = config if config is not None else PickPlaceConfig()
        cfg = self.config
        self.model = build_model(cfg.physics_dt, cfg.max_render_size)
        self.data = mujoco.MjData(self.model)
        m = self.model
        jid = [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n) for n in STATE_JOINT_NAMES]
        self._qpos_adr = np.array([m.jnt_qposadr[j] for j in jid])
        self._dof_adr = np.array([m.jnt_dofadr[j] for j in jid])
        mimic = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "gripper_right_finger_joint")
        self._mimic_qpos_adr = int(m.jnt_qposadr[mimic])
        self._arm_act = np.array(
            [mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, f"{n}_servo") for n in ARM_JOINTS]
        )
        self._grip_act = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, "gripper_servo")
        self._limits = m.jnt_range[jid[:6]].copy()  # the URDF's limits, as MuJoCo parsed them
        self._tcp_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        cube_joint = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "cube_joint")
        self._cube_qpos = int(m.jnt_qposadr[cube_joint])
        self._cube_dof = int(m.jnt_dofadr[cube_joint])
        self._cube_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "cube_geom")
        self._cue_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "cue")
        self._finger_geoms = frozenset(
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in FINGER_GEOMS
        )
        world = 0
        robot_bodies = {i for i in range(m.nbody) if i != world and m.body(i).name != "cube"}
        self._robot_geoms = frozenset(
            g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in robot_bodies
        )
        self._arm_geoms = self._robot_geoms - self._finger_geoms
        self._scene_geoms = frozenset(
            g
            for g in range(m.ngeom)
            if int(m.geom_bodyid[g]) == world and int(m.geom_contype[g]) == 2
        )
        self._cameras = {n: mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, n) for n in CAMERAS}
        self._renderers = Renderers(m, "PickPlaceTask", "PickPlaceConfig")
        self._arm_ctrl = self._arm_act
        self._arm_qpos, self._arm_dof = self._qpos_adr[:6], self._dof_adr[:6]
        self._target_bin = BINS[0]
        self._result = PickPlaceResult(False, False, False)
        self._start_episodes()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """Start an episode: home pose, gripper open, time 0, cube pose and cue from `seed`
        (see `MujocoTask.reset`)."""
        rng = self._next_episode_seed(seed)
        cfg = self.config
        x = rng.uniform(*cfg.cube_x_range)
        y = rng.uniform(*cfg.cube_y_range)
        yaw = rng.uniform(*cfg.cube_yaw_range)
        self._target_bin = BINS[int(rng.integers(0, 2))]

        mujoco.mj_resetData(self.model, self.data)
        d = self.data
        d.qpos[self._qpos_adr[:6]] = HOME_QPOS
        d.qpos[self._qpos_adr[6]] = GRIPPER_OPEN
        d.qpos[self._mimic_qpos_adr] = GRIPPER_OPEN
        d.ctrl[self._arm_act] = HOME_QPOS
        d.ctrl[self._grip_act] = GRIPPER_OPEN
        d.qpos[self._cube_qpos : self._cube_qpos + 3] = [x, y, CUBE_HALF]
        d.qpos[self._cube_qpos + 3 : self._cube_qpos + 7] = [
            math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)
        ]  # fmt: skip
        self.model.geom_rgba[self._cue_geom] = BIN_COLORS[self._target_bin]
        mujoco.mj_forward(self.model, d)
        self._result = PickPlaceResult(False, False, False)

    def set_gripper_target(self, width: float) -> None:
        """Set `gripper_finger_joint`'s target (m per finger, clipped to [0, 0.04])."""
        value = float(np.asarray(width, dtype=float).reshape(-1)[0])
        if not math.isfinite(value):
            raise ValueError(f"PickPlaceTask: gripper target {width!r} is not finite")
        self.data.ctrl[self._grip_act] = min(max(value, GRIPPER_RANGE[0]), GRIPPER_RANGE[1])

    def step(self, joint_targets: np.ndarray, gripper: float | None = None) -> PickPlaceResult:
        """Apply the targets and simulate one control step of `control_dt`."""
        self.set_joint_targets(joint_targets)
        if gripper is not None:
            self.set_gripper_target(gripper)
        return self.step_physics(self.config.control_dt)

    def _update_outcome(self) -> None:
        touching_fingers = False
        collided = False
        d = self.data
        for i in range(d.ncon):
            contact = d.contact[i]
            g1, g2 = int(contact.geom1), int(contact.geom2)
            if (g1 == self._cube_geom and g2 in self._finger_geoms) or (
                g2 == self._cube_geom and g1 in self._finger_geoms
            ):
                touching_fingers = True
            elif (g1 in self._arm_geoms and g2 in self._scene_geoms) or (
                g2 in self._arm_geoms and g1 in self._scene_geoms
            ):
                collided = True
        cube = self.cube_position()
        if collided:
            self._result = PickPlaceResult(True, False, True)
            return
        if cube[2] < -0.05 or not self._over_table(cube):
            self._result = PickPlaceResult(True, False, False, dropped=True)
            return
        resting = float(np.linalg.norm(d.qvel[self._cube_dof : self._cube_dof + 3])) < (
            self.config.rest_speed
        )
        if resting and not touching_fingers:
            inside = self.bin_containing(cube)
            if inside == self._target_bin:
                self._result = PickPlaceResult(True, True, False)
                return
            if inside is not None:
                self._result = PickPlaceResult(True, False, False, wrong_bin=True)
                return
        if d.time >= self.config.time_limit - 0.5 * self.config.physics_dt:
            self._result = PickPlaceResult(True, False, False)

    @staticmethod
    def _over_table(p: np.ndarray) -> bool:
        return (
            abs(p[0] - TABLE_CENTER_XY[0]) <= TABLE_HALF[0]
            and abs(p[1] - TABLE_CENTER_XY[1]) <= TABLE_HALF[1]
        )

    @staticmethod
    def bin_containing(p: np.ndarray) -> str | None:
        """The bin whose inside holds point `p` (below the rim), else None."""
        if not (0.0 < p[2] < BIN_HEIGHT):
            return None
        for name, (bx, by) in DEFAULT_LAYOUT.bin_centers.items():
            if abs(p[0] - bx) < BIN_INNER_HALF and abs(p[1] - by) < BIN_INNER_HALF:
                return name
        return None

    # ------------------------------------------------------------------ state
    @property
    def result(self) -> PickPlaceResult:
        return self._result

    @property
    def passed_side(self) -> str | None:
        """The bin the cube came to rest in once the episode ended there, else None (the
        counterpart of the reach task's side, for the engine's report)."""
        if self._result.success:
            return self._target_bin
        if self._result.wrong_bin:
            return BINS[1 - BINS.index(self._target_bin)]
        return None

    @property
    def home_joint_positions(self) -> np.ndarray:
        return HOME_QPOS.copy()

    def target_bin(self) -> str:
        """ "left" or "right": the bin the cue selects (evaluation/expert only)."""
        return self._target_bin

    def bin_center(self, name: str) -> np.ndarray:
        """(2,) table-plane centre of bin `name`."""
        return np.asarray(DEFAULT_LAYOUT.bin_centers[name], dtype=float)

    def state_positions(self) -> np.ndarray:
        """(7,) positions in `state_joint_names` order (the six arm joints, then the gripper)."""
        return self.data.qpos[self._qpos_adr].copy()

    def state_velocities(self) -> np.ndarray:
        return self.data.qvel[self._dof_adr].copy()

    def gripper_target(self) -> float:
        return float(self.data.ctrl[self._grip_act])

    def gripper_position(self) -> float:
        return float(self.data.qpos[self._qpos_adr[6]])

    def tcp_position(self) -> np.ndarray:
        """(3,) world position of the grasp centre between the fingertips."""
        return self.data.site_xpos[self._tcp_site].copy()

    def tcp_rotation(self) -> np.ndarray:
        """(3, 3) world orientation of the grasp frame (z: out of the gripper, y: fingers)."""
        return self.data.site_xmat[self._tcp_site].reshape(3, 3).copy()

    def cube_position(self) -> np.ndarray:
        return self.data.qpos[self._cube_qpos : self._cube_qpos + 3].copy()

    def cube_yaw(self) -> float:
        """Rotation of the cube about the vertical (rad), from its quaternion."""
        w, x, y, z = self.data.qpos[self._cube_qpos + 3 : self._cube_qpos + 7]
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))

    def cube_velocity(self) -> np.ndarray:
        return self.data.qvel[self._cube_dof : self._cube_dof + 3].copy()

    # ------------------------------------------------------------------ cameras
    def render(
        self, width: int | None = None, height: int | None = None, camera: str = SCENE_CAMERA
    ) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from `camera` (config size by default)."""
        width = self.config.image_width if width is None else width
        height = self.config.image_height if height is None else height
        self._renderers.check_size(width, height, self.config.max_render_size)
        if camera not in self._cameras:
            raise ValueError(f"PickPlaceTask.render: camera={camera!r} is not one of {CAMERAS}")
        return self._renderers.render(
            self.data, self._cameras[camera], width, height, self.config.max_render_size
        )

    def render_all(self) -> dict[str, np.ndarray]:
        """{camera: image} for every camera, config size."""
        return {name: self.render(camera=name) for name in CAMERAS}
