"""Scripted demonstrator for `ArmTask`: passes the obstacle on a random side, then reaches.

The expert reads the task's privileged state (target and obstacle positions), plans a fingertip
path home -> beside the obstacle (left or right, chosen at random per episode, ~50/50) -> target,
walks it at constant speed and turns each path point into joint targets with the equal-bend IK.
Joint targets change by at most `max_joint_step` per control step. "Left" is the left-hand side
when looking from the fingertip's start towards the target (counter-clockwise of that direction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusion_policy_node.sim.arm_task import FINGERTIP_RADIUS, ArmTask, equal_bend_ik
from diffusion_policy_node.sim.task_common import expert_rng

SIDES: tuple[str, str] = ("left", "right")


class ScriptedExpert:
    """Waypoint + IK demonstrator. Call `reset()` after every `task.reset()`, then `act()` once
    per control step and pass the result to `task.step`.

    speed: fingertip speed along the path, m/s. clearance: planned gap (m) between the fingertip
    and the obstacle surface. max_joint_step: bound on the per-step change of every joint target.
    seed / rng: source of the side choice (give one or neither; neither means seed 0).
    """

    def __init__(
        self,
        task: ArmTask,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        speed: float = 0.1,
        clearance: float = 0.035,
        max_joint_step: float = 0.15,
    ) -> None:
        self.rng = expert_rng(
            "ScriptedExpert",
            seed,
            rng,
            {"speed": speed, "clearance": clearance, "max_joint_step": max_joint_step},
        )
        self.task = task
        self.speed = float(speed)
        self.clearance = float(clearance)
        self.max_joint_step = float(max_joint_step)
        self.side: str | None = None
        self.waypoints = np.zeros((0, 2))
        self._lengths = np.zeros(0)
        self._progress = 0.0
        self._last_command = task.joint_positions()

    def reset(self, side: str | None = None) -> None:
        """Plan for the task's current layout; `side` forces "left"/"right", else a coin flip."""
        if side is None:
            side = SIDES[int(self.rng.integers(0, 2))]
        if side not in SIDES:
            raise ValueError(f"ScriptedExpert.reset: side={side!r} must be one of {SIDES}")
        self.side = side
        task = self.task
        start = task.ee_position()[:2]
        target = task.target_position()[:2]
        obstacle = task.obstacle_position()[:2]
        along = (target - start) / np.linalg.norm(target - start)
        left = np.array([-along[1], along[0]])
        normal = left if side == "left" else -left
        radius = task.config.obstacle_radius
        offset = radius + FINGERTIP_RADIUS + self.clearance
        # A lane beside the obstacle: enter before it, leave after it, both `offset` to the side.
        self.waypoints = np.array(
            [
                start,
                obstacle - radius * along + offset * normal,
                obstacle + radius * along + offset * normal,
                target,
            ]
        )
        self._lengths = np.concatenate(
            [[0.0], np.cumsum(np.linalg.norm(np.diff(self.waypoints, axis=0), axis=1))]
        )
        self._progress = 0.0
        self._last_command = task.joint_positions()

    def path_point(self, distance: float) -> np.ndarray:
        """Fingertip point (2,) `distance` metres along the planned path (clamped to its ends)."""
        if self.side is None:
            raise RuntimeError("ScriptedExpert: call reset() after task.reset() before acting")
        distance = min(max(distance, 0.0), float(self._lengths[-1]))
        return np.array(
            [np.interp(distance, self._lengths, self.waypoints[:, k]) for k in range(2)]
        )

    def act(self) -> np.ndarray:
        """Joint targets (3,) for the next control step."""
        self._progress += self.speed * self.task.config.control_dt
        desired = equal_bend_ik(self.path_point(self._progress))
        delta = np.clip(desired - self._last_command, -self.max_joint_step, self.max_joint_step)
        self._last_command = self._last_command + delta
        return self._last_command.copy()


@dataclass
class ExpertEpisode:
    """One expert rollout. T = control steps taken.

    joint_positions (T, 3): observed before each action; actions (T, 3): commanded joint targets;
    ee_xy (T + 1, 2): fingertip path including the final state; images (T, H, W, 3) uint8 or None.
    """

    seed: int
    side: str
    joint_positions: np.ndarray
    actions: np.ndarray
    ee_xy: np.ndarray
    images: np.ndarray | None
    success: bool
    collided: bool


def run_expert_episode(
    task: ArmTask,
    expert: ScriptedExpert,
    seed: int,
    side: str | None = None,
    render: bool = False,
) -> ExpertEpisode:
    """Reset `task` to `seed`, let `expert` drive it until the episode ends, record everything."""
    task.reset(seed)
    expert.reset(side)
    states, actions, ee_xy, images = [], [], [task.ee_position()[:2]], []
    while not task.done:
        states.append(task.joint_positions())
        if render:
            images.append(task.render())
        action = expert.act()
        actions.append(action)
        task.step(action)
        ee_xy.append(task.ee_position()[:2])
    return ExpertEpisode(
        seed=seed,
        side=str(expert.side),
        joint_positions=np.array(states),
        actions=np.array(actions),
        ee_xy=np.array(ee_xy),
        images=np.array(images) if render else None,
        success=task.success,
        collided=task.collided,
    )
