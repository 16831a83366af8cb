"""The bundled MuJoCo robots, without ROS: `SimEngine` steps a task (`TASKS`: "reach", the
3-joint `ArmTask`, or "pick_place", the UR5e + gripper `PickPlaceTask`), follows joint
trajectories / position commands (and gripper commands) and hands what a robot would publish
to `sink` callbacks.

`ros/sim_node.py` wraps it in a node (messages, services, parameters); tests drive it directly
(`tick()` and `handle_requests()` on the calling thread, or `run()` with an injected clock).

Time: simulation time is `START_TIME_NS + steps * physics_dt`; `run()` keeps it at
`real_time_factor` x the wall clock (`clock`, seconds), without catch-up bursts when the machine
cannot keep up. Publications happen at the first physics step at or after their due time.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower
from diffusion_policy_node.sim.arm_task import ArmTask, ArmTaskConfig
from diffusion_policy_node.sim.expert import ScriptedExpert
from diffusion_policy_node.sim.motion import MotionRecorder
from diffusion_policy_node.sim.pick_place import PickPlaceConfig, PickPlaceTask
from diffusion_policy_node.sim.pick_place_expert import PickPlaceExpert

NS = 1_000_000_000
EXPERT_OUTPUTS = ("trajectory", "stream")
# Largest simulation backlog (wall-clock seconds) before the pacer stops trying to catch up.
MAX_LAG_S = 0.1
# Simulation time starts here, not at 0: a zero header.stamp means "unset / now" in ROS
# (joint_trajectory_controller, bag readers), so no message may carry it.
START_TIME_NS = NS
# The executed motion is recorded at a trajectory controller's update rate (ros2_control's
# default update_rate, 100 Hz): fine enough to see the acceleration steps of linear
# interpolation between points a control step apart.
MOTION_DT = 0.01
# While paused, "clock" is still published (unchanged) this often (wall seconds), like Gazebo.
PAUSED_CLOCK_PERIOD_S = 0.1


@dataclass(frozen=True)
class TaskSpec:
    """A task the engine can host: its classes and defaults."""

    task: type
    config: type
    expert: type
    time_limit: float  # default episode length, s
    camera_topics: tuple[str, ...]  # sim_node's default image topic of each camera, in order


TASKS: dict[str, TaskSpec] = {
    "reach": TaskSpec(
        ArmTask, ArmTaskConfig, ScriptedExpert, ArmTaskConfig().time_limit, ("/camera/image_raw",)
    ),
    "pick_place": TaskSpec(
        PickPlaceTask,
        PickPlaceConfig,
        PickPlaceExpert,
        PickPlaceConfig().time_limit,
        ("/scene_camera/image_raw", "/wrist_camera/image_raw"),
    ),
}
TaskConfig = ArmTaskConfig | PickPlaceConfig


def task_name(config: TaskConfig) -> str:
    """The `TASKS` key of a task config."""
    for name, spec in TASKS.items():
        if type(config) is spec.config:
            return name
    raise ValueError(f"no task takes a {type(config).__name__}")


@dataclass(frozen=True)
class SimSettings:
    """Node-level settings (the task's own are in `ArmTaskConfig`); validated on construction."""

    joint_state_rate_hz: float = 100.0
    camera_rate_hz: float = 30.0
    clock_rate_hz: float = 200.0
    real_time_factor: float = 1.0
    expert: bool = False
    expert_output: str = "trajectory"
    pause_on_done: bool = False
    start_paused: bool = False
    frame_id: str = "camera"
    qos_depth: int = 10
    task: str = "reach"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"parameter task={self.task!r}: expected one of {tuple(TASKS)}")
        for name in ("joint_state_rate_hz", "camera_rate_hz", "clock_rate_hz"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 10_000):
                raise ValueError(f"parameter {name}={value!r}: must be in (0, 10000] Hz")
        rtf = self.real_time_factor
        if not (math.isfinite(rtf) and 0 <= rtf <= 1000):
            raise ValueError(
                f"parameter real_time_factor={rtf!r}: must be in [0, 1000] (0: as fast as "
                "possible, 1: real time)"
            )
        if not (isinstance(self.qos_depth, int) and 1 <= self.qos_depth <= 100_000):
            raise ValueError(f"parameter qos_depth={self.qos_depth!r}: must be in [1, 100000]")
        if self.expert_output not in EXPERT_OUTPUTS:
            raise ValueError(
                f"parameter expert_output={self.expert_output!r}: expected one of {EXPERT_OUTPUTS}"
            )


