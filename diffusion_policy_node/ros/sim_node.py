"""`sim_node`: the bundled MuJoCo arm (`sim.ArmTask`) as a ROS 2 robot, like Gazebo + ros2_control.

    sim_node --ros-args -p real_time_factor:=1.0 -p camera_rate_hz:=30.0

Publishes (all stamped with simulation time, which starts at 1 s and never jumps back):
  /joint_states          sensor_msgs/JointState (position, velocity, names), joint_state_rate_hz
  /camera/image_raw      sensor_msgs/Image rgb8, image_width x image_height, at camera_rate_hz
  /clock                 rosgraph_msgs/Clock at clock_rate_hz (run other nodes with use_sim_time)
Follows:
  /arm_controller/joint_trajectory       trajectory_msgs/JointTrajectory, with the semantics of
      ros2_control's joint_trajectory_controller (`runtime.TrajectoryFollower`; a new trajectory
      starts from the current *desired* position, like `interpolate_from_desired_state: true`;
      header.stamp 0 = start on receipt, otherwise in simulation time)
  /forward_position_controller/commands  std_msgs/Float64MultiArray: joint position targets
      applied at once (forward_command_controller); the newest command of either kind wins.
Services (std_srvs/Trigger):
  ~/reset    new episode from the `seed` parameter, then `seed` += 1 (set `seed` with
             `ros2 param set` / SetParameters before a reset to choose it; the node starts with
             an episode of the initial `seed`). std_srvs has no seeded reset, hence the
             parameter. Reply: JSON with episode_seed, episode_start (sim time, s) and side
             (expert mode). The arm restarts at home; the current trajectory is dropped.
  ~/report   JSON: success, collided, done, time (s since reset), episode_seed, side,
             sim_time, paused, real_time_factor (measured), episodes.
  ~/pause, ~/unpause   stop / continue physics (while paused only /clock is republished,
             unchanged, every 0.1 s wall time).

Time: one thread steps the physics in `physics_dt` steps, renders and publishes, keeping
simulation time at `real_time_factor` x wall time (1.0 = real time; larger for data collection;
0 = as fast as possible). When the machine cannot keep up, simulation time runs slower (no
catch-up bursts); `~/report` shows the achieved factor. Publications happen at the first physics
step at or after their due time, so stamps are multiples of `physics_dt`.

Expert mode (`expert:=true`): `sim.ScriptedExpert` drives the arm every `control_dt` and its
commands are published on the command topic (JointTrajectory with one point at `control_dt`, or
Float64MultiArray with `expert_output:=stream`), so a recorder captures them as the action
source; external commands are ignored. `pause_on_done:=true` pauses the simulation when an
episode ends (after publishing the final state), `start_paused:=true` starts paused: dp-collect
uses both so every bag holds exactly one episode.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.ros.params import declare_scalar
from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower
from diffusion_policy_node.sim.arm_task import ArmTask, ArmTaskConfig
from diffusion_policy_node.sim.expert import ScriptedExpert

NS = 1_000_000_000
EXPERT_OUTPUTS = ("trajectory", "stream")
# Largest simulation backlog (wall-clock seconds) before the pacer stops trying to catch up.
MAX_LAG_S = 0.1
# Trajectory start stamps further than this from simulation time get a warning (use_sim_time?).
STAMP_WARN_S = 30.0
# Simulation time starts here, not at 0: a zero header.stamp means "unset / now" in ROS
# (joint_trajectory_controller, bag readers), so no message may carry it.
START_TIME_NS = NS
# While paused, /clock is still published (unchanged) this often (wall seconds), like Gazebo.
PAUSED_CLOCK_PERIOD_S = 0.1


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


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

    def __post_init__(self) -> None:
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


class SimEngine:
    """The simulation loop without ROS: commands in, publications out through `sink` callbacks.

    Owns the `ArmTask`; every method except `submit` / `report` must run on the thread that
    created it (the task's rendering context belongs to that thread). `submit` queues work for
    that thread (commands, resets, pause) from any thread; `report` reads a snapshot.

    sink keys: "joint_state"(stamp_ns, names, positions, velocities), "image"(stamp_ns, rgb),
    "clock"(stamp_ns), "trajectory"(stamp_ns, names, tfs (P,), positions (P, D)),
    "stream"(stamp_ns, positions (D,)), "log"(level, text).
    """

    def __init__(
        self,
        task_config: ArmTaskConfig,
        settings: SimSettings,
        sink: dict[str, Callable[..., None]],
        seed: int = 0,
    ) -> None:
        self.settings = settings
        self.sink = sink
        self.task = ArmTask(task_config)
        self.task.render()  # create the rendering context on this thread now
        cfg = task_config
        self.physics_ns = round(cfg.physics_dt * NS)
        self.control_ns = round(cfg.control_dt * NS)
        self.periods = {
            "joint_state": round(NS / settings.joint_state_rate_hz),
            "image": round(NS / settings.camera_rate_hz),
            "clock": round(NS / settings.clock_rate_hz),
        }
        self.names = list(self.task.joint_names)
        self.follower = TrajectoryFollower(dof=len(self.names))
        self.stream_target: np.ndarray | None = None
        self.expert: ScriptedExpert | None = None
        self.steps = 0  # physics steps since start; sim time = steps * physics_ns
        self.episode_start_ns = 0
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
        self._episode_q0 = np.zeros(len(ArmTask.joint_names))
        self._reset(seed)

    # ---------------------------------------------------------------- time
    @property
    def now_ns(self) -> int:
        return START_TIME_NS + self.steps * self.physics_ns

    # ---------------------------------------------------------------- cross-thread API
    def submit(self, kind: str, payload: Any = None, wait: float | None = None) -> dict:
        """Queue `kind` ("trajectory", "stream", "reset", "pause", "unpause") for the sim
        thread; with `wait`, block until it was applied (or raise TimeoutError)."""
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
        anchor_wall, anchor_steps = time.monotonic(), self.steps
        was_paused = self.paused
        next_paused_clock = 0.0
        while not stop.is_set():
            self.handle_requests()
            if self.paused:
                was_paused = True
                if time.monotonic() >= next_paused_clock:
                    self.sink["clock"](self.now_ns)
                    next_paused_clock = time.monotonic() + PAUSED_CLOCK_PERIOD_S
                stop.wait(0.002)
                continue
            if was_paused:  # pacing restarts from here, no catch-up for the paused time
                anchor_wall, anchor_steps, was_paused = time.monotonic(), self.steps, False
            if rtf > 0:
                wall = time.monotonic()
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
            times, positions, start = payload
            if start is not None:
                self.command_delays.append(now - start)
            current = self.follower.sample(now)
            if current is None:
                current = self.stream_target
            if current is None:
                current = self.task.joint_targets()
            self.follower.set_trajectory(times, positions, start, now, current)
            self.stream_target = None
        elif kind == "stream":
            self.follower.clear()
            self.stream_target = np.asarray(payload, dtype=np.float64)
        else:
            raise ValueError(f"unknown request {kind!r}")
        return {}

    def _reset(self, seed: int) -> dict:
        self.task.reset(seed)
        self.follower.clear()
        self.stream_target = None
        self.side = None
        self.command_delays = []
        self.max_excursion = 0.0
        self._episode_q0 = self.task.joint_positions().copy()
        if self.settings.expert:
            self.expert = ScriptedExpert(self.task, seed=seed)
            self.expert.reset()
            self.side = self.expert.side
        self.episode_start_ns = self.now_ns
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
        was_done = task.done
        task.step_physics(task.config.physics_dt)
        self.steps += 1
        if task.done and not was_done:
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
                self.sink["joint_state"](
                    now_ns, self.names, self.task.joint_positions(), self.task.joint_velocities()
                )
            elif key == "image":
                self.sink["image"](now_ns, self.task.render())
            else:
                self.sink["clock"](now_ns)

    def _update_snapshot(self) -> None:
        task = self.task
        wall = time.monotonic()
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
                time=(self.now_ns - self.episode_start_ns) / NS,
                episode_seed=task.episode_seed,
                sim_time=self.now_ns / NS,
                paused=self.paused,
                real_time_factor=None if math.isnan(rtf) else round(rtf, 3),
                episodes=self.episodes,
                max_joint_excursion=round(self.max_excursion, 4),
                **self._delay_stats(),
            )

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


def _descriptor(text: str, int_range: tuple[int, int] | None = None) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=text)
    if int_range is not None:
        desc.integer_range = [IntegerRange(from_value=int_range[0], to_value=int_range[1], step=1)]
    return desc


PARAMS: dict[str, tuple[Any, str]] = {
    "seed": (0, "Layout seed of the next ~/reset (incremented after each reset)."),
    "real_time_factor": (1.0, "Simulation speed / wall speed; 0: as fast as possible."),
    "joint_state_rate_hz": (100.0, "JointState rate (simulation time)."),
    "camera_rate_hz": (30.0, "Camera rate (simulation time)."),
    "clock_rate_hz": (200.0, "/clock rate (simulation time)."),
    "image_width": (96, "Camera image width (px)."),
    "image_height": (96, "Camera image height (px)."),
    "physics_dt": (0.002, "Physics step (s)."),
    "control_dt": (0.1, "Expert command period (s); the data set's dt."),
    "time_limit": (10.0, "Episode length (s of simulation time)."),
    "expert": (False, "Drive the arm with the scripted expert and publish its commands."),
    "expert_output": ("trajectory", "Expert commands as trajectory (JointTrajectory) | stream."),
    "pause_on_done": (False, "Pause when an episode ends."),
    "start_paused": (False, "Start paused (~/unpause to run)."),
    "joint_state_topic": ("/joint_states", "JointState output topic."),
    "camera_topic": ("/camera/image_raw", "Image output topic."),
    "trajectory_topic": ("/arm_controller/joint_trajectory", "JointTrajectory command topic."),
    "stream_topic": ("/forward_position_controller/commands", "Float64MultiArray command topic."),
    "frame_id": ("camera", "header.frame_id of the images."),
    "qos_depth": (10, "Publisher history depth (raise it so slow recorders lose nothing)."),
}


class SimNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "sim_node") -> None:
        super().__init__(node_name)
        for name, (default, text) in PARAMS.items():
            rng = (0, 2**31 - 1) if name == "seed" else None
            declare_scalar(self, name, default, _descriptor(text, rng))
        g = {name: self.get_parameter(name).value for name in PARAMS}
        self.settings = SimSettings(
            joint_state_rate_hz=float(g["joint_state_rate_hz"]),
            camera_rate_hz=float(g["camera_rate_hz"]),
            clock_rate_hz=float(g["clock_rate_hz"]),
            real_time_factor=float(g["real_time_factor"]),
            expert=bool(g["expert"]),
            expert_output=str(g["expert_output"]),
            pause_on_done=bool(g["pause_on_done"]),
            start_paused=bool(g["start_paused"]),
            frame_id=str(g["frame_id"]),
            qos_depth=int(g["qos_depth"]),
        )
        try:
            self.task_config = ArmTaskConfig(
                control_dt=float(g["control_dt"]),
                physics_dt=float(g["physics_dt"]),
                time_limit=float(g["time_limit"]),
                image_width=int(g["image_width"]),
                image_height=int(g["image_height"]),
                seed=int(g["seed"]),
            )
        except ValueError as exc:
            raise ValueError(f"{exc} (set through the parameter of the same name)") from exc
        self._seed = int(g["seed"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        depth = self.settings.qos_depth
        reliable = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
        self._js_pub = self.create_publisher(JointState, g["joint_state_topic"], reliable)
        self._img_pub = self.create_publisher(Image, g["camera_topic"], reliable)
        self._clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.trajectory_topic = str(g["trajectory_topic"])
        self.stream_topic = str(g["stream_topic"])
        self._jt_pub = self._f64_pub = None
        if self.settings.expert:
            if self.settings.expert_output == "trajectory":
                self._jt_pub = self.create_publisher(
                    JointTrajectory, self.trajectory_topic, reliable
                )
            else:
                self._f64_pub = self.create_publisher(
                    Float64MultiArray, self.stream_topic, reliable
                )
        else:
            self.create_subscription(
                JointTrajectory, self.trajectory_topic, self._on_trajectory, 10
            )
            self.create_subscription(Float64MultiArray, self.stream_topic, self._on_stream, 10)
        self.engine: SimEngine | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._sim_thread, name="sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(60.0):
            raise RuntimeError("sim_node: the simulation thread did not start within 60 s")
        if self.error is not None:
            raise RuntimeError(f"sim_node: simulation failed to start: {self.error}")
        for name, handler in (
            ("reset", self._on_reset),
            ("report", self._on_report),
            ("pause", self._pause_handler("pause")),
            ("unpause", self._pause_handler("unpause")),
        ):
            self.create_service(Trigger, f"~/{name}", handler)
        s = self.settings
        self.get_logger().info(
            f"sim_node: {self.task_config.image_width}x{self.task_config.image_height} camera "
            f"at {s.camera_rate_hz:g} Hz, joint states at {s.joint_state_rate_hz:g} Hz, "
            f"real_time_factor={s.real_time_factor:g}, expert={s.expert}, paused={s.start_paused}"
        )

    # ---------------------------------------------------------------- sim thread
    def _sim_thread(self) -> None:
        try:
            self.engine = SimEngine(
                self.task_config,
                self.settings,
                {
                    "joint_state": self._publish_joint_state,
                    "image": self._publish_image,
                    "clock": self._publish_clock,
                    "trajectory": self._publish_trajectory,
                    "stream": self._publish_stream,
                    "log": self._log,
                },
                seed=self._seed,
            )
        except Exception as exc:  # reported by the constructor on the main thread
            self.error = exc
            self._ready.set()
            return
        self._seed += 1  # the constructor ran the first episode with it
        self._ready.set()
        try:
            self.engine.run(self._stop)
        except Exception as exc:
            if not self.context.ok():  # shutdown (Ctrl-C) invalidated the publishers: normal
                return
            self.error = exc
            self.get_logger().fatal(f"simulation thread died: {exc!r}; shutting down")
            rclpy.try_shutdown(context=self.context)  # ends executor.spin in main
        finally:
            self.engine.close()

    def _publish_joint_state(
        self, ns: int, names: list[str], pos: np.ndarray, vel: np.ndarray
    ) -> None:
        msg = JointState()
        msg.header.stamp = ns_to_stamp(ns)
        msg.name = names
        msg.position = pos.tolist()
        msg.velocity = vel.tolist()
        self._js_pub.publish(msg)

    def _publish_image(self, ns: int, rgb: np.ndarray) -> None:
        msg = Image()
        msg.header.stamp = ns_to_stamp(ns)
        msg.header.frame_id = self.settings.frame_id
        msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
        msg.encoding = "rgb8"
        msg.step = msg.width * 3
        msg.data = rgb.tobytes()
        self._img_pub.publish(msg)

    def _publish_clock(self, ns: int) -> None:
        self._clock_pub.publish(Clock(clock=ns_to_stamp(ns)))

    def _publish_trajectory(
        self, ns: int, names: list[str], tfs: np.ndarray, positions: np.ndarray
    ) -> None:
        msg = JointTrajectory()
        msg.header.stamp = ns_to_stamp(ns)
        msg.joint_names = list(names)
        for t, row in zip(tfs, positions, strict=True):
            point = JointTrajectoryPoint()
            point.positions = [float(v) for v in row]
            t_ns = round(float(t) * NS)
            point.time_from_start.sec, point.time_from_start.nanosec = t_ns // NS, t_ns % NS
            msg.points.append(point)
        if self._jt_pub is not None:
            self._jt_pub.publish(msg)

    def _publish_stream(self, ns: int, positions: np.ndarray) -> None:
        msg = Float64MultiArray()
        msg.data = [float(v) for v in positions]
        if self._f64_pub is not None:
            self._f64_pub.publish(msg)

    def _log(self, level: str, text: str) -> None:
        logger = self.get_logger()
        (logger.warning if level == "warn" else logger.info)(text)

    # ---------------------------------------------------------------- callbacks
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "seed":
                self._seed = int(p.value)
            elif p.name in PARAMS:
                return SetParametersResult(
                    successful=False, reason=f"{p.name} is read at start-up only; restart the node"
                )
        return SetParametersResult(successful=True)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        want = list(ArmTask.joint_names)
        bad_names = sorted(names) != sorted(want) or len(set(names)) != len(names)
        if bad_names and (msg.points or names):  # an empty message (hold) needs no names
            self.get_logger().warning(
                f"{self.trajectory_topic}: joint_names {names} must be a permutation of "
                f"{want}; trajectory rejected"
            )
            return
        order = [names.index(n) for n in want] if names else []
        times, rows = [], []
        for j, point in enumerate(msg.points):
            if len(point.positions) != len(names):
                self.get_logger().warning(
                    f"{self.trajectory_topic}: point {j} has {len(point.positions)} positions "
                    f"for {len(names)} joints; trajectory rejected"
                )
                return
            times.append(point.time_from_start.sec + point.time_from_start.nanosec * 1e-9)
            rows.append([point.positions[i] for i in order])
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        engine = self.engine
        if engine is None:
            return
        if stamp and abs(stamp - engine.now_ns / NS) > STAMP_WARN_S:
            self.get_logger().warning(
                f"{self.trajectory_topic}: header.stamp {stamp:.3f} s is far from simulation "
                f"time {engine.now_ns / NS:.3f} s; is the sender running with use_sim_time?",
                throttle_duration_sec=5.0,
            )
        positions = np.array(rows, dtype=np.float64).reshape(len(times), len(want))
        try:
            engine.submit("trajectory", (times, positions, stamp or None), wait=5.0)
        except (ValueError, TimeoutError) as exc:
            self.get_logger().warning(f"{self.trajectory_topic}: trajectory rejected: {exc}")

    def _on_stream(self, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(ArmTask.joint_names)
        if values.shape != (n,) or not np.all(np.isfinite(values)):
            self.get_logger().warning(
                f"{self.stream_topic}: expected {n} finite positions for {ArmTask.joint_names}, "
                f"got {values.tolist()}; command rejected",
                throttle_duration_sec=2.0,
            )
            return
        if self.engine is not None:
            self.engine.submit("stream", values)

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        seed = self._seed
        try:
            result = self._running_engine().submit("reset", seed, wait=10.0)
        except (ValueError, TimeoutError) as exc:
            resp.success, resp.message = False, str(exc)
            return resp
        self.set_parameters([Parameter("seed", value=seed + 1)])
        resp.success, resp.message = True, json.dumps(result)
        return resp

    def _on_report(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = True, json.dumps(self._running_engine().report())
        return resp

    def _pause_handler(self, kind: str) -> Callable[[Trigger.Request, Trigger.Response], Any]:
        def handler(_req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
            try:
                resp.message = json.dumps(self._running_engine().submit(kind, wait=10.0))
                resp.success = True
            except TimeoutError as exc:
                resp.success, resp.message = False, str(exc)
            return resp

        return handler

    def _running_engine(self) -> SimEngine:
        if self.engine is None or self.error is not None:
            raise RuntimeError(f"sim_node: the simulation is not running ({self.error!r})")
        return self.engine

    def shutdown(self, timeout: float = 8.0) -> bool:
        """Stop the simulation thread; False (with its stack on stderr) if it did not stop."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        frame = sys._current_frames().get(self._thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
        print(f"sim_node: simulation thread still running after {timeout} s:\n{stack}",
              file=sys.stderr, flush=True)  # fmt: skip
        return False


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=list(sys.argv if argv is None else argv))
    node = None
    try:
        node = SimNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError) as exc:
        rclpy.logging.get_logger("sim_node").fatal(str(exc))
        return 1
    finally:
        if node is not None and not node.shutdown():
            # A thread stuck in native code (seen once: offscreen GL teardown) must not keep a
            # Ctrl-C'd node alive; its stack is on stderr for diagnosis.
            sys.stdout.flush()
            os._exit(0 if node.error is None else 1)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 1 if node is not None and node.error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
