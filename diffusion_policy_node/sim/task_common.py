"""What the MuJoCo tasks (`sim.arm_task.ArmTask`, `sim.pick_place.PickPlaceTask`) and their
scripted experts share: the settings every task has (`SimTaskConfig`) and config validation, the
episode seed, physics stepping and offscreen
rendering. Every error names the class (`owner`) and field it is about. ROS-free.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

# MUJOCO_GL must be set before mujoco is imported; egl renders headless (GPU or Mesa on CPU).
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np


def check_range(owner: str, name: str, value: tuple[float, float], lo: float, hi: float) -> None:
    """Raise ValueError unless `value` is a (low, high) pair with lo <= low <= high <= hi."""
    if len(value) != 2 or not (lo <= value[0] <= value[1] <= hi):
        raise ValueError(
            f"{owner}.{name}={value!r}: expected (low, high) with {lo} <= low <= high <= {hi}"
        )


def check_timing(config: Any, owner: str, positive: tuple[str, ...]) -> None:
    """The config's `positive` fields (control_dt, physics_dt, time_limit among them) finite and
    > 0, physics_dt <= control_dt, control_dt an integer multiple of physics_dt and
    time_limit >= control_dt."""
    for name in positive:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{owner}.{name}={value!r}: must be a finite number > 0")
    if config.physics_dt > config.control_dt:
        raise ValueError(
            f"{owner}.physics_dt={config.physics_dt}: must be <= control_dt={config.control_dt}"
        )
    ratio = config.control_dt / config.physics_dt
    if abs(ratio - round(ratio)) > 1e-6 * ratio:
        raise ValueError(
            f"{owner}.control_dt={config.control_dt}: must be an integer multiple of "
            f"physics_dt={config.physics_dt}"
        )
    if config.time_limit < config.control_dt:
        raise ValueError(f"{owner}.time_limit={config.time_limit}: must be >= control_dt")


def check_render_and_seed(config: Any, owner: str) -> None:
    """max_render_size in [16, 4096], image_width/image_height ints in [1, max_render_size],
    seed a non-negative int."""
    if not (16 <= config.max_render_size <= 4096):
        raise ValueError(
            f"{owner}.max_render_size={config.max_render_size}: must be in [16, 4096]"
        )
    for name in ("image_width", "image_height"):
        value = getattr(config, name)
        if not (isinstance(value, int) and 1 <= value <= config.max_render_size):
            raise ValueError(
                f"{owner}.{name}={value!r}: must be an int in [1, max_render_size="
                f"{config.max_render_size}]"
            )
    if isinstance(config.seed, bool) or not isinstance(config.seed, int) or config.seed < 0:
        raise ValueError(f"{owner}.seed={config.seed!r}: must be a non-negative int")


@dataclass(frozen=True)
class SimTaskConfig:
    """Timing, rendering and seed settings every task has; validated on construction. A task's
    config adds its own fields (checked by its `_check`) and may change these defaults.

    control_dt: seconds of physics per `step` (10 Hz by default).
    physics_dt: MuJoCo timestep; control_dt must be an integer multiple of it.
    time_limit: episode length in seconds of simulated time.
    image_width / image_height: default `render` size (every camera); max_render_size bounds
        any render size.
    seed: seeds the episode-seed stream used when `reset` gets no seed.
    """

    control_dt: float = 0.1
    physics_dt: float = 0.002
    time_limit: float = 10.0
    image_width: int = 96
    image_height: int = 96
    max_render_size: int = 640
    seed: int = 0

    # the task's own fields that must be finite numbers > 0, checked with the timing
    positive: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_timing(self, owner, ("control_dt", "physics_dt", "time_limit", *self.positive))
        self._check()
        check_render_and_seed(self, owner)

    def _check(self) -> None:
        """The task's own fields; ValueError naming the class and field."""


def episode_seed(owner: str, seed: int | None, seed_stream: np.random.Generator) -> int:
    """`seed` checked (a non-negative int), or one drawn from `seed_stream` when None."""
    if seed is None:
        seed = int(seed_stream.integers(0, 2**31 - 1))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{owner}.reset: seed={seed!r} must be a non-negative int")
    return int(seed)


def step_physics(
    owner: str,
    model: mujoco.MjModel,
    data: mujoco.MjData,
    duration: float,
    physics_dt: float,
    done: Callable[[], bool],
    update_outcome: Callable[[], None],
) -> None:
    """Simulate `duration` seconds (rounded to whole physics steps, at least one), calling
    `update_outcome` after every physics step until `done()`."""
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"{owner}.step_physics: duration={duration!r} must be finite and > 0")
    for _ in range(max(1, round(duration / physics_dt))):
        mujoco.mj_step(model, data)
        if not done():
            update_outcome()