def configs_from_parameters(values: Mapping[str, Any]) -> tuple[SimSettings, TaskConfig]:
    """sim_node's parameter values (names as in `ros/sim_node.PARAMS`) -> validated settings
    and the config of the task named by `task` (default "reach"); `time_limit` 0 means the
    task's default. ValueError naming the parameter."""
    settings = SimSettings(
        joint_state_rate_hz=float(values["joint_state_rate_hz"]),
        camera_rate_hz=float(values["camera_rate_hz"]),
        clock_rate_hz=float(values["clock_rate_hz"]),
        real_time_factor=float(values["real_time_factor"]),
        expert=bool(values["expert"]),
        expert_output=str(values["expert_output"]),
        pause_on_done=bool(values["pause_on_done"]),
        start_paused=bool(values["start_paused"]),
        frame_id=str(values["frame_id"]),
        qos_depth=int(values["qos_depth"]),
        task=str(values.get("task", "reach")),
    )
    spec = TASKS[settings.task]
    time_limit = float(values["time_limit"])
    try:
        task_config = spec.config(
            control_dt=float(values["control_dt"]),
            physics_dt=float(values["physics_dt"]),
            time_limit=time_limit if time_limit != 0 else spec.time_limit,
            image_width=int(values["image_width"]),
            image_height=int(values["image_height"]),
            seed=int(values["seed"]),
        )
    except ValueError as exc:
        raise ValueError(f"{exc} (set through the parameter of the same name)") from exc
    return settings, task_config


