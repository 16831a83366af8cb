"""Reach-around-an-obstacle task for a 3-joint planar MuJoCo arm, rendered offscreen (ROS-free).

The arm has three position-controlled hinge joints about the vertical axis (base yaw, shoulder,
elbow); its links move above the table at a height that clears the low obstacle, and a fingertip
hangs down to table level. Each episode places a green target disc at a random reachable spot and
a red obstacle cylinder halfway between the fingertip's home position and the target, so the
straight line is blocked and the fingertip must pass the obstacle on the left or the right.

The goal is visible only in the image: the arm always starts from the same home pose, the state a
policy sees is the joint state, and `target_position()` exists for evaluation only. Success: the
fingertip comes within `success_radius` (in the table plane) of the target centre before
`time_limit`. Any arm geom touching the obstacle ends the episode as a failure. The first terminal
event is latched until the next `reset`; physics keeps running if stepped further.

Rendering uses a fixed overhead camera ("overhead"); `MUJOCO_GL` defaults to `egl`, which works
headless (GPU or Mesa on CPU). The task is not thread-safe: use it from one thread at a time.
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

from diffusion_policy_node.sim.task_common import (
    MujocoTask,
    Renderers,
    SimTaskConfig,
    check_range,
)

JOINT_NAMES: tuple[str, ...] = ("joint1", "joint2", "joint3")
# Link lengths (m) of the planar chain, base to fingertip.
LINK_LENGTHS: tuple[float, float, float] = (0.20, 0.17, 0.13)
JOINT_LIMIT = 2.6  # rad, symmetric limit of every joint
LINK_HEIGHT = 0.08  # m, height of the link axes above the table
FINGERTIP_RADIUS = 0.018  # m, radius of the fingertip capsule that reaches down to the table
FINGERTIP_BOTTOM = 0.02  # m, height of the lowest point of the fingertip axis
OBSTACLE_HEIGHT = 0.05  # m, below the links (they pass over it) but above the fingertip tip
CAMERA_NAME = "overhead"
# Fingertip home position (m, table plane); the home joint pose is its equal-bend IK solution.
HOME_EE_XY: tuple[float, float] = (0.0, 0.12)

_ARM_GEOMS = ("link1_geom", "link2_geom", "link3_geom", "fingertip_geom")

_MJCF = """
<mujoco model="dp_reach_arm">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{physics_dt}" integrator="implicitfast"/>
  <visual>
    <global offwidth="{max_render}" offheight="{max_render}"/>
    <headlight ambient="0.55 0.55 0.55" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <default>
    <joint type="hinge" axis="0 0 1" damping="0.05" armature="0.005"
           range="-{jlim} {jlim}"/>
    <geom contype="0" conaffinity="0" density="1000"/>
    <default class="arm">
      <geom type="capsule" size="0.012" contype="1" conaffinity="2" rgba="0.20 0.40 0.95 1"/>
    </default>
  </default>
  <worldbody>
    <geom name="table" type="plane" size="1 1 0.01" rgba="0.82 0.82 0.80 1"/>
    <camera name="{camera}" pos="0 0.2 0.72" xyaxes="1 0 0 0 1 0" fovy="45"/>
    <geom name="base_geom" type="cylinder" pos="0 0 0.04" size="0.035 0.04"
          rgba="0.25 0.25 0.25 1"/>
    <body name="link1" pos="0 0 {h}">
      <joint name="joint1"/>
      <geom name="link1_geom" class="arm" fromto="0 0 0 0 {l1} 0"/>
      <body name="link2" pos="0 {l1} 0">
        <joint name="joint2"/>
        <geom name="link2_geom" class="arm" fromto="0 0 0 0 {l2} 0"/>
        <body name="link3" pos="0 {l2} 0">
          <joint name="joint3"/>
          <geom name="link3_geom" class="arm" fromto="0 0 0 0 {l3} 0"/>
          <geom name="fingertip_geom" class="arm" size="{tip_r}"
                fromto="0 {l3} 0 0 {l3} {tip_dz}" rgba="1.0 0.65 0.0 1"/>
          <site name="ee" pos="0 {l3} {tip_dz}" size="0.005" group="5"/>
        </body>
      </body>
    </body>
    <body name="target" mocap="true" pos="0 0.35 0">
      <geom name="target_geom" type="cylinder" size="{target_r} 0.001" pos="0 0 0.001"
            rgba="0.10 0.80 0.20 1"/>
    </body>
    <body name="obstacle" mocap="true" pos="0 0.25 0">
      <geom name="obstacle_geom" type="cylinder" size="{obstacle_r} {obstacle_hh}"
            pos="0 0 {obstacle_hh}" contype="2" conaffinity="1" rgba="0.90 0.10 0.10 1"/>
    </body>
  </worldbody>
  <actuator>
    <position name="joint1_act" joint="joint1" kp="{kp}" kv="{kv}"/>
    <position name="joint2_act" joint="joint2" kp="{kp}" kv="{kv}"/>
    <position name="joint3_act" joint="joint3" kp="{kp}" kv="{kv}"/>
  </actuator>
