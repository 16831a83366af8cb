"""The control tick, ROS-free (docs/design.md#timing-model): what `policy_node` does every `dt`.

`Controller` owns the observation history, the action schedule, the safety filter and the
decision when to start inference; the ROS node only converts messages, wires topics and services,
and runs the control thread. Time comes from an injected clock (float seconds: the node clock,
sim time under `use_sim_time`), commands leave through an injected `publish(Command)` sink, so
the whole tick is tested with a fake clock and a list, without DDS or sleeps.

Per tick (`tick(ideal, t_start, skipped)`):

1. ingest: the newest raw camera message of each topic (kept by `offer_image` from the
   subscription callbacks, with cheap stamp checks) is decoded and resized by the injected
   `decode`, and the newest joint state is pushed into the `ObservationHistory`. Joint states
   are merged by name from any number of publishers (`offer_joint_state`,
   `joint_states.JointStateMerger`): the newest position of each joint, the observation stamped
   with the oldest of them, so each joint is aged on its own; a message naming a joint twice is
   refused (counted in `bad_joint_states`, one WARN per joint).
2. staleness: any input older than `max_obs_age` (or the worker gone) → hold: nothing new is
   published, the schedule and the history are cleared, in-flight chunks are discarded, and in
   chunk mode one empty trajectory tells the controller to stop executing the old points.
3. merge: a finished chunk is merged into the `ActionSchedule` from index n_obs_steps−1 (its
   whole horizon — the plan only for `ensemble` —, action i at grid step t_obs + i·dt, to be
   reached at that + action_lead);
   actions already past are dropped — unless the arm stood still since before the observation
   (first chunk, after a hold or a dry schedule): then the chunk starts at its landing tick
   (`_chunk_start`). The plan is the first n_action_steps of them: the next
   inference is timed to land before the plan ends; the rest of the horizon is executed only
   when it is late (an overrun, reported), so a slow model keeps moving instead of stopping.
4. publish, per action group kind (settings.groups): the JointTrajectory groups get the
   remaining schedule as one trajectory Command (points at least half a tick in the future)
   whenever the schedule changed; the Float64MultiArray groups one stream Command per tick
   from `schedule.at(now)`. Each path has its own `SafetyFilter` over its joints (limits per
   joint, clamps counted per joint); the node splits a Command into its groups' messages.
5. sample + trigger: the history is sampled at the tick time and, when
   `should_start_inference` says so, the next inference is submitted (chunk mode with two ticks
   more lead, so the next trajectory reaches the controller before the current one ends).

Threads: `offer_*` and `reject_input` are called from subscription callbacks (any thread);
`tick`, the services (`start`, `stop`, `reset`, `restart`) and `diagnostics_values` take the
controller's lock, so a stop can never be overtaken by a trajectory computed before it.

The input side lives in controller_inputs.py, the reports in controller_diagnostics.py (base
classes of `Controller`), each output path's columns and safety filter in output_path.py.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from diffusion_policy_node.joint_states import JointStateMerger
from diffusion_policy_node.policy.constants import (
    INPAINT_ACTIONS,
    INPAINT_WEIGHTS,
    OBS_IMAGES,
    OBS_STATE,
)

from .action_schedule import ActionSchedule
from .controller_diagnostics import ControllerDiagnostics
from .controller_inputs import ControllerInputs
from .inference_worker import InferenceResult, LatencyStats, should_start_inference
from .inpaint import inpaint_request
from .limits import resolve_limits
from .observation_history import STATE_INPUT, ObservationHistory
from .output_path import OutputPath
from .safety import SafetyLimits
from .settings import NodeSettings, PolicyInfo
from .timing import TickTiming
from .trajectory_follower import TrajectoryFollower
from .trajectory_shape import point_derivatives

TRAJECTORY = "trajectory"
STREAM = "stream"
TICK_COUNTERS = (
    "ticks",
    "chunks",
    "chunks_discarded",
    "nonfinite_chunks",
    "dropped_actions",
    "dry_ticks",
    "commands",
    "holds",
    "resets",
    "tick_errors",
    "overruns",
    "inference_timeouts",
    "worker_restarts",
)
INPUT_COUNTERS = ("bad_images", "bad_joint_states", "bad_stamps", "out_of_order")

Log = Callable[[str, str, bool], None]  # (level "info"|"warning"|"error", text, throttle)


@dataclass(frozen=True, eq=False)
class Command:
    """One command for the arm controller, stamped `stamp` (node clock, seconds).

    `joints` names the columns (the joints of the groups of this kind, in action order).
    `kind` TRAJECTORY: `positions` (N, D) reached `times` (N,) seconds after `stamp`; N = 0 is
    the stop message (a joint_trajectory_controller then holds position). `kind` STREAM:
    `positions` (D,), one position command for this tick (`times` is None)."""

    kind: str
    stamp: float
    positions: np.ndarray
    times: np.ndarray | None = None
    joints: tuple[str, ...] = ()
    # TRAJECTORY: per point (N, D), or None when the points carry positions only
    velocities: np.ndarray | None = None
    accelerations: np.ndarray | None = None

    @property
    def is_stop(self) -> bool:
        return self.kind == TRAJECTORY and self.positions.shape[0] == 0


class Worker(Protocol):
    """What the controller needs of an inference worker (`InferenceWorker`,
    `ProcessInferenceWorker`, or a fake in tests)."""

    busy: bool
    alive: bool
    last_error: BaseException | None
    latency_estimate: float | None
    completed_count: int
    error_count: int

    def submit(self, obs: Mapping[str, Any], t_obs: float) -> bool: ...
    def poll(self) -> InferenceResult | None: ...
    def reset(self) -> None: ...
    def warm_up(self, obs: Mapping[str, Any], n: int = 2) -> InferenceResult: ...
    def latency_stats(self) -> LatencyStats: ...


def _default_log(level: str, text: str, throttle: bool) -> None:
    import logging

    getattr(logging.getLogger("diffusion_policy_node"), level)(text)


class Controller(ControllerInputs, ControllerDiagnostics):
    """The control tick; see the module docstring."""

    def __init__(
        self,
        settings: NodeSettings,
        info: PolicyInfo,
        worker: Worker,
        clock: Callable[[], float],
        publish: Callable[[Command], None],
        decode: Callable[[str, Any], np.ndarray],
        log: Log = _default_log,
        respawn: Callable[[], None] | None = None,
        limits: SafetyLimits | None = None,
    ) -> None:
        """`decode(topic, raw)` turns a raw camera message into RGB (H, W, 3) uint8 at
        `settings.image_size` (ValueError when it cannot); `publish(command)` sends a command
        (called with the controller's lock held, so keep it short). `respawn()` is called when
        the worker hung or died: it must start a new worker without blocking and hand it over
        with `replace_worker` (None: the node holds until restarted). `limits` of the
        commanded joints (`runtime/limits.py`); None: from the demonstrations alone."""
        s = self.settings = settings
        self.info = info
        self.worker = worker
        self.clock = clock
        self._publish_sink = publish
        self._decode = decode
        self._log = log
        self._respawn = respawn
        p = s.params
        # Chunk mode must publish the next trajectory while the controller still executes the
        # current one: a chunk is merged on the tick after it lands and published on that
        # tick, so start inference two ticks earlier than stream mode needs to.
        self.lead = p.inference_margin + (2 * s.dt if s.has_trajectory else 0.0)
        self.history = ObservationHistory(
            s.n_obs_steps, s.camera_topics, len(s.joint_names), image_shape=s.image_size
        )
        self.schedule = ActionSchedule(s.dt, mode=s.schedule_mode, ensemble_m=p.ensemble_m)
        if limits is None:
            limits = resolve_limits(s, info.action_min, info.action_max)[0]
        self.limits = limits
        # Columns of the action vector per output path, and the state column of each action.
        self.paths = {
            kind: OutputPath(s, limits, want_trajectory=kind == TRAJECTORY)
            for kind in (TRAJECTORY, STREAM)
            if (s.has_trajectory if kind == TRAJECTORY else s.has_stream)
        }
        traj = self.paths.get(TRAJECTORY)
        # what the trajectory controller executes
        self.mirror = TrajectoryFollower(dof=len(traj.joints) if traj else 1)
        self.timing = TickTiming(s.dt)
        self.counters = dict.fromkeys(TICK_COUNTERS + INPUT_COUNTERS, 0)
        self.obs_to_cmd: deque[float] = deque(maxlen=1000)
        self._lock = threading.RLock()
        self._input_lock = threading.Lock()
        self._new_inputs: dict[str, tuple[Any, float]] = {}
        self._last_input_stamp: dict[str, float] = {}
        self._measured: np.ndarray | None = None  # newest joint positions
        self.joints = JointStateMerger(s.joint_names)  # newest of each joint, own stamps
        self._rejected: dict[str, str] = {}  # input -> why its newest message was refused
        self._notes: dict[str, str] = {}  # input -> why it may never arrive (graph checks)
        self._warned_duplicates: set[str] = set()
        self.active = p.start_active
        self.holding = False
        self.hold_reason = "no observation yet"
        self._tick_ideal = 0.0
        self._submit_time: float | None = None  # clock time of the request in flight
        self._worker_lost: str | None = None  # why the worker is being replaced
        self._forget_plan(-np.inf)

    # ------------------------------------------------------------------ control thread
    def tick(self, ideal: float, t_start: float, skipped: int = 0) -> None:
        """One control tick due at `ideal`, started at `t_start` after `skipped` missed grid
        points. Never raises: an error is counted (`tick_errors`), logged, and halts."""
        with self._lock:
            self.timing.tick(ideal, t_start, skipped)
            self._tick_ideal = ideal
            self.counters["ticks"] += 1
            try:
                self._ingest()
                # Tick time read after ingest: every input is stamped at or before it.
                self._step(self.clock())
            except Exception as exc:  # last line of defence: the loop must keep running
                self.counters["tick_errors"] += 1
                self._log("error", f"control tick failed: {type(exc).__name__}: {exc}", True)
                try:
                    self.halt(self.clock())
                except Exception as halt_exc:
                    self._log("error", f"halt after a failed tick failed: {halt_exc}", True)
            self.timing.done(ideal, self.clock())

    def _step(self, now: float) -> None:
        result = None if self._worker_lost else self.worker.poll()
        if result is not None:
            self._submit_time = None
            if not result.ok:
                self._log(
                    "error",
                    f"inference failed: {type(result.error).__name__}: {result.error}",
                    True,
                )
                self._inflight = None
                result = None
        self._check_worker(now)
        if not self.active:
            return
        if self._worker_lost:
            self._hold(now, self._worker_lost)
            return
        stale = self.history.is_stale(now, self.settings.params.max_obs_age)
        if stale:
            self._hold(now, self._stale_reason(stale, now))
            return
        if self.holding:
            self.holding = False
            self._log("info", "inputs fresh again: resuming", False)
        if result is not None:
            self._merge(result, now)
        self._check_overrun(now)
        for command in (
            self._trajectory(now) if TRAJECTORY in self.paths else None,
            self._stream(now) if STREAM in self.paths else None,
        ):
            if command is not None:
                self._send(command)
        self.history.sample(now)
        self._maybe_start_inference(now)

    def _stale_reason(self, stale: Any, now: float) -> str:
        """The history's staleness reason per input, told apart: never received, received but
        rejected (why), part of the joints only (which are missing), or which joint is old."""
        max_age = self.settings.params.max_obs_age
        with self._input_lock:
            rejected = dict(self._rejected)
            notes = dict(self._notes)
            missing, received = self.joints.missing(), self.joints.received()
            old = self.joints.stale_joints(now, max_age)
        parts = []
        for name, text in zip(stale.inputs, stale.reasons, strict=True):
            what = "joint state" if name == STATE_INPUT else f"camera {name!r} image"
            never = self.history.ages(now)[name] is None
            if never and name in rejected:
                text = f"{what} received but rejected: {rejected[name]}"
            elif never and name in notes:
                text = f"{text}: {notes[name]}"
            elif never and name == STATE_INPUT and received:
                text = (
                    f"joint state incomplete: joint(s) {missing} never received (received "
                    f"{received}); is every joint's driver publishing on "
                    f"{self.settings.params.joint_state_topic}?"
                )
            elif name == STATE_INPUT and old and not never:
                ages = {j: "never" if a is None else f"{a:.3f} s" for j, a in old.items()}
                text += f"; oldest joint(s): {ages}"
            elif name in rejected:
                text += f"; newer messages rejected: {rejected[name]}"
            parts.append(text)
        return "; ".join(parts)

    def _check_worker(self, now: float) -> None:
        """A dead worker, or a request past `inference_timeout`: ERROR, hold, respawn."""
        if self._worker_lost:
            return
        timeout = self.settings.params.inference_timeout
        if not self.worker.alive:
            why = f"inference worker stopped: {self.worker.last_error}"
        elif timeout > 0 and self._submit_time is not None and now - self._submit_time > timeout:
            self.counters["inference_timeouts"] += 1
            why = f"inference did not return within {timeout:g} s (inference_timeout)"
        else:
            return
        self._submit_time = None
        if self._respawn is None:
            self._worker_lost = why
            self._log("error", f"{why}; holding (no worker restart configured)", False)
            return
        self._worker_lost = f"{why}; restarting the inference worker"
        self._log("error", self._worker_lost, False)
        self.counters["worker_restarts"] += 1
        self._respawn()

    def replace_worker(self, worker: Worker) -> None:
        """Hand over a new worker (after `respawn`); commanding resumes with fresh inputs."""
        with self._lock:
            self.worker = worker
            self._worker_lost = None
            self._submit_time = None
            self._inflight = None
            self._log("info", "inference worker restarted", False)

    def _check_overrun(self, now: float) -> None:
        """Overrun: the plan (n_action_steps of the newest chunk) is used up before the next
        chunk arrived (inference slower than the chunk): the rest of the horizon executes, and
        it is reported (counted, WARN). Dry: not even the horizon is left (the last point is
        held), counted per tick."""
        if self._had_schedule and self.schedule.is_dry(now):
            self.counters["dry_ticks"] += 1
        late = self._plan_end is not None and now > self._plan_end + 0.5 * self.settings.dt
        if late and not self.overrun:
            self.counters["overruns"] += 1
            lat = self.worker.latency_estimate
            self._log(
                "warning",
                "overrun: the next chunk is late, executing the rest of the horizon (inference "
                f"latency {'unknown' if lat is None else f'{lat * 1e3:.0f} ms'}, chunk "
                f"{self.settings.n_action_steps * self.settings.dt * 1e3:.0f} ms)",
                True,
            )
        self.overrun = late

    def _send(self, command: Command) -> None:
        """Publish `command`; jitter and obs-to-command age are taken when publish returned."""
        self._publish_sink(command)
        t = self.clock()
        self.counters["commands"] += 1
        self.timing.published(self._tick_ideal, t)
        if self._pending_obs_stamp is not None:
            self.obs_to_cmd.append(t - self._pending_obs_stamp)
            self._pending_obs_stamp = None

    def _hold(self, now: float, reason: str) -> None:
        if not self.holding:
            self.holding = True
            self.counters["holds"] += 1
            self._log("warning", f"holding: {reason}", False)
            self.halt(now)
        self.hold_reason = reason

    def halt(self, now: float) -> None:
        """Forget every planned action (hold, stop, reset); in chunk mode tell the controller to
        stop executing the last trajectory (an empty trajectory makes a JTC hold)."""
        with self._lock:
            self.schedule.clear()
            self.history.reset()
            self._forget_plan(now)
            traj = self.paths.get(TRAJECTORY)
            if traj is not None and self.mirror.has_trajectory:
                stop = np.zeros((0, len(traj.joints)))
                self._publish_sink(Command(TRAJECTORY, now, stop, np.zeros(0), traj.joints))
            self.mirror.clear()

    def _forget_plan(self, epoch: float) -> None:
        """No plan: nothing published from the (empty) schedule, nothing in flight, and every
        result observed before `epoch` discarded."""
        self._published_version = self.schedule.version
        self._epoch = epoch
        self._inflight: tuple[float, float] | None = None  # (t_obs, oldest input stamp)
        self._pending_obs_stamp: float | None = None
        self._prev_cmd: np.ndarray | None = None  # last stream command
        self._had_schedule = False  # a chunk was scheduled since the last halt
        self._plan_end: float | None = None  # grid step of the newest chunk's n_action_steps
        self._last_chunk: tuple[float, np.ndarray] | None = None  # (t_obs, (H, D)) merged
        self.overrun = False  # the schedule ran dry while inference was still running

    def _merge(self, result: InferenceResult, now: float) -> None:
        inflight, self._inflight = self._inflight, None
        if result.t_obs < self._epoch or result.chunk is None:
            self.counters["chunks_discarded"] += 1
            return
        start = self.settings.n_obs_steps - 1
        # replace/inpaint schedule the whole horizon (a late next chunk finds the arm still
        # moving); ensemble only the plan: the far end of old chunks would dominate the mean.
        end = start + self.settings.n_action_steps if self.schedule.mode == "ensemble" else None
        actions = result.chunk[start:end]
        if actions.shape[0] == 0 or not np.all(np.isfinite(actions)):
            self.counters["nonfinite_chunks"] += 1
            self._log(
                "warning", "inference returned a chunk with NaN/inf (or empty): discarded", True
            )
            return
        t0 = self._chunk_start(result.t_obs, now)
        kept = self.schedule.merge(actions, t0=t0, now=now)
        # Chunks are arriving: from now on a tick without an action is dry, and a plan that
        # ends before the next chunk is an overrun, also when this one came too late to keep
        # any action (inference slower than the whole horizon must not be silent).
        self._had_schedule = True
        self._plan_end = t0 + (self.settings.n_action_steps - 1) * self.settings.dt
        if kept:
            self._last_chunk = (t0, result.chunk)
        self.counters["chunks"] += 1
        self.counters["dropped_actions"] += actions.shape[0] - kept
        if kept and inflight is not None and inflight[0] == result.t_obs:
            self._pending_obs_stamp = inflight[1]

    def _chunk_start(self, t_obs: float, now: float) -> float:
        """Grid time of the chunk's first action (index n_obs_steps-1): `t_obs`, unless the
        arm stood still from before the observation until now (nothing was scheduled at or
        after `t_obs`: the episode's first chunk, after a hold, after the schedule ran dry).
        Then the state the chunk was predicted from still holds, and the chunk starts at the
        first tick at or after `now` instead of skipping the actions whose time passed while
        it was computed: with 0.7 s of latency the first chunk otherwise begins 7 steps into
        the motion, and the arm lunges there from rest (into the obstacle, in the reach
        task). `start_idle_chunks_late: false` keeps the plain `t_obs` anchor."""
        if not self.settings.params.start_idle_chunks_late:
            return t_obs
        end = self.schedule.horizon_end()
        if end is not None and end >= t_obs - self.schedule.time_eps:
            return t_obs
        dt = self.settings.dt
        return t_obs + max(0, math.ceil((now - t_obs) / dt - 0.01)) * dt

    def _stream(self, now: float) -> Command | None:
        path = self.paths[STREAM]
        cmd = self.schedule.at(now)
        if cmd is None:
            return None
        previous = self._prev_cmd if self._prev_cmd is not None else path.measured(self._measured)
        safe = path.safety.filter(cmd[path.columns], previous)
        if safe is None:
            return None  # NaN/inf: the forward controller keeps the previous command
        self._prev_cmd = safe
        return Command(STREAM, now, safe, None, path.joints)

    def _trajectory(self, now: float) -> Command | None:
        if self.schedule.version == self._published_version:
            return None
        self._published_version = self.schedule.version
        # The schedule is keyed by grid step; action a_k is to be reached at t_k + action_lead.
        lead = self.settings.action_lead
        times, actions = self.schedule.remaining(now - lead)
        times = times + lead
        future = times > now + 0.5 * self.settings.dt
        times, actions = times[future], actions[future]
        if times.size == 0:
            return None
        path = self.paths[TRAJECTORY]
        if self.mirror.has_trajectory:  # what the trajectory controller executes now
            start, start_vel, _ = self.mirror.sample_state(now)
        else:
            start = path.measured(self._measured)
            start_vel = None if start is None else np.zeros_like(start)
        if start is None:
            return None
        safe = path.safety.filter_trajectory(actions[:, path.columns], start)
        if safe is None:
            return None
        rel = times - now
        vel = acc = None
        derivatives = self.settings.params.trajectory_derivatives
        if derivatives != "none":
            lim = path.safety.limits
            vel, acc = point_derivatives(
                rel, safe, start, start_vel, lim.lower, lim.upper, lim.max_velocity
            )
            if derivatives == "velocities":
                acc = None
        self.mirror.set_trajectory(
            rel,
            safe,
            start_time=now,
            now=now,
            current_position=start,
            velocities=vel,
            accelerations=acc,
            from_desired=True,
        )
        return Command(TRAJECTORY, now, safe, rel, path.joints, vel, acc)

    def _maybe_start_inference(self, now: float) -> None:
        if self.worker.busy:
            return
        if not should_start_inference(
            now,
            self._plan_end,
            self.worker.latency_estimate,
            self.settings.dt,
            self.lead,
        ):
            return
        batch, t_obs = self.history.as_batch()
        if self.settings.params.blend_mode == "inpaint" and self._last_chunk is not None:
            batch[INPAINT_ACTIONS], batch[INPAINT_WEIGHTS] = self.inpaint_target(now, t_obs)
        oldest = max(a for a in self.history.ages(now).values() if a is not None)
        if self.worker.submit(batch, t_obs):
            self._inflight = (t_obs, now - oldest)
            self._submit_time = now

    def inpaint_target(self, now: float, t_obs: float) -> tuple[np.ndarray, np.ndarray]:
        """The inpainting constraint for the chunk observed at `t_obs` (`inpaint.py`)."""
        return inpaint_request(
            self.settings, self._last_chunk, now, t_obs, self.worker.latency_estimate
        )

    # ------------------------------------------------------------------ services
    def warm_up(self, worker: Worker | None = None) -> InferenceResult | None:
        """Run `warmup_runs` inferences on a blank observation on `worker` (default: the
        current one, before going active), so the first chunk is not slow and the latency
        estimate is measured; None when 0 runs."""
        n = self.settings.inference.warmup_runs
        worker = self.worker if worker is None else worker
        return worker.warm_up(blank_batch(self.settings), n=n) if n > 0 else None

    def start(self) -> str:
        """Start commanding (from stopped); timing statistics count from here."""
        with self._lock:
            was = self.active
            self.active = True
            if not was:
                self.holding = False
            self.timing.reset()
            self.obs_to_cmd.clear()
        return "already active" if was else "started"

    def stop(self, now: float) -> str:
        """Stop commanding: halt (chunk mode: one stop trajectory) and publish nothing more."""
        with self._lock:
            was = self.active
            self.active = False
            self.holding = False
            self.halt(now)
        return "stopped" if was else "already stopped"

    def restart(self, now: float) -> None:
        """New episode (~/reset, clock jumped back): forget plans, history, in-flight chunks,
        input stamp order, and reset the policy."""
        with self._lock:
            self.halt(now)
            self.worker.reset()  # discards in-flight results, policy.reset() on its side
            self._submit_time = None
            with self._input_lock:
                self._last_input_stamp.clear()
                self._new_inputs.clear()
                self.joints.reset()

    def reset(self, now: float) -> None:
        """~/reset: `restart`, counted."""
        with self._lock:
            self.restart(now)
            self.counters["resets"] += 1


def blank_batch(settings: NodeSettings) -> dict[str, np.ndarray]:
    """An all-zero observation batch of the checkpoint's shapes (for warm-up)."""
    h, w = settings.image_size
    n, cams, dim = settings.n_obs_steps, len(settings.camera_topics), len(settings.joint_names)
    batch = {OBS_STATE: np.zeros((1, n, dim), np.float32)}
    if cams:
        batch[OBS_IMAGES] = np.zeros((1, n, cams, 3, h, w), np.uint8)
    return batch
