"""Scripted demonstrator for `PickPlaceTask`: IK with MuJoCo's Jacobians + gripper open/close.

The expert reads the task's privileged state (cube pose, the cued bin) and plans a sequence of
grasp-frame poses: above the cube -> down -> close -> lift -> above the cued bin -> down ->
open -> up. Each control step it walks the plan by `control_dt` and turns the pose into joint
targets with damped-least-squares IK (`TcpIk`: `mj_jacSite` on a private MjData, warm-started
from the previous command), every joint's change bounded by `max_joint_speed`; the gripper
command (one value, `gripper_finger_joint`) ramps between open and closed at the URDF's
velocity limit.

Multimodal: a cube can be grasped across either pair of faces. Per episode the expert picks one
at random (~50/50): "direct" turns the gripper by the cube's yaw wrapped to [-45, 45] deg,
"turned" by that angle -+ 90 deg (the other face pair), so wrist_3 goes one of two clearly
different ways for the same image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import mujoco
import numpy as np

from diffusion_policy_node.sim.pick_place import (
    GRIPPER_OPEN,
    HOME_QPOS,
    JOINT_NAMES,
    PickPlaceConfig,
    PickPlaceTask,
)
from diffusion_policy_node.sim.robot_model import CUBE_HALF
from diffusion_policy_node.sim.task_common import expert_rng
from diffusion_policy_node.sim.ur5e_description import GRIPPER_VELOCITY

GRASP_MODES: tuple[str, str] = ("direct", "turned")
# Grasp-frame orientation at the home pose: z down, the fingers along world x.
HOME_ROTATION = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
GRIPPER_CLOSED = 0.0


def yaw_rotation(delta: float) -> np.ndarray:
    """The grasp-frame orientation turned by `delta` rad about world z from HOME_ROTATION."""
    c, s = math.cos(delta), math.sin(delta)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ HOME_ROTATION


class TcpIk:
    """Damped-least-squares IK of the `tcp` site over the six arm joints (MuJoCo Jacobians).

    Works on its own MjData, so the simulation is never disturbed.
    """

    def __init__(self, model: mujoco.MjModel, damping: float = 1e-3) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.damping = damping
        ids = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in JOINT_NAMES]
        self.qpos_adr = np.array([model.jnt_qposadr[j] for j in ids])
        self.dof_adr = np.array([model.jnt_dofadr[j] for j in ids])
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "tcp")
        self.limits = model.jnt_range[ids].copy()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3, 3)) of the tcp for arm joints q."""
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return (
            self.data.site_xpos[self.site].copy(),
            self.data.site_xmat[self.site].reshape(3, 3).copy(),
        )

    def error(self, q: np.ndarray, pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """(6,) world-frame [position error, rotation error as a rotation vector]."""
        cur_pos, cur_rot = self.forward(q)
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, (rot @ cur_rot.T).reshape(9))
        rotvec = np.zeros(3)
        mujoco.mju_quat2Vel(rotvec, quat, 1.0)
        return np.concatenate([pos - cur_pos, rotvec])

    def solve(
        self,
        q0: np.ndarray,
        pos: np.ndarray,
        rot: np.ndarray,
        iterations: int = 30,
        tol: float = 1e-5,
        max_step: float = 0.2,
    ) -> tuple[np.ndarray, float]:
        """Joints reaching (pos, rot) from q0, and the final error norm."""
        q = np.asarray(q0, dtype=float).copy()
        err = self.error(q, pos, rot)
        for _ in range(iterations):
            if np.linalg.norm(err) < tol:
                break
            mujoco.mj_comPos(self.model, self.data)  # cdof for the Jacobian
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
            lam2 = self.damping**2
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), err)
            scale = np.max(np.abs(dq)) / max_step
            if scale > 1.0:
                dq /= scale
            q = np.clip(q + dq, self.limits[:, 0], self.limits[:, 1])
            err = self.error(q, pos, rot)
        return q, float(np.linalg.norm(err))


def solve_home(model: mujoco.MjModel, tcp: tuple[float, float, float]) -> np.ndarray:
    """The home joints: grasp frame at `tcp`, HOME_ROTATION, from UR's usual pose."""
    start = np.array([0.0, -math.pi / 2, math.pi / 2, -math.pi / 2, -math.pi / 2, 0.0])
    q, err = TcpIk(model).solve(start, np.asarray(tcp, dtype=float), HOME_ROTATION, 200)
    if err > 1e-6:
        raise RuntimeError(f"solve_home: IK did not converge (error {err:.2e})")
    return q


@dataclass(frozen=True)
class Waypoint:
    """A grasp-frame pose to reach (`pos`, yaw `delta` from home) and the gripper command held
    while moving there; `dwell` s of waiting after arriving."""

    pos: np.ndarray
    delta: float
    gripper: float
    dwell: float = 0.0


@dataclass
class _Segment:
    start: float
    duration: float
    pos0: np.ndarray
    pos1: np.ndarray
    delta0: float
    delta1: float
    gripper: float = field(default=GRIPPER_OPEN)