</mujoco>
"""


def _check_range(name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    check_range("ArmTaskConfig", name, value, lo, hi)


@dataclass(frozen=True)
class ArmTaskConfig(SimTaskConfig):
    """The reach task's settings (besides `SimTaskConfig`'s); validated on construction.

    success_radius: planar fingertip-to-target distance (m) that counts as reached.
    target_distance_range / target_angle_range: target placement in polar coordinates around the
        arm base (m, rad from the +y axis, counter-clockwise positive).
    obstacle_fraction_range: where on the segment home fingertip -> target the obstacle sits.
    obstacle_radius / target_radius: sizes (m) of the obstacle cylinder and the target disc.
    actuator_kp / actuator_kv: position servo gains (N m/rad, N m s/rad).
    """

    success_radius: float = 0.02
    target_distance_range: tuple[float, float] = (0.32, 0.42)
    target_angle_range: tuple[float, float] = (-0.45, 0.45)
    obstacle_fraction_range: tuple[float, float] = (0.45, 0.6)
    obstacle_radius: float = 0.03
    target_radius: float = 0.025
    actuator_kp: float = 20.0
    actuator_kv: float = 1.0

    positive: ClassVar[tuple[str, ...]] = ("success_radius",)

    def _check(self) -> None:
        reach = sum(LINK_LENGTHS)
        _check_range("target_distance_range", self.target_distance_range, 0.25, reach - 0.05)
        _check_range("target_angle_range", self.target_angle_range, -0.8, 0.8)
        _check_range("obstacle_fraction_range", self.obstacle_fraction_range, 0.3, 0.7)
        if not (0.01 <= self.obstacle_radius <= 0.05):
            raise ValueError(
                f"ArmTaskConfig.obstacle_radius={self.obstacle_radius}: must be in [0.01, 0.05] m"
            )
        if not (0.005 <= self.target_radius <= 0.05):
            raise ValueError(
                f"ArmTaskConfig.target_radius={self.target_radius}: must be in [0.005, 0.05] m"
            )
        for name in ("actuator_kp", "actuator_kv"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ArmTaskConfig.{name}={value!r}: must be a finite number > 0")


@dataclass(frozen=True)
class StepResult:
    """Episode status after a step: `done` once the target is reached, the arm touched the
    obstacle, or time ran out; `success` only for the first; `collided` for the second."""

    done: bool
    success: bool
    collided: bool


def equal_bend_ik(xy: np.ndarray | tuple[float, float]) -> np.ndarray:
    """Joint angles (3,) that put the fingertip at table point `xy`, with joint2 == joint3.

    The chain bends counter-clockwise; the equal-bend constraint resolves the redundancy of three
    joints for a planar point. Raises ValueError for a point outside the reachable annulus.
    """
    x, y = float(xy[0]), float(xy[1])
    radius = math.hypot(x, y)
    if not (_IK_RADII[-1] <= radius <= _IK_RADII[0]):
        raise ValueError(
            f"equal_bend_ik: point ({x:.3f}, {y:.3f}) at {radius:.3f} m from the base is outside "
            f"the reachable range [{_IK_RADII[-1]:.3f}, {_IK_RADII[0]:.3f}] m"
        )
    # _IK_RADII decreases with the bend; np.interp needs increasing abscissae.
    bend = float(np.interp(radius, _IK_RADII[::-1], _IK_BENDS[::-1]))
    for _ in range(3):  # Newton polish of the table lookup
        chain = _chain(bend)
        slope = (abs(_chain(bend + 1e-6)) - abs(chain)) / 1e-6
        bend -= (abs(chain) - radius) / slope
    heading = math.atan2(-x, y)  # angle of the point from +y, counter-clockwise positive
    q1 = heading - float(np.angle(_chain(bend)))
    return np.array([q1, bend, bend])


def planar_forward_kinematics(q: np.ndarray) -> np.ndarray:
    """Table-plane positions (4, 2) of the base, the two elbows and the fingertip for joints q."""
    angles = np.cumsum(np.asarray(q, dtype=float))
    steps = np.stack([-np.sin(angles), np.cos(angles)], axis=1) * np.asarray(LINK_LENGTHS)[:, None]
    return np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])


def _chain(bend: float | np.ndarray) -> complex | np.ndarray:
    """Fingertip position in link1's frame (complex, link1 along the real axis) for q2=q3=bend."""
    l1, l2, l3 = LINK_LENGTHS
    return l1 + l2 * np.exp(1j * bend) + l3 * np.exp(2j * bend)


