"""`policy_node`: runs a Diffusion Policy checkpoint in closed loop (design.md §4–§5).

    policy_node --ros-args -p checkpoint:=/path/to/ckpt [--params-file config/policy_node.yaml]

Threads and processes: the control loop runs on its own thread, sleeping until the next grid
time `anchor + k*dt` of the node clock (sim time under `use_sim_time`; woken by /clock jumps),
so no subscription, service or executor overhead can delay it; everything else (subscriptions,
services, diagnostics, /clock) is served by a single-threaded executor whose callbacks are
short. Inference runs in a child process by default (`inference_process`; its Python cannot
hold this process's GIL) or on a worker thread.

Per control tick (`dt` = the checkpoint's step; a different `control_rate_hz` is an error):

1. ingest: the newest camera message of each topic is decoded and resized to the checkpoint's
   image size, and the newest joint state is pushed into the `ObservationHistory`. Subscription
   callbacks only keep the newest *raw* message (plus cheap checks: encoding, stamp order), so a
   1920x1080 flood at 60 Hz costs one decode per tick, not one per message, and camera
   subscriptions use BEST_EFFORT depth 1 so memory stays bounded. A wrong image *size* is
   resized (the data pipeline resizes the same way); a wrong *encoding* is rejected (counted,
   throttled warning). JointStates missing a joint or holding NaN are rejected; stamps older
   than the newest are ignored (counted).
2. staleness: any input older than `max_obs_age` → hold: nothing new is published, the schedule
   and the history are cleared, in-flight chunks are discarded, and in chunk mode one empty
   JointTrajectory tells the controller to stop executing the old points (JTC holds position).
3. merge: a finished chunk is merged into the `ActionSchedule` from index n_obs_steps−1
   (n_action_steps actions, Chi et al.), action i targeting t_obs + i·dt; actions already past
   are dropped.
4. publish: chunk mode publishes a JointTrajectory of the remaining scheduled actions (points at
   least half a tick in the future, time_from_start strictly increasing, header.stamp = now)
   whenever the schedule changed; stream mode publishes one Float64MultiArray per tick from
   `schedule.at(now)`. Everything goes through `SafetyFilter` first.
5. sample + trigger: the history is sampled at the tick time and, when
   `should_start_inference` says so, the next inference is submitted (chunk mode with two
   ticks more lead, so the next trajectory reaches the controller before the current one
   ends).

Services `~/start`, `~/stop`, `~/reset` and `~/status` (std_srvs/Trigger; `~/status` answers
the diagnostics values as JSON); `/diagnostics` at 1 Hz on a steady
timer (so it still reports when sim time does not advance).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.runtime.action_schedule import ActionSchedule
from diffusion_policy_node.runtime.inference_worker import (
    InferenceResult,
    InferenceWorker,
    resolve_device,
    should_start_inference,
)
from diffusion_policy_node.runtime.observation_history import STATE_INPUT, ObservationHistory
from diffusion_policy_node.runtime.process_worker import ProcessInferenceWorker
from diffusion_policy_node.runtime.safety import SafetyFilter
from diffusion_policy_node.runtime.trajectory_follower import TrajectoryFollower

from .conversions import (
    JointStateSelector,
    check_image_msg,
    diagnostic_status,
    float64_array_msg,
    image_msg_to_rgb,
    is_zero_stamp,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_msg,
)
from .params import (
    NodeSettings,
    PolicyNodeParams,
    declare_and_read,
    resolve_limits,
    resolve_settings,
)

SENSOR_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=QoSReliabilityPolicy.BEST_EFFORT,
    durability=QoSDurabilityPolicy.VOLATILE,
)
COMMAND_QOS = QoSProfile(depth=10)
WARN_THROTTLE_S = 5.0
COUNTERS = (
    "ticks",
    "chunks",
    "chunks_discarded",
    "nonfinite_chunks",
    "dropped_actions",
    "dry_ticks",
    "commands",
    "holds",
    "resets",
    "bad_images",
    "bad_joint_states",
    "bad_stamps",
    "out_of_order",
    "tick_errors",
)


class TickTiming:
    """Lateness of the control loop against its ideal grid (node clock): when each tick
    started, when a command was published (the moment `publish` returned; stream mode publishes
    every tick, chunk mode on the ticks where the schedule changed) and when the tick's work
    (observation sampling, starting inference) was done. `missed` counts grid points skipped
    because a tick overran (the loop then continues on the grid, it never bunches ticks)."""

    def __init__(self, dt: float, window: int = 4000) -> None:
        self.dt = float(dt)
        self.window = window
        self.reset()

    def reset(self) -> None:
        """Clear the statistics."""
        self.ticks = 0
        self.missed = 0
        self.tick_lateness: deque[float] = deque(maxlen=self.window)
        self.publish_lateness: deque[float] = deque(maxlen=self.window)
        self.done_lateness: deque[float] = deque(maxlen=self.window)

    def tick(self, ideal: float, t_start: float, skipped: int = 0) -> None:
        """A tick due at `ideal` started at `t_start`, after `skipped` missed grid points."""
        self.ticks += 1
        self.missed += skipped
        self.tick_lateness.append(t_start - ideal)

    def published(self, ideal: float, t: float) -> None:
        """The tick due at `ideal` published a command at `t`."""
        self.publish_lateness.append(t - ideal)

    def done(self, ideal: float, t: float) -> None:
        """The tick due at `ideal` finished its work at `t`."""
        self.done_lateness.append(t - ideal)

    @staticmethod
    def _pct(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
        if not values:
            return None, None, None
        a = np.asarray(values) * 1e3
        p50, p99 = np.percentile(a, [50, 99])
        return float(p50), float(p99), float(a.max())

    def snapshot(self) -> tuple[list[float], list[float], list[float], int, int]:
        """Cheap copy of the raw figures (taken under the node's lock; see `summarize`)."""
        return (
            list(self.publish_lateness),
            list(self.tick_lateness),
            list(self.done_lateness),
            self.ticks,
            self.missed,
        )

    @classmethod
    def summarize(
        cls, snapshot: tuple[list[float], list[float], list[float], int, int]
    ) -> dict[str, float | int | None]:
        publish, start, done, ticks, missed = snapshot
        p50, p99, mx = cls._pct(publish)
        s50, s99, smx = cls._pct(start)
        d50, d99, dmx = cls._pct(done)
        return {
            "jitter_p50_ms": p50,
            "jitter_p99_ms": p99,
            "jitter_max_ms": mx,
            "published_ticks": len(publish),
            "tick_start_p50_ms": s50,
            "tick_start_p99_ms": s99,
            "tick_start_max_ms": smx,
            "tick_done_p50_ms": d50,
            "tick_done_p99_ms": d99,
            "tick_done_max_ms": dmx,
            "timed_ticks": ticks,
            "missed_ticks": missed,
        }


class PolicyNode(Node):
    """The closed-loop policy node; see the module docstring."""

    def __init__(self, node_name: str = "policy_node", **kwargs: object) -> None:
        super().__init__(node_name, **kwargs)
        self._clock = self.get_clock()
        params = declare_and_read(self)
        config, _ = read_config(params.checkpoint)  # clear CheckpointError, before torch
        self.settings: NodeSettings = resolve_settings(params, config)
        self._running = True
        self.worker, policy_info = self._start_worker(params)
        try:
            self._setup(params, policy_info)
        except BaseException:
            self.worker.close(timeout=2.0)
            raise

    def _setup(self, params: PolicyNodeParams, policy_info: dict[str, object]) -> None:
        self.device = str(policy_info["device"])
        limits = resolve_limits(
            params,
            policy_info["action_min"],  # type: ignore[arg-type]
            policy_info["action_max"],  # type: ignore[arg-type]
            len(self.settings.joint_names),
        )
        self.params = params
        s = self.settings
        self.dt = s.dt
        self.chunk_mode = params.output_mode == "chunk"
        # Chunk mode must publish the next trajectory while the controller still executes the
        # current one: a chunk is merged on the tick after it lands and published on that
        # tick, so start inference two ticks earlier than stream mode needs to.
        self._lead = params.inference_margin + (2 * s.dt if self.chunk_mode else 0.0)

        # ROS-free runtime pieces (tick thread only, under self._lock).
        self.history = ObservationHistory(
            s.n_obs_steps, s.camera_topics, len(s.joint_names), image_shape=s.image_size
        )
        self.schedule = ActionSchedule(s.dt, mode=params.blend_mode, ensemble_m=params.ensemble_m)
        self.safety = SafetyFilter(limits, s.dt)
        self.mirror = TrajectoryFollower(dof=len(s.joint_names))  # what the JTC executes
        self.timing = TickTiming(s.dt)
        self._tick_ideal = 0.0  # ideal time of the tick being run (for TickTiming)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._lock = threading.Lock()
        self._input_lock = threading.Lock()
        self._selector = JointStateSelector(s.joint_names)
        self._new_images: dict[str, tuple[Image | CompressedImage, float]] = {}
        self._new_state: tuple[np.ndarray, float] | None = None
        self._last_input_stamp: dict[str, float] = {}
        self._measured: np.ndarray | None = None
        self._prev_cmd: np.ndarray | None = None
        self._published_version = self.schedule.version
        self._active = params.start_active
        self._holding = False
        self._hold_reason = "no observation yet"
        self._epoch = -np.inf  # results observed before this time are discarded
        self._inflight: tuple[float, float] | None = None  # (t_obs, oldest input stamp)
        self._pending_obs_stamp: float | None = None
        self.obs_to_cmd: deque[float] = deque(maxlen=1000)

        if params.warmup_runs > 0:
            warm = self.worker.warm_up(self._dummy_batch(), n=params.warmup_runs)
            self.get_logger().info(
                f"warm-up: {params.warmup_runs} inference(s) on {self.device}, last "
                f"{warm.latency_s * 1e3:.1f} ms"
            )

        for topic in s.camera_topics:
            msg_type = CompressedImage if topic.rstrip("/").endswith("/compressed") else Image
            self.create_subscription(
                msg_type,
                topic,
                lambda msg, topic=topic: self._on_image(msg, topic),
                SENSOR_QOS,
            )
        self.create_subscription(
            JointState, params.joint_state_topic, self._on_joint_state, SENSOR_QOS
        )
        msg_type = JointTrajectory if self.chunk_mode else Float64MultiArray
        self._cmd_pub = self.create_publisher(msg_type, s.output_topic, COMMAND_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for name, handler in (
            ("start", self._srv_start),
            ("stop", self._srv_stop),
            ("reset", self._srv_reset),
            ("status", self._srv_status),
        ):
            self.create_service(Trigger, f"~/{name}", handler)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, clock=self._steady)
        # Control loop: its own thread on the node clock (see the module docstring).
        self._wake = threading.Condition()
        self._jumped_back = False
        self._jump_handle = self._clock.create_jump_callback(
            JumpThreshold(
                min_forward=Duration(nanoseconds=1),
                min_backward=Duration(nanoseconds=-1),
                on_clock_change=True,
            ),
            post_callback=self._on_time_jump,
        )
        self._control_thread = threading.Thread(
            target=self._control_loop, name="dp-control", daemon=True
        )
        self._control_thread.start()
        self.get_logger().info(
            f"policy_node ready: {params.checkpoint} on {self.device} "
            f"({'process' if params.inference_process else 'thread'}), "
            f"{s.control_rate_hz:g} Hz, "
            f"{params.output_mode} mode -> {s.output_topic}, cameras {list(s.camera_topics)}, "
            f"joints {list(s.joint_names)}, {'active' if self._active else 'stopped'}"
        )

    # ------------------------------------------------------------------------------ helpers
    def now_s(self) -> float:
        """Node clock (sim time under use_sim_time) in float seconds."""
        return self._clock.now().nanoseconds * 1e-9

    def _start_worker(
        self, params: PolicyNodeParams
    ) -> tuple[InferenceWorker | ProcessInferenceWorker, dict[str, object]]:
        """The inference worker (child process or thread) and the policy's device and
        action range (for the default limits)."""
        steps = params.num_inference_steps or None
        seed = params.seed if params.seed >= 0 else None
        threads = params.torch_threads or None
        if params.inference_process:
            worker = ProcessInferenceWorker(
                params.checkpoint,
                clock=self.now_s,
                device=params.device,
                num_inference_steps=steps,
                seed=seed,
                torch_threads=threads,
                nice=params.inference_nice,
                acceleration=params.acceleration,
            )
            return worker, worker.policy_info
        device = resolve_device(params.device)
        policy = load_checkpoint(
            params.checkpoint,
            device=device,
            num_inference_steps=steps,
            acceleration=params.acceleration,
        )
        if seed is not None:
            policy.seed(seed)
        info = {
            "device": device,
            "action_min": policy.action_normalizer.min.detach().cpu().numpy(),
            "action_max": policy.action_normalizer.max.detach().cpu().numpy(),
        }
        worker = InferenceWorker(policy, clock=self.now_s, device=device, torch_threads=threads)
        return worker, info

    def _dummy_batch(self) -> dict[str, np.ndarray]:
        s = self.settings
        h, w = s.image_size
        return {
            OBS_IMAGES: np.zeros((1, s.n_obs_steps, len(s.camera_topics), 3, h, w), np.uint8),
            OBS_STATE: np.zeros((1, s.n_obs_steps, len(s.joint_names)), np.float32),
        }

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Parameters are read once at start-up: refuse changes instead of ignoring them."""
        names = [p.name for p in params if p.name != "use_sim_time"]
        if names:
            return SetParametersResult(
                successful=False,
                reason=f"policy_node reads {names} at start-up only; restart the node to change",
            )
        return SetParametersResult(successful=True)

    def _count(self, name: str) -> None:
        """Increment an input counter (shared by the executor and the control thread)."""
        with self._input_lock:
            self.counters[name] += 1

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=WARN_THROTTLE_S)

    def _stamp_of(self, header_stamp: object, now: float) -> float:
        """Header stamp in seconds; an unset (zero) stamp means the receive time."""
        return now if is_zero_stamp(header_stamp) else stamp_to_sec(header_stamp)

    def _accept_stamp(self, name: str, stamp: float, now: float) -> bool:
        """Cheap ordering/clock checks in the callback (call with _input_lock held)."""
        if stamp > now + self.params.max_obs_age:
            self.counters["bad_stamps"] += 1
            self._warn(
                f"{name}: message stamped {stamp - now:.3f} s in the future, ignored (clock "
                "mismatch? check use_sim_time and the publisher's clock)"
            )
            return False
        last = self._last_input_stamp.get(name)
        if last is not None and stamp < last:
            self.counters["out_of_order"] += 1
            self._warn(f"{name}: message stamped {last - stamp:.3f} s before the newest, ignored")
            return False
        self._last_input_stamp[name] = stamp
        return True

    # ------------------------------------------------------------------------------ inputs
    def _on_image(self, msg: Image | CompressedImage, topic: str) -> None:
        now = self.now_s()
        where = f"camera topic {topic}"
        try:
            check_image_msg(msg, where)
        except ValueError as exc:
            self._count("bad_images")
            self._warn(f"image rejected: {exc}")
            return
        stamp = self._stamp_of(msg.header.stamp, now)
        with self._input_lock:
            if self._accept_stamp(topic, stamp, now):
                self._new_images[topic] = (msg, stamp)

    def _on_joint_state(self, msg: JointState) -> None:
        now = self.now_s()
        try:
            positions = self._selector.select(
                msg, f"joint state topic {self.params.joint_state_topic}"
            )
        except ValueError as exc:
            self._count("bad_joint_states")
            self._warn(f"joint state rejected: {exc}")
            return
        stamp = self._stamp_of(msg.header.stamp, now)
        with self._input_lock:
            if self._accept_stamp(STATE_INPUT, stamp, now):
                self._new_state = (positions, stamp)

    def _ingest(self) -> None:
        """Decode the newest raw image(s) and push the newest state into the history."""
        with self._input_lock:
            images, self._new_images = self._new_images, {}
            state, self._new_state = self._new_state, None
        for topic, (msg, stamp) in images.items():
            try:
                rgb = image_msg_to_rgb(msg, self.settings.image_size, f"camera topic {topic}")
            except ValueError as exc:
                self._count("bad_images")
                self._warn(f"image rejected: {exc}")
                continue
            if not self.history.update_image(topic, rgb, stamp):
                self._count("out_of_order")
        if state is not None:
            positions, stamp = state
            if self.history.update_state(positions.astype(np.float32), stamp):
                self._measured = positions
            else:
                self._count("out_of_order")

    # ------------------------------------------------------------------------------ control
    def _on_time_jump(self, jump: object) -> None:
        """Clock jump callback (every /clock update under sim time, and clock changes)."""
        with self._wake:
            if jump.delta.nanoseconds < 0 or jump.clock_change in (  # type: ignore[attr-defined]
                ClockChange.ROS_TIME_ACTIVATED,
                ClockChange.ROS_TIME_DEACTIVATED,
            ):
                self._jumped_back = True
            self._wake.notify_all()

    def _wait_until(self, target: float) -> bool:
        """Sleep until the node clock reaches `target`; False when the clock jumped back (or
        its source changed) or the node is closing."""
        lead = self.params.spin_lead_ms * 1e-3
        while self._running:
            with self._wake:
                if self._jumped_back:
                    self._jumped_back = False
                    return False
                remaining = target - self.now_s()
                if remaining <= 0:
                    return True
                if self._clock.ros_time_is_active:
                    # Sim time advances only with /clock messages, which notify us; the real-time
                    # timeout only guards against a missed notification.
                    self._wake.wait(0.1)
                    continue
                if remaining > lead:
                    self._wake.wait(remaining - lead)
                    continue
            # The last `lead` seconds: busy-wait (outside the lock), so that the thread is
            # already on a CPU at the tick instead of waiting to be scheduled after a wake-up.
            end = time.perf_counter() + remaining
            while time.perf_counter() < end and self._running:
                pass
        return False

    def _control_loop(self) -> None:
        """Ticks at anchor + k*dt (node clock); an overrun skips grid points, never bunches."""
        self._set_priority(self.params.control_priority)
        while self._running and self._clock.ros_time_is_active and self.now_s() == 0.0:
            with self._wake:  # sim time: wait for the first /clock message
                self._wake.wait(0.1)
        anchor = self.now_s()
        k = 0
        while self._running:
            k += 1
            ideal = anchor + k * self.dt
            if not self._wait_until(ideal):
                if not self._running:
                    break
                anchor, k = self.now_s(), 0  # clock jumped back (sim restart): new grid
                with self._lock:
                    self.get_logger().warning("node clock jumped back: restarting the episode")
                    self._restart(anchor)
                continue
            t_start = self.now_s()
            skipped = int((t_start - ideal) / self.dt + 1e-9)
            if self._clock.ros_time_is_active and skipped * self.dt > 1.0:
                anchor, k, ideal, skipped = t_start - self.dt, 1, t_start, 0  # sim time leapt
            k += skipped
            ideal += skipped * self.dt
            self._on_tick(ideal, t_start, skipped)

    def _set_priority(self, priority: int) -> None:
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(
                threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority)
            )
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(
                f"control_priority {priority}: cannot use SCHED_FIFO ({exc}); running with "
                "normal scheduling (grant rtprio, e.g. in /etc/security/limits.conf)"
            )

    def _on_tick(self, ideal: float, t_start: float, skipped: int) -> None:
        with self._lock:
            self.timing.tick(ideal, t_start, skipped)
            self._tick_ideal = ideal
            self.counters["ticks"] += 1
            try:
                self._ingest()
                # Tick time read after ingest: every input is stamped at or before it.
                self._tick(self.now_s())
            except Exception as exc:  # last line of defence: the loop must keep running
                if not self.context.ok() or not self._running:
                    return  # shutting down (Ctrl-C/SIGTERM): publishers are gone
                self.counters["tick_errors"] += 1
                self.get_logger().error(
                    f"control tick failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=WARN_THROTTLE_S,
                )
                self._halt(self.now_s())
            self.timing.done(ideal, self.now_s())

    def _tick(self, now: float) -> None:
        """One control step at tick time `now` (inputs already ingested)."""
        result = self.worker.poll()
        if result is not None and not result.ok:
            self.get_logger().error(
                f"inference failed: {type(result.error).__name__}: {result.error}",
                throttle_duration_sec=WARN_THROTTLE_S,
            )
            self._inflight = None
            result = None
        if not self._active:
            return
        if not self.worker.alive:
            self._hold(now, f"inference worker stopped: {self.worker.last_error}")
            return
        stale = self.history.is_stale(now, self.params.max_obs_age)
        if stale:
            self._hold(now, stale.reason)
            return
        if self._holding:
            self._holding = False
            self.get_logger().info("inputs fresh again: resuming")
        if result is not None:
            self._merge(result, now)
        if self.counters["chunks"] and self.schedule.is_dry(now):
            # No action for this tick although chunks arrive (latency > chunk span, or late).
            self.counters["dry_ticks"] += 1
        self._publish(now)
        self.history.sample(now)
        self._maybe_start_inference(now)

    def _hold(self, now: float, reason: str) -> None:
        if not self._holding:
            self._holding = True
            self.counters["holds"] += 1
            self.get_logger().warning(f"holding: {reason}")
            self._halt(now)
        self._hold_reason = reason

    def _halt(self, now: float) -> None:
        """Forget every planned action (hold, stop, reset); in chunk mode tell the controller
        to stop executing the last trajectory (an empty JointTrajectory makes JTC hold)."""
        self.schedule.clear()
        self._published_version = self.schedule.version
        self.history.reset()
        self._epoch = now
        self._inflight = None
        self._pending_obs_stamp = None
        self._prev_cmd = None
        if self.chunk_mode and self.mirror.has_trajectory:
            self._cmd_pub.publish(
                trajectory_msg(self.settings.joint_names, sec_to_stamp(now), [], np.zeros((0,)))
            )
        self.mirror.clear()

    def _merge(self, result: InferenceResult, now: float) -> None:
        inflight, self._inflight = self._inflight, None
        if result.t_obs < self._epoch or result.chunk is None:
            self.counters["chunks_discarded"] += 1
            return
        start = self.settings.n_obs_steps - 1
        actions = result.chunk[start : start + self.settings.n_action_steps]
        if actions.shape[0] == 0 or not np.all(np.isfinite(actions)):
            self.counters["nonfinite_chunks"] += 1
            self._warn("inference returned a chunk with NaN/inf (or empty): discarded")
            return
        kept = self.schedule.merge(actions, t0=result.t_obs, now=now)
        self.counters["chunks"] += 1
        self.counters["dropped_actions"] += actions.shape[0] - kept
        if kept and inflight is not None and inflight[0] == result.t_obs:
            self._pending_obs_stamp = inflight[1]

    def _publish(self, now: float) -> None:
        publish = self._publish_trajectory if self.chunk_mode else self._publish_stream
        published = publish(now)
        if published and self._pending_obs_stamp is not None:
            self.obs_to_cmd.append(self.now_s() - self._pending_obs_stamp)
            self._pending_obs_stamp = None

    def _publish_stream(self, now: float) -> bool:
        cmd = self.schedule.at(now)
        if cmd is None:
            return False
        previous = self._prev_cmd if self._prev_cmd is not None else self._measured
        safe = self.safety.filter(cmd, previous)
        if safe is None:
            return False  # NaN/inf: the forward controller keeps the previous command
        self._cmd_pub.publish(float64_array_msg(safe))
        self.timing.published(self._tick_ideal, self.now_s())
        self._prev_cmd = safe
        self.counters["commands"] += 1
        return True

    def _publish_trajectory(self, now: float) -> bool:
        if self.schedule.version == self._published_version:
            return False
        self._published_version = self.schedule.version
        times, actions = self.schedule.remaining(now)
        future = times > now + 0.5 * self.dt
        times, actions = times[future], actions[future]
        if times.size == 0:
            return False
        start = self.mirror.sample(now) if self.mirror.has_trajectory else self._measured
        if start is None:
            return False
        safe = self.safety.filter_trajectory(actions, start)
        if safe is None:
            return False
        rel = times - now
        self._cmd_pub.publish(
            trajectory_msg(self.settings.joint_names, sec_to_stamp(now), rel.tolist(), safe)
        )
        self.timing.published(self._tick_ideal, self.now_s())
        self.mirror.set_trajectory(rel, safe, start_time=now, now=now, current_position=start)
        self.counters["commands"] += 1
        return True

    def _maybe_start_inference(self, now: float) -> None:
        if self.worker.busy:
            return
        if not should_start_inference(
            now,
            self.schedule.horizon_end(),
            self.worker.latency_estimate,
            self.dt,
            self._lead,
        ):
            return
        batch, t_obs = self.history.as_batch()
        ages = self.history.ages(now)
        oldest = max(a for a in ages.values() if a is not None)
        if self.worker.submit(batch, t_obs):
            self._inflight = (t_obs, now - oldest)

    # ------------------------------------------------------------------------------ services
    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            was = self._active
            self._active = True
            if not was:
                self._holding = False
            # Timing statistics (jitter, obs-to-command) count from the latest ~/start.
            self.timing.reset()
            self.obs_to_cmd.clear()
        resp.success = True
        resp.message = "already active" if was else "started"
        self.get_logger().info(f"~/start: {resp.message}")
        return resp

    def _srv_stop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            was = self._active
            self._active = False
            self._holding = False
            self._halt(self.now_s())
        resp.success = True
        resp.message = "stopped" if was else "already stopped"
        self.get_logger().info(f"~/stop: {resp.message}")
        return resp

    def _restart(self, now: float) -> None:
        """New episode (~/reset, clock jumped back): forget plans, history, in-flight chunks,
        input stamp order, and reset the policy (call with _lock held)."""
        self._halt(now)
        self.worker.reset()  # discards in-flight results, policy.reset() on its side
        with self._input_lock:
            self._last_input_stamp.clear()
            self._new_images.clear()
            self._new_state = None

    def _srv_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._restart(self.now_s())
            self.counters["resets"] += 1
        resp.success = True
        resp.message = "history, schedule and policy reset"
        self.get_logger().info("~/reset: history, schedule and policy reset")
        return resp

    def _srv_status(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """The /diagnostics values as one JSON object (for scripts such as dp-eval)."""
        _, _, values = self.diagnostics_values()
        resp.success, resp.message = True, json.dumps(values)
        return resp

    # ------------------------------------------------------------------------------ diagnostics
    def state(self) -> tuple[str, str]:
        """(state, reason): active | holding | stopped."""
        if not self._active:
            return "stopped", ""
        if self._holding:
            return "holding", self._hold_reason
        return "active", ""

    def diagnostics_values(self) -> tuple[str, str, dict[str, object]]:
        """(state, reason, values) for /diagnostics. Only copies are taken under the lock (the
        control tick waits for it); statistics are computed afterwards."""
        with self._lock:
            state, reason = self.state()
            ages = self.history.ages(self.now_s())
            counters = dict(self.counters)
            timing = self.timing.snapshot()
            obs_to_cmd = list(self.obs_to_cmd)
            clamps = (
                self.safety.position_clamp_count,
                self.safety.velocity_clamp_count,
                self.safety.nonfinite_count,
            )
        values: dict[str, object] = {"state": state, "hold_reason": reason}
        lat = self.worker.latency_stats()
        values["inference_latency_p50_ms"] = None if lat.p50 is None else lat.p50 * 1e3
        values["inference_latency_p90_ms"] = None if lat.p90 is None else lat.p90 * 1e3
        values["inference_count"] = self.worker.completed_count
        values["inference_errors"] = self.worker.error_count
        values.update(TickTiming.summarize(timing))
        if obs_to_cmd:
            values["obs_to_cmd_p50_ms"] = float(np.percentile(obs_to_cmd, 50) * 1e3)
            values["obs_to_cmd_max_ms"] = float(np.max(obs_to_cmd) * 1e3)
        for name, age in ages.items():
            values[f"obs_age_ms[{name}]"] = None if age is None else age * 1e3
        values.update(counters)
        values["position_clamps"], values["velocity_clamps"], values["nonfinite_commands"] = clamps
        values["device"] = self.device
        values["output_mode"] = self.params.output_mode
        values["control_rate_hz"] = self.settings.control_rate_hz
        return state, reason, values

    def _publish_diagnostics(self) -> None:
        state, reason, values = self.diagnostics_values()
        level = {"active": DiagnosticStatus.OK, "stopped": DiagnosticStatus.OK}.get(
            state, DiagnosticStatus.WARN
        )
        msg = DiagnosticArray()
        msg.header.stamp = self._clock.now().to_msg()
        msg.status = [
            diagnostic_status(
                f"{self.get_name()}: policy",
                level,
                f"{state}: {reason}" if reason else state,
                values,
                hardware_id=self.device,
            )
        ]
        self._diag_pub.publish(msg)

    def close(self) -> None:
        """Stop the control thread and the inference worker (bounded waits)."""
        self._running = False
        with self._wake:
            self._wake.notify_all()
        if self._control_thread.is_alive():
            self._control_thread.join(2.0)
        self.worker.close(timeout=5.0)


def main(argv: list[str] | None = None) -> int:
    """Console entry point; 0 on Ctrl-C/SIGTERM, 1 on a start-up error."""
    args = list(sys.argv if argv is None else argv)
    rclpy.init(args=args)
    node: PolicyNode | None = None
    executor: SingleThreadedExecutor | None = None
    try:
        try:
            node = PolicyNode()
        except (ValueError, RuntimeError, OSError) as exc:
            rclpy.logging.get_logger("policy_node").fatal(f"cannot start: {exc}")
            return 1
        # Shorter GIL hand-offs: the control thread waits at most ~1 ms for the interpreter
        # when it wakes while another thread runs Python (default 5 ms).
        sys.setswitchinterval(0.001)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGTERM shuts the context down under the executor's feet; some rclpy versions then
        # raise RCLError from the wait set instead of ExternalShutdownException.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.close()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