class PickPlaceExpert:
    """Waypoint + IK demonstrator. Call `reset()` after every `task.reset()`, then `act()` once
    per control step and pass (joints, gripper) to `task.step`.

    speed: grasp-frame speed, m/s; turn_speed: its yaw rate, rad/s; max_joint_speed: bound on
    every joint's commanded speed (rad/s; UR5e's limit is pi). hover: height of the grasp
    centre above the table when travelling (m). seed / rng: source of the grasp choice.
    """

    def __init__(
        self,
        task: PickPlaceTask,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        speed: float = 0.22,
        turn_speed: float = 1.2,
        max_joint_speed: float = 1.5,
        hover: float = 0.16,
    ) -> None:
        positive = {
            "speed": speed,
            "turn_speed": turn_speed,
            "max_joint_speed": max_joint_speed,
            "hover": hover,
        }
        rng = expert_rng("PickPlaceExpert", seed, rng, positive)
        if max_joint_speed > math.pi:
            raise ValueError(
                f"PickPlaceExpert: max_joint_speed={max_joint_speed} exceeds the UR5e's pi rad/s"
            )
        self.task = task
        self.rng = rng
        self.speed = float(speed)
        self.turn_speed = float(turn_speed)
        self.max_joint_speed = float(max_joint_speed)
        self.hover = float(hover)
        self.ik = TcpIk(task.model)
        self.mode: str | None = None
        self.segments: list[_Segment] = []
        self._t = 0.0
        self._last_command = task.joint_positions()
        self._last_gripper = GRIPPER_OPEN
        self.max_ik_error = 0.0

    @property
    def side(self) -> str | None:
        """The grasp mode of this episode (the engine reports it as the reach expert's side)."""
        return self.mode

    def reset(self, mode: str | None = None) -> None:
        """Plan for the task's current layout; `mode` forces "direct"/"turned", else random."""
        if mode is None:
            mode = GRASP_MODES[int(self.rng.integers(0, 2))]
        if mode not in GRASP_MODES:
            raise ValueError(f"PickPlaceExpert.reset: mode={mode!r} must be one of {GRASP_MODES}")
        self.mode = mode
        task = self.task
        cube = task.cube_position()
        yaw = (task.cube_yaw() + math.pi / 4) % (math.pi / 2) - math.pi / 4  # [-45, 45) deg
        delta = yaw if mode == "direct" else yaw - math.copysign(math.pi / 2, yaw or 1.0)
        bin_xy = task.bin_center(task.target_bin())
        grasp_z = CUBE_HALF + 0.004
        place_z = 0.10
        hover = self.hover
        # The cube drops with the grasp yaw; in the bin any yaw will do, so turn back halfway.
        waypoints = [
            Waypoint(np.array([cube[0], cube[1], hover]), delta, GRIPPER_OPEN),
            Waypoint(np.array([cube[0], cube[1], grasp_z]), delta, GRIPPER_OPEN, dwell=0.2),
            Waypoint(np.array([cube[0], cube[1], grasp_z]), delta, GRIPPER_CLOSED, dwell=0.6),
            Waypoint(np.array([cube[0], cube[1], hover + 0.04]), delta, GRIPPER_CLOSED),
            Waypoint(np.array([bin_xy[0], bin_xy[1], hover + 0.04]), delta / 2, GRIPPER_CLOSED),
            Waypoint(np.array([bin_xy[0], bin_xy[1], place_z]), delta / 2, GRIPPER_CLOSED, 0.2),
            Waypoint(np.array([bin_xy[0], bin_xy[1], place_z]), delta / 2, GRIPPER_OPEN, 0.5),
            Waypoint(np.array([bin_xy[0], bin_xy[1], hover + 0.08]), delta / 2, GRIPPER_OPEN),
        ]
        start_pos, _ = self.ik.forward(task.joint_positions())
        self.segments = self._plan(start_pos, 0.0, waypoints)
        self._t = 0.0
        self._last_command = task.joint_positions()
        self._last_gripper = task.gripper_target()
        self.max_ik_error = 0.0

    def _plan(self, pos: np.ndarray, delta: float, waypoints: list[Waypoint]) -> list[_Segment]:
        segments: list[_Segment] = []
        t = 0.0
        for wp in waypoints:
            distance = float(np.linalg.norm(wp.pos - pos))
            turn = abs(wp.delta - delta)
            duration = max(distance / self.speed, turn / self.turn_speed)
            if wp.gripper != (segments[-1].gripper if segments else GRIPPER_OPEN):
                duration = max(duration, 0.1)  # the gripper command changes: one step at least
            if duration > 0:
                # Smooth start and stop: the segment takes 1.5x its constant-speed time.
                duration = 1.5 * duration
                segments.append(_Segment(t, duration, pos, wp.pos, delta, wp.delta, wp.gripper))
                t += duration
            if wp.dwell > 0:
                segments.append(_Segment(t, wp.dwell, wp.pos, wp.pos, wp.delta, wp.delta,
                                         wp.gripper))  # fmt: skip
                t += wp.dwell
            pos, delta = wp.pos, wp.delta
        return segments

    @property
    def plan_duration(self) -> float:
        """Seconds the plan takes (the episode ends later, once the cube rests)."""
        last = self.segments[-1]
        return last.start + last.duration

    def pose_at(self, t: float) -> tuple[np.ndarray, float, float]:
        """(grasp-frame position, yaw from home, gripper command) planned for time t."""
        if not self.segments:
            raise RuntimeError("PickPlaceExpert: call reset() after task.reset() before acting")
        seg = self.segments[-1]
        for candidate in self.segments:
            if t < candidate.start + candidate.duration:
                seg = candidate
                break
        u = min(max((t - seg.start) / seg.duration, 0.0), 1.0)
        s = u * u * (3.0 - 2.0 * u)  # smoothstep: zero speed at both ends
        pos = seg.pos0 + s * (seg.pos1 - seg.pos0)
        return pos, seg.delta0 + s * (seg.delta1 - seg.delta0), seg.gripper

    def act(self) -> tuple[np.ndarray, float]:
        """(arm joint targets (6,), gripper command) for the next control step."""
        dt = self.task.config.control_dt
        self._t += dt
        pos, delta, gripper = self.pose_at(self._t)
        desired, err = self.ik.solve(self._last_command, pos, yaw_rotation(delta))
        self.max_ik_error = max(self.max_ik_error, err)
        bound = self.max_joint_speed * dt
        step = np.clip(desired - self._last_command, -bound, bound)
        self._last_command = self._last_command + step
        # The gripper command ramps at the URDF's velocity limit (a policy node enforces it).
        bound = GRIPPER_VELOCITY * dt
        self._last_gripper += min(max(gripper - self._last_gripper, -bound), bound)
        return self._last_command.copy(), float(self._last_gripper)