class SimEngine:
    """The simulation loop without ROS: commands in, publications out through `sink` callbacks.

    Owns the task (`ArmTask` or `PickPlaceTask`, by the type of `task_config`); every method
    except `submit` / `report` must run on the thread that created it (the task's rendering
    context belongs to that thread). `submit` queues work for that thread (commands, resets,
    pause) from any thread; `report` reads a snapshot.

    `clock` gives wall seconds (pacing in `run`, the measured real-time factor in `report`);
    `run` sleeps only through `stop.wait`, so a test can pass a fake clock and a stop event
    whose `wait` advances it.

    sink keys: "joint_state"(stamp_ns, names, positions, velocities) with every joint (the
    gripper's too), "image"(stamp_ns, rgb) for a one-camera task (reach) or
    "images"(stamp_ns, {camera: rgb}) for a multi-camera one (pick_place), "clock"(stamp_ns),
    "trajectory"(stamp_ns, names, tfs (P,), positions (P, D)) and "stream"(stamp_ns,
    positions (D,)) for the arm, "gripper"(stamp_ns, positions (1,)) (tasks with a gripper;
    the last three: expert commands), "log"(level, text).
    """

    def __init__(
        self,
        task_config: TaskConfig,
        settings: SimSettings,
        sink: dict[str, Callable[..., None]],
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.clock = clock  # wall time (s) for pacing and the measured real-time factor
        self.sink = sink
        self.task_name = task_name(task_config)
        self.spec = TASKS[self.task_name]
        self.task = self.spec.task(task_config)
        self.cameras = tuple(self.task.camera_names)
        self.has_gripper = bool(getattr(self.task, "has_gripper", False))
        self.task.render()  # create the rendering context on this thread now
        cfg = task_config
        self.physics_ns = round(cfg.physics_dt * NS)
        self.control_ns = round(cfg.control_dt * NS)
        self.periods = {
            "joint_state": round(NS / settings.joint_state_rate_hz),
            "image": round(NS / settings.camera_rate_hz),
            "clock": round(NS / settings.clock_rate_hz),
        }
        self.names = list(self.task.joint_names)  # the arm: trajectory / stream commands
        self.state_names = list(getattr(self.task, "state_joint_names", self.names))
        self.follower = TrajectoryFollower(dof=len(self.names))
        self.stream_target: np.ndarray | None = None
        self.gripper_target: float | None = None
        self.expert: ScriptedExpert | PickPlaceExpert | None = None
        self.steps = 0  # physics steps since start; sim time = steps * physics_ns
        self.episode_start_ns = 0
        self.episode_end_ns: int | None = None  # when the episode ended (report time stops)
        self.episodes = 0
        self.side: str | None = None
        self.paused = settings.start_paused
        self.due: dict[str, int] = {}
        self.expert_due = 0
        self._requests: queue.SimpleQueue[tuple[str, Any, threading.Event | None, dict]] = (
            queue.SimpleQueue()
        )
        self._snapshot: dict[str, Any] = {}
        self._snapshot_lock = threading.Lock()
        self._rtf_window: list[tuple[float, int]] = []
        # Sim seconds from a trajectory's header.stamp (the sender's tick) to its application
        # here, this episode: the command delay a controller would see.
        self.command_delays: list[float] = []
        # Largest |joint position - start position| this episode (rad): did the arm move?
        self.max_excursion = 0.0
        self._episode_q0 = np.zeros(len(self.names))
        # The executed joint targets at a trajectory controller's update rate (MOTION_DT),
        # chunk boundaries marked.
        self.motion_ns = max(
            self.physics_ns, round(MOTION_DT * NS) // self.physics_ns * self.physics_ns
        )
        self.motion = MotionRecorder(self.motion_ns / NS)
        self.motion_due = 0
        self._reset(seed)

    # ---------------------------------------------------------------- time
    @property
    def now_ns(self) -> int:
        return START_TIME_NS + self.steps * self.physics_ns

    # ---------------------------------------------------------------- cross-thread API
    def submit(self, kind: str, payload: Any = None, wait: float | None = None) -> dict:
        """Queue `kind` ("trajectory", "stream", "gripper", "reset", "pause", "unpause") for the
        sim thread; with `wait`, block until it was applied (or raise TimeoutError)."""
        done = threading.Event() if wait is not None else None
        result: dict = {}
        self._requests.put((kind, payload, done, result))
        if done is not None and not done.wait(wait):
            raise TimeoutError(f"simulation thread did not handle {kind!r} within {wait} s")
        if "error" in result:
            raise ValueError(result["error"])
        return result

    def report(self) -> dict[str, Any]:
        with self._snapshot_lock:
            return dict(self._snapshot)

    # ---------------------------------------------------------------- sim thread
    def run(self, stop: threading.Event) -> None:
        """Step, render and publish until `stop` is set, paced by `real_time_factor`."""
        rtf = self.settings.real_time_factor
        anchor_wall, anchor_steps = self.clock(), self.steps
        was_paused = self.paused
        next_paused_clock = 0.0
        while not stop.is_set():
            self.handle_requests()
            if self.paused:
                was_paused = True
                if self.clock() >= next_paused_clock:
                    self.sink["clock"](self.now_ns)
                    next_paused_clock = self.clock() + PAUSED_CLOCK_PERIOD_S
                stop.wait(0.002)
                continue
            if was_paused:  # pacing restarts from here, no catch-up for the paused time
                anchor_wall, anchor_steps, was_paused = self.clock(), self.steps, False
            if rtf > 0:
                wall = self.clock()
                target = anchor_steps + (wall - anchor_wall) * rtf * NS / self.physics_ns
                if self.steps >= target:
                    ahead = (self.steps + 1 - target) * self.physics_ns / NS / rtf
                    stop.wait(min(max(ahead, 0.0), 0.002))
                    continue
                max_lag = MAX_LAG_S * rtf * NS / self.physics_ns
                if target - self.steps > max_lag:  # fell behind: run slower than asked
                    anchor_wall, anchor_steps = wall, self.steps
            self.tick()

    def handle_requests(self) -> None:
        while True:
            try:
                kind, payload, done, result = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                result.update(self._apply(kind, payload))
            except ValueError as exc:
                result["error"] = str(exc)
            finally:
                if done is not None:
                    done.set()

    def _apply(self, kind: str, payload: Any) -> dict:
        now = self.now_ns / NS
        if kind == "reset":
            return self._reset(int(payload))
        if kind in ("pause", "unpause"):
            self.paused = kind == "pause"
            self._update_snapshot()
            return {"paused": self.paused}
        if self.settings.expert:
            self._log("warn", f"expert mode: ignoring an external {kind} command")
            return {}
        if kind == "trajectory":
            times, positions, start, *derivatives = payload
            vel, acc = (*derivatives, None, None)[:2]
            if start is not None:
                self.command_delays.append(now - start)
            current = self.follower.sample(now)
            if current is None:
                current = self.stream_target
            if current is None:
                current = self.task.joint_targets()
            # A chunk boundary: a new plan replaces one still being executed (not the first
            # plan of an episode or after a hold, which starts from rest).
            replacing = self.follower.has_trajectory and (self.follower.end_time() or 0) > now
            # the state before a message: what the controller commands now (JTC with
            # interpolate_from_desired_state; the sim's servos track it closely)
            self.follower.set_trajectory(
                times,
                positions,
                start,
                now,
                current,
                velocities=vel,
                accelerations=acc,
                from_desired=True,
            )
            self.stream_target = None
            if len(times) and replacing:
                self.motion.new_chunk()
        elif kind == "stream":
            self.follower.clear()
            self.stream_target = np.asarray(payload, dtype=np.float64)
        elif kind == "gripper":
            if not self.has_gripper:
                raise ValueError(f"task {self.task_name!r} has no gripper")
            value = float(np.asarray(payload, dtype=np.float64).reshape(-1)[0])
            if not np.isfinite(value):
                raise ValueError(f"gripper command {payload!r} is not finite")
            self.gripper_target = value
        else:
            raise ValueError(f"unknown request {kind!r}")
        return {}

    def _reset(self, seed: int) -> dict:
        self.task.reset(seed)
        self.follower.clear()
        self.stream_target = None
        self.gripper_target = None
        self.side = None
        self.command_delays = []
        self.motion.clear()
        self.max_excursion = 0.0
        self._episode_q0 = self.task.joint_positions().copy()
        if self.settings.expert:
            self.expert = self.spec.expert(self.task, seed=seed)
            self.expert.reset()
            self.side = self.expert.side
        self.episode_start_ns = self.now_ns
        self.episode_end_ns = None
        self.motion_due = self.now_ns
        self.episodes += 1
        # Publish the initial state at the episode start, before the first physics step.
        self.due = dict.fromkeys(self.periods, self.now_ns)
        self.expert_due = self.now_ns
        self._update_snapshot()
        return {
            "episode_seed": seed,
            "episode_start": self.episode_start_ns / NS,
            "side": self.side,
        }

    def tick(self) -> None:
        """Publish what is due at the current time, command the servos, step the physics once."""
        now_ns = self.now_ns
        task = self.task
        if self.expert is not None and not task.done and now_ns >= self.expert_due:
            self.expert_due += self.control_ns
            self._expert_command(now_ns)
        self._publish_due(now_ns, force=False)
        if self.stream_target is not None:
            task.set_joint_targets(self.stream_target)
        else:
            target = self.follower.sample(now_ns / NS)
            if target is not None:
                task.set_joint_targets(target)
        if self.gripper_target is not None:
            task.set_gripper_target(self.gripper_target)
        if now_ns >= self.motion_due and not task.done:
            self.motion.record(task.joint_targets())
            self.motion_due += self.motion_ns
        was_done = task.done
        task.step_physics(task.config.physics_dt)
        self.steps += 1
        if task.done and not was_done:
            self.episode_end_ns = self.now_ns
            if self.settings.pause_on_done:
                self._publish_due(self.now_ns, force=True)  # the terminal observation
                self.paused = True
            self._update_snapshot()
        if self.steps % 25 == 0:
            q = task.joint_positions()
            self.max_excursion = max(self.max_excursion, float(np.abs(q - self._episode_q0).max()))
            self._update_snapshot()

    def _expert_command(self, now_ns: int) -> None:
        if self.expert is None:
            return
        q = self.expert.act()
        if self.has_gripper:
            q, gripper = q
            self.gripper_target = float(gripper)
            self.sink["gripper"](now_ns, np.array([gripper]))
        if self.settings.expert_output == "stream":
            self.follower.clear()
            self.stream_target = q
            self.sink["stream"](now_ns, q)
            return
        now = now_ns / NS
        current = self.follower.sample(now)
        if current is None:
            current = self.task.joint_targets()
        dt = self.control_ns / NS
        self.follower.set_trajectory([dt], q[None, :], now, now, current)
        self.sink["trajectory"](now_ns, self.names, np.array([dt]), q[None, :])

    def _publish_due(self, now_ns: int, force: bool) -> None:
        """Publish every stream that is due (all of them with `force`); the next due time is
        one period later on the stream's own schedule (from now if it fell a period behind)."""
        for key, period in self.periods.items():
            if not (force or now_ns >= self.due[key]):
                continue
            self.due[key] = now_ns + period if force else max(self.due[key] + period, now_ns + 1)
            if key == "joint_state":
                self.sink["joint_state"](now_ns, self.state_names, *self._state())
            elif key == "image":
                if len(self.cameras) == 1:
                    self.sink["image"](now_ns, self.task.render())
                else:
                    self.sink["images"](now_ns, self.task.render_all())
            else:
                self.sink["clock"](now_ns)

    def _state(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, velocities) of every joint in `state_names` order."""
        if self.state_names == self.names:
            return self.task.joint_positions(), self.task.joint_velocities()
        return self.task.state_positions(), self.task.state_velocities()

    def _update_snapshot(self) -> None:
        task = self.task
        wall = self.clock()
        self._rtf_window.append((wall, self.now_ns))
        while len(self._rtf_window) > 2 and wall - self._rtf_window[0][0] > 2.0:
            self._rtf_window.pop(0)
        (w0, s0) = self._rtf_window[0]
        rtf = (self.now_ns - s0) / NS / (wall - w0) if wall - w0 > 0.05 else float("nan")
        with self._snapshot_lock:
            self._snapshot.update(
                side=self.side,
                passed_side=task.passed_side,
                success=task.success,
                collided=task.collided,
                done=task.done,
                # the episode's length once it has ended (the sim may run on)
                time=((self.episode_end_ns or self.now_ns) - self.episode_start_ns) / NS,
                episode_seed=task.episode_seed,
                sim_time=self.now_ns / NS,
                paused=self.paused,
                real_time_factor=None if math.isnan(rtf) else round(rtf, 3),
                episodes=self.episodes,
                max_joint_excursion=round(self.max_excursion, 4),
                task=self.task_name,
                **self._task_outcome(),
                **self._delay_stats(),
            )

    def _task_outcome(self) -> dict[str, Any]:
        """Task-specific fields of the report (pick_place: the cued bin and how it failed)."""
        if not isinstance(self.task, PickPlaceTask):
            return {}
        result = self.task.result
        return {
            "target_bin": self.task.target_bin(),
            "wrong_bin": result.wrong_bin,
            "dropped": result.dropped,
        }

    def _delay_stats(self) -> dict[str, float | int | None]:
        delays = np.asarray(self.command_delays) * 1e3
        if not len(delays):
            return {"trajectories": 0, "command_delay_p50_ms": None, "command_delay_max_ms": None}
        return {
            "trajectories": len(delays),
            "command_delay_p50_ms": round(float(np.median(delays)), 3),
            "command_delay_max_ms": round(float(delays.max()), 3),
        }

    def _log(self, level: str, text: str) -> None:
        self.sink["log"](level, text)

    def close(self) -> None:
        self.task.close()