class Renderers:
    """Offscreen renderers of one model, one per image size, made on first use."""

    def __init__(self, model: mujoco.MjModel, owner: str, config_owner: str) -> None:
        self._model = model
        self._owner = owner
        self._config_owner = config_owner
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def render(
        self, data: mujoco.MjData, camera: int, width: int, height: int, limit: int
    ) -> np.ndarray:
        """RGB image (height, width, 3) uint8 from camera id `camera`; sizes in [1, limit]."""
        self.check_size(width, height, limit)
        key = (int(height), int(width))
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = mujoco.Renderer(self._model, height=key[0], width=key[1])
            self._renderers[key] = renderer
        renderer.update_scene(data, camera=camera)
        return renderer.render()

    def check_size(self, width: int, height: int, limit: int) -> None:
        """ValueError unless width and height are ints in [1, limit]."""
        for name, value in (("width", width), ("height", height)):
            if not (isinstance(value, (int, np.integer)) and 1 <= value <= limit):
                raise ValueError(
                    f"{self._owner}.render: {name}={value!r} must be an int in [1, {limit}] "
                    f"(raise {self._config_owner}.max_render_size for larger images)"
                )

    def close(self) -> None:
        """Release the offscreen rendering contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


def expert_rng(
    owner: str,
    seed: int | None,
    rng: np.random.Generator | None,
    positive: Mapping[str, float],
) -> np.random.Generator:
    """A scripted expert's arguments: seed or rng (not both; neither means seed 0), and every
    `positive` value finite and > 0. Returns the generator to draw from."""
    if seed is not None and rng is not None:
        raise ValueError(f"{owner}: give seed or rng, not both")
    for name, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{owner}: {name}={value!r} must be finite and > 0")
    return rng if rng is not None else np.random.default_rng(0 if seed is None else seed)


class MujocoTask:
    """What both tasks share once their model is built: the episode seed stream, validated arm
    targets, physics stepping with outcome checks every physics step, the status properties
    and the context manager. A task sets `model`, `data`, `config`, `_renderers`,
    `_arm_ctrl` (actuator indices of the arm's servos), `_arm_qpos` / `_arm_dof` (the arm
    joints' qpos / dof addresses, `joint_names` order) and `_limits` ((n, 2) rad), then calls
    `_start_episodes()`, which starts the first episode; it implements `reset`, `result` and
    `_update_outcome`."""

    joint_names: tuple[str, ...] = ()
    model: mujoco.MjModel
    data: mujoco.MjData
    config: Any
    _renderers: Renderers
    _arm_ctrl: Any
    _arm_qpos: Any
    _arm_dof: Any
    _limits: np.ndarray

    def _start_episodes(self) -> None:
        self._seed_stream = np.random.default_rng(self.config.seed)
        self._episode_seed: int | None = None
        self.reset(self.config.seed)

    def reset(self, seed: int | None = None) -> None:
        """Start an episode whose layout is drawn from `seed`. The same seed always gives the
        same layout (and, with the same commands, the same trajectory and images). Without a
        seed, one is drawn from the config's seed stream."""
        raise NotImplementedError

    def _next_episode_seed(self, seed: int | None) -> np.random.Generator:
        """Record the seed of the new episode (drawn from the stream when None); its rng."""
        self._episode_seed = episode_seed(type(self).__name__, seed, self._seed_stream)
        return np.random.default_rng(self._episode_seed)

    def set_joint_targets(self, joint_targets: np.ndarray) -> None:
        """Set the arm's position-servo targets (n,) in rad, clipped to the joint limits."""
        owner, n = type(self).__name__, len(self.joint_names)
        q = np.asarray(joint_targets, dtype=float)
        if q.shape != (n,):
            raise ValueError(
                f"{owner}: joint_targets has shape {q.shape}, expected ({n},) for "
                f"{self.joint_names}"
            )
        if not np.all(np.isfinite(q)):
            raise ValueError(f"{owner}: joint_targets {q.tolist()} contain NaN or inf")
        self.data.ctrl[self._arm_ctrl] = np.clip(q, self._limits[:, 0], self._limits[:, 1])

    def joint_positions(self) -> np.ndarray:
        """(n,) arm joint angles, rad, in `joint_names` order."""
        return self.data.qpos[self._arm_qpos].copy()

    def joint_velocities(self) -> np.ndarray:
        """(n,) arm joint velocities, rad/s, in `joint_names` order."""
        return self.data.qvel[self._arm_dof].copy()

    def joint_targets(self) -> np.ndarray:
        """(n,) current arm position-servo targets, rad."""
        return self.data.ctrl[self._arm_ctrl].copy()

    def step_physics(self, duration: float) -> Any:
        """Simulate `duration` seconds (whole physics steps, at least one) with the current
        targets, checking the outcome every physics step; returns `result`."""
        step_physics(
            type(self).__name__,
            self.model,
            self.data,
            duration,
            self.config.physics_dt,
            lambda: self.done,
            self._update_outcome,
        )
        return self.result

    def _update_outcome(self) -> None:
        raise NotImplementedError

    @property
    def result(self) -> Any:
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.result.done

    @property
    def success(self) -> bool:
        return self.result.success

    @property
    def collided(self) -> bool:
        return self.result.collided

    @property
    def time(self) -> float:
        """Simulated seconds since `reset`."""
        return float(self.data.time)

    @property
    def episode_seed(self) -> int | None:
        """Seed of the current layout."""
        return self._episode_seed

    @property
    def joint_limits(self) -> np.ndarray:
        """(n, 2) lower/upper limit per arm joint, rad."""
        return self._limits.copy()

    def close(self) -> None:
        """Release the offscreen rendering contexts."""
        self._renderers.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