def _ik_table() -> tuple[np.ndarray, np.ndarray]:
    bends = np.linspace(0.0, math.pi, 4001)
    radii = np.abs(_chain(bends))
    last = int(np.argmin(radii))  # radius decreases monotonically up to here
    return bends[: last + 1], radii[: last + 1]


_IK_BENDS, _IK_RADII = _ik_table()
HOME_QPOS: np.ndarray = equal_bend_ik(HOME_EE_XY)


class ArmTask(MujocoTask):
    """The reach task: `reset(seed)`, then `step(joint_targets)` at control_dt (or
    `set_joint_targets` + `step_physics` for asynchronous drivers), `render()` for the camera."""

    joint_names: tuple[str, ...] = JOINT_NAMES
    camera_names: tuple[str, ...] = (CAMERA_NAME,)

    def __init__(self, config: ArmTaskConfig | None = None) -> None:
        self.config = config if config is not None else ArmTaskConfig()
        cfg = self.config
        xml = _MJCF.format(
            physics_dt=cfg.physics_dt,
            max_render=cfg.max_render_size,
            jlim=JOINT_LIMIT,
            camera=CAMERA_NAME,
            h=LINK_HEIGHT,
            l1=LINK_LENGTHS[0],
            l2=LINK_LENGTHS[1],
            l3=LINK_LENGTHS[2],
            tip_r=FINGERTIP_RADIUS,
            tip_dz=FINGERTIP_BOTTOM - LINK_HEIGHT,
            target_r=cfg.target_radius,
            obstacle_r=cfg.obstacle_radius,
            obstacle_hh=OBSTACLE_HEIGHT / 2,
            kp=cfg.actuator_kp,
            kv=cfg.actuator_kv,
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qpos_adr = np.array(
            [
                m.jnt_qposadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)]
                for n in JOINT_NAMES
            ]
        )
        self._dof_adr = np.array(
            [m.jnt_dofadr[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, n)] for n in JOINT_NAMES]
        )
        self._ee_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "ee")
        self._camera = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, CAMERA_NAME)
        self._arm_geoms = frozenset(
            mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, n) for n in _ARM_GEOMS
        )
        self._obstacle_geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "obstacle_geom")
        body = mujoco.mjtObj.mjOBJ_BODY
        self._target_mocap = m.body_mocapid[mujoco.mj_name2id(m, body, "target")]
        self._obstacle_mocap = m.body_mocapid[mujoco.mj_name2id(m, body, "obstacle")]
        self._renderers = Renderers(m, "ArmTask", "ArmTaskConfig")
        self._arm_ctrl = slice(None)
        self._arm_qpos, self._arm_dof = self._qpos_adr, self._dof_adr
        self._limits = np.array([[-JOINT_LIMIT, JOINT_LIMIT]] * len(JOINT_NAMES))
        self._done = False
        self._success = False
        self._collided = False
        self._passed_side: str | None = None
        self._start_episodes()

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None) -> None:
        """Start an episode: home pose, zero velocity, time 0, target and obstacle placed from
        `seed` (see `MujocoTask.reset`)."""
        rng = self._next_episode_seed(seed)
        cfg = self.config
        distance = rng.uniform(*cfg.target_distance_range)
        angle = rng.uniform(*cfg.target_angle_range)
        fraction = rng.uniform(*cfg.obstacle_fraction_range)
        target = np.array([-math.sin(angle), math.cos(angle)]) * distance
        home = np.asarray(HOME_EE_XY)
        obstacle = home + fraction * (target - home)

        mujoco.mj_resetData(self.model, self.data)
        self.data.mocap_pos[self._target_mocap] = [target[0], target[1], 0.0]
        self.data.mocap_pos[self._obstacle_mocap] = [obstacle[0], obstacle[1], 0.0]
        self.data.qpos[self._qpos_adr] = HOME_QPOS
        self.data.ctrl[:] = HOME_QPOS
        mujoco.mj_forward(self.model, self.data)
        self._done = self._success = self._collided = False
        self._passed_side = None

    def step(self, joint_targets: np.ndarray) -> StepResult:
        """Apply `joint_targets` (3,) and simulate one control step of `control_dt`."""
        self.set_joint_targets(joint_targets)
        return self.step_physics(self.config.control_dt)

    def _update_outcome(self) -> None:
        if self._passed_side is None:
            self._passed_side = self._side_when_alongside()
        if self._touching_obstacle():
            self._done, self._collided = True, True
        elif self._ee_target_distance() <= self.config.success_radius:
            self._done, self._success = True, True
        elif self.data.time >= self.config.time_limit - 0.5 * self.config.physics_dt:
            self._done = True

    def _touching_obstacle(self) -> bool:
        data = self.data
        for i in range(data.ncon):
            contact = data.contact[i]
            pair = {int(contact.geom1), int(contact.geom2)}
            if self._obstacle_geom in pair and pair & self._arm_geoms:
                return True
        return False

    def _side_when_alongside(self) -> str | None:
        """ "left"/"right" once the fingertip is level with the obstacle centre along the
        home -> target line (left: counter-clockwise of that direction), else None."""
        home = np.asarray(HOME_EE_XY)
        along = self.target_position()[:2] - home
        along /= np.linalg.norm(along)
        rel_ee = self.ee_position()[:2] - home
        rel_obstacle = self.obstacle_position()[:2] - home
        if rel_ee @ along < rel_obstacle @ along:
            return None
        left = np.array([-along[1], along[0]])
        return "left" if (rel_ee - rel_obstacle) @ left > 0 else "right"

    def _ee_target_distance(self) -> float:
        return float(np.linalg.norm(self.ee_position()[:2] - self.target_position()[:2]))

    # ------------------------------------------------------------------ state
    @property
    def result(self) -> StepResult:
        """Current episode status."""
        return StepResult(done=self._done, success=self._success, collided=self._collided)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def passed_side(self) -> str | None:
        """Side on which the fingertip passed the obstacle ("left"/"right", as the expert's
        `side`), decided when it first drew level with it; None before that."""
        return self._passed_side

    @property
    def home_joint_positions(self) -> np.ndarray:
        """(3,) joint positions every episode starts from."""
        return HOME_QPOS.copy()

    def ee_position(self) -> np.ndarray:
        """(3,) world position of the fingertip's lowest point (evaluation/expert only)."""
        return self.data.site_xpos[self._ee_site].copy()

    def target_position(self) -> np.ndarray:
        """(3,) world position of the target disc centre on the table (evaluation/expert only)."""
        return self.data.mocap_pos[self._target_mocap].copy()

    def obstacle_position(self) -> np.ndarray:
        """(3,) world position of the obstacle's base centre (evaluation/expert only)."""
        return self.data.mocap_pos[self._obstacle_mocap].copy()

    def set_target_position(self, xy: np.ndarray | tuple[float, float]) -> None:
        """Move the target disc to table point `xy` (tests and interactive use)."""
        self.data.mocap_pos[self._target_mocap, :2] = np.asarray(xy, dtype=float)
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------ camera
    def render(self, width: int | None = None, height: int | None = None) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from the overhead camera (config size by default)."""
        width = self.config.image_width if width is None else width
        height = self.config.image_height if height is None else height
        return self._renderers.render(
            self.data, self._camera, width, height, self.config.max_render_size
        )

    def project(
        self, point: np.ndarray, width: int | None = None, height: int | None = None
    ) -> tuple[float, float]:
        """Pixel coordinates (u, v) = (column, row) of world `point` (3,) in a `render` image."""
        width = self.config.image_width if width is None else width
        height = self.config.image_height if height is None else height
        cam_pos = self.data.cam_xpos[self._camera]
        cam_rot = self.data.cam_xmat[self._camera].reshape(3, 3)
        local = cam_rot.T @ (np.asarray(point, dtype=float) - cam_pos)
        depth = -local[2]  # the camera looks along its -z axis
        if depth <= 0:
            raise ValueError(f"ArmTask.project: point {point} is behind the camera")
        focal = 0.5 * height / math.tan(math.radians(self.model.cam_fovy[self._camera]) / 2)
        u = 0.5 * width + focal * local[0] / depth
        v = 0.5 * height - focal * local[1] / depth
        return float(u), float(v)