@dataclass
class PickPlaceEpisode:
    """One expert rollout. T = control steps taken.

    states (T, 7): joint state before each action; actions (T, 6) arm targets; gripper (T,);
    images: {camera: (T, H, W, 3) uint8} or None.
    """

    seed: int
    mode: str
    target_bin: str
    states: np.ndarray
    actions: np.ndarray
    gripper: np.ndarray
    images: dict[str, np.ndarray] | None
    success: bool
    collided: bool
    wrong_bin: bool
    dropped: bool
    time: float


def run_pick_place_episode(
    task: PickPlaceTask,
    expert: PickPlaceExpert,
    seed: int,
    mode: str | None = None,
    render: bool = False,
) -> PickPlaceEpisode:
    """Reset `task` to `seed`, let `expert` drive it until the episode ends, record it."""
    task.reset(seed)
    expert.reset(mode)
    states, actions, grips = [], [], []
    images: dict[str, list[np.ndarray]] = {name: [] for name in task.camera_names}
    while not task.done:
        states.append(task.state_positions())
        if render:
            for name, image in task.render_all().items():
                images[name].append(image)
        q, gripper = expert.act()
        actions.append(q)
        grips.append(gripper)
        task.step(q, gripper)
    result = task.result
    return PickPlaceEpisode(
        seed=seed,
        mode=str(expert.mode),
        target_bin=task.target_bin(),
        states=np.array(states),
        actions=np.array(actions),
        gripper=np.array(grips),
        images={k: np.array(v) for k, v in images.items()} if render else None,
        success=result.success,
        collided=result.collided,
        wrong_bin=result.wrong_bin,
        dropped=result.dropped,
        time=task.time,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the expert on a range of seeds and print a JSON summary (success rate, modes)."""
    import argparse
    import json
    import time

    parser = argparse.ArgumentParser(
        prog="python -m diffusion_policy_node.sim.pick_place_expert",
        description="Scripted pick-and-place expert success rate, ROS-free.",
    )
    parser.add_argument("--seeds", type=int, default=100, help="number of episodes")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=PickPlaceConfig().time_limit)
    args = parser.parse_args(argv)
    task = PickPlaceTask(PickPlaceConfig(time_limit=args.time_limit, image_width=8,
                                         image_height=8))  # fmt: skip
    failures, modes, bins, times = [], {m: 0 for m in GRASP_MODES}, {}, []
    start = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        episode = run_pick_place_episode(task, PickPlaceExpert(task, seed=seed), seed)
        modes[episode.mode] += 1
        bins[episode.target_bin] = bins.get(episode.target_bin, 0) + 1
        if episode.success:
            times.append(episode.time)
        else:
            failures.append(
                {"seed": seed, "mode": episode.mode, "collided": episode.collided,
                 "wrong_bin": episode.wrong_bin, "dropped": episode.dropped}
            )  # fmt: skip
    summary = {
        "episodes": args.seeds,
        "successes": args.seeds - len(failures),
        "success_rate": (args.seeds - len(failures)) / args.seeds,
        "modes": modes,
        "target_bins": bins,
        "mean_success_time_s": round(float(np.mean(times)), 2) if times else None,
        "failures": failures,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary))
    return 0


__all__ = [
    "GRASP_MODES",
    "HOME_QPOS",
    "PickPlaceEpisode",
    "PickPlaceExpert",
    "TcpIk",
    "run_pick_place_episode",
    "solve_home",
    "yaw_rotation",
]


if __name__ == "__main__":
    import sys

    sys.exit(main())
