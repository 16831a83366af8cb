"""Closed loop without ROS, on simulated time: `SimEngine` + the node's `Controller` + the policy.

`dp-eval` runs the real processes over DDS in real time, so an episode's outcome depends on
how fast this machine is at that moment and sampling is not seeded. This rollout runs the same
control tick (`runtime.Controller`, what `policy_node` runs) and the same simulation
(`sim.engine.SimEngine`, what `sim_node` runs) in one thread on the simulation clock, with the
inference latency *simulated*: a request submitted at sim time t returns its chunk at
t + latency, where latency = `latency_ms` (or, when None, the measured compute time of that
inference) + `inference_delay_ms`. The chunk itself is computed at once (sim time stands still
meanwhile), so with a fixed `latency_ms` the outcome depends on the checkpoint, the seeds and
the latency, not on how fast or loaded the CPU is (another CPU model may still round its
floats differently): a way to ask "what does 300 ms of latency do to this policy?" in seconds,
repeatably.

    python -m diffusion_policy_node.eval.rollout --episodes 20 --seed 1000
    python -m diffusion_policy_node.eval.rollout --latency-ms 120 --inference-delay-ms 300 \\
        --param blend_mode=inpaint --param inpaint_overlap=6

One JSON line per episode (`--jsonl`), the last stdout line is the summary (the keys of
dp-eval's summary that exist here: success, outcomes, smoothness, overruns, dry ticks,
latency). What it leaves out: DDS transport, message conversion, the node's own timing jitter,
real contention between the inference and the simulation for the CPU; `dp-eval` has those.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_policy_node.eval.evaluate import BUNDLED_MODELS, bundled_checkpoint, summarize
from diffusion_policy_node.eval.media import outcome
from diffusion_policy_node.eval.smoothness import MOTION_KEYS, recorded_smoothness
from diffusion_policy_node.policy.checkpoint import read_config
from diffusion_policy_node.runtime.controller import STREAM, TRAJECTORY, Command, Controller
from diffusion_policy_node.runtime.inference_worker import (
    InferenceResult,
    InferenceWorker,
    LatencyTracking,
)
from diffusion_policy_node.runtime.process_worker import load_policy
from diffusion_policy_node.runtime.settings import NodeSettings, PolicyNodeParams, resolve_settings
from diffusion_policy_node.sim.engine import NS, TASKS, SimEngine, SimSettings

# Controller counters copied into each episode record (and the last one into the summary).
COUNTERS = ("overruns", "dry_ticks", "chunks", "dropped_actions", "holds", "inference_timeouts")


class SimulatedLatencyWorker(LatencyTracking):
    """The controller's `Worker` on the simulation clock: `submit` computes the chunk at once
    (an `InferenceWorker` runs it; the caller waits, so simulated time stands still), `poll`
    hands it over when the simulation clock reaches submit time + the simulated latency."""

    def __init__(
        self,
        policy: Any,
        clock: Any,
        latency_s: float | None,
        delay_s: float = 0.0,
        device: str = "cpu",
    ) -> None:
        """`latency_s` None: each request's simulated latency is its measured compute time;
        `delay_s` is added to every request (`inference_delay_ms`)."""
        for name, value in (("latency_s", latency_s), ("delay_s", delay_s)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0 s, got {value!r}")
        self._init_tracking(clock, ema_alpha=0.2, window=100)
        self.latency_s = latency_s
        self.delay_s = float(delay_s)
        self._inner = InferenceWorker(policy, device=device, name="dp-rollout-inference")
        self._pending: tuple[InferenceResult, float] | None = None  # (result, due sim time)
        self._result: InferenceResult | None = None
        self.alive = True

    def _due(self) -> bool:
        # 1 µs of tolerance: the due time is a float sum, the clock a float from integer ns,
        # and "lands at this tick" must not depend on how the sum rounds at this sim time.
        return self._pending is not None and self.clock() >= self._pending[1] - 1e-6

    @property
    def busy(self) -> bool:
        return self._pending is not None and not self._due()

    def _latency(self, compute: float) -> float:
        return (compute if self.latency_s is None else self.latency_s) + self.delay_s

    def _run(self, obs: Mapping[str, Any]) -> InferenceResult:
        inner = self._inner
        if not inner.submit(obs, 0.0) or not inner.wait(600.0):
            raise RuntimeError("the rollout's inference did not finish within 600 s")
        result = inner.poll()
        if result is None:
            raise RuntimeError("the rollout's inference returned no result")
        return result

    def submit(self, obs: Mapping[str, Any], t_obs: float) -> bool:
        if self.busy:
            return False
        self.poll_due()
        t_submit = self.clock()
        start = time.monotonic()
        inner = self._run(obs)
        compute = time.monotonic() - start
        latency = self._latency(compute)
        result = InferenceResult(inner.chunk, float(t_obs), latency, inner.error)
        self._pending = (result, t_submit + latency)
        return True

    def poll_due(self) -> None:
        """Move a request whose simulated latency has passed to the result slot."""
        if self._due():
            result, self._pending = self._pending[0], None
            with self._cond:
                if result.ok:
                    self._record_latency(result.latency_s)
                    self.completed_count += 1
                else:
                    self.last_error = result.error
                    self.error_count += 1
                self._result = result

    def poll(self) -> InferenceResult | None:
        self.poll_due()
        return super().poll()

    def reset(self) -> None:
        self._pending = None
        self._result = None
        self._inner.reset()
        self._inner.wait(60.0)

    def forget_latency(self) -> None:
        """A fresh node: no latency measured yet (the next warm-up measures it)."""
        with self._cond:
            self._latencies.clear()
            self._ema = None

    def warm_up(self, obs: Mapping[str, Any], n: int = 2) -> InferenceResult:
        result = self._inner.warm_up(obs, n=n)
        latency = self._latency(result.latency_s)
        with self._cond:
            self._record_latency(latency)
        return InferenceResult(result.chunk, result.t_obs, latency)

    def close(self) -> None:
        self._inner.close()


def _camera_map(settings: NodeSettings, task: str) -> dict[str, str]:
    """Camera name of the task -> the checkpoint's image topic (sim_node's default topics)."""
    spec = TASKS[task]
    topics = dict(zip(spec.task.camera_names, spec.camera_topics, strict=True))
    missing = [t for t in settings.camera_topics if t not in topics.values()]
    if missing:
        raise ValueError(
            f"the checkpoint's camera topics {missing} are not cameras of task {task!r} "
            f"(it has {list(topics.values())})"
        )
    return topics


class Rollout:
    """One checkpoint on one task; `episode(seed)` runs an episode and returns its record."""

    def __init__(
        self,
        checkpoint: str | Path,
        task: str = "reach",
        params: Mapping[str, Any] | None = None,
        latency_ms: float | None = None,
        time_limit: float | None = None,
        camera_rate_hz: float = 30.0,
    ) -> None:
        """`params`: policy_node parameters (names as in `PolicyNodeParams`), e.g.
        blend_mode, inpaint_overlap, inference_delay_ms (simulated, not slept)."""
        values = dict(params or {})
        values.update(checkpoint=str(checkpoint), inference_process=False)
        p = PolicyNodeParams(**values)
        config, _ = read_config(p.checkpoint)
        s = self.settings = resolve_settings(p, config)
        delay = s.inference.delay_s
        self.policy, self.info = load_policy(replace(s.inference, delay_s=0.0))
        if task not in TASKS:
            raise ValueError(f"task {task!r}: expected one of {tuple(TASKS)}")
        spec = TASKS[task]
        h, w = s.image_size
        self.task_config = spec.config(
            control_dt=s.dt,
            time_limit=spec.time_limit if time_limit is None else float(time_limit),
            image_width=w,
            image_height=h,
        )
        self.topics = _camera_map(s, task)
        self.engine = SimEngine(
            self.task_config,
            SimSettings(task=task, camera_rate_hz=camera_rate_hz, real_time_factor=0.0),
            sink={
                "joint_state": self._on_state,
                "image": self._on_image,
                "images": self._on_images,
                "clock": lambda ns: None,
                "log": lambda level, text: None,
            },
        )
        self.worker = SimulatedLatencyWorker(
            self.policy,
            clock=self.now,
            latency_s=None if latency_ms is None else latency_ms / 1e3,
            delay_s=delay,
            device=self.info.device,
        )
        self.controller: Controller | None = None

    def now(self) -> float:
        return self.engine.now_ns / NS

    # ---------------------------------------------------------------- sim -> controller
    def _on_state(self, ns: int, names: Sequence[str], pos: np.ndarray, vel: np.ndarray) -> None:
        index = {n: i for i, n in enumerate(names)}
        q = np.array([pos[index[j]] for j in self.settings.joint_names])
        if self.controller is not None:
            self.controller.offer_state(q, ns / NS)

    def _on_image(self, ns: int, rgb: np.ndarray) -> None:
        self._on_images(ns, {self.engine.cameras[0]: rgb})

    def _on_images(self, ns: int, images: Mapping[str, np.ndarray]) -> None:
        if self.controller is None:
            return
        for camera, rgb in images.items():
            topic = self.topics[camera]
            if topic in self.settings.camera_topics:
                self.controller.offer_image(topic, rgb, ns / NS)

    def _decode(self, topic: str, rgb: np.ndarray) -> np.ndarray:
        if rgb.shape[:2] != self.settings.image_size:
            raise ValueError(f"{topic}: image {rgb.shape} is not {self.settings.image_size}")
        return rgb

    # ---------------------------------------------------------------- controller -> sim
    def _publish(self, command: Command) -> None:
        engine = self.engine
        if command.kind == TRAJECTORY:
            order = [command.joints.index(j) for j in engine.names] if command.joints else []
            positions = command.positions[:, order] if order else command.positions
            vel, acc = command.velocities, command.accelerations
            if order:
                vel = None if vel is None else vel[:, order]
                acc = None if acc is None else acc[:, order]
            engine.submit("trajectory", (list(command.times), positions, command.stamp, vel, acc))
        elif command.kind == STREAM:
            values = dict(zip(command.joints, command.positions, strict=True))
            arm = [values[j] for j in engine.names if j in values]
            if len(arm) == len(engine.names):
                engine.submit("stream", np.array(arm))
            for joint in set(values) - set(engine.names):  # the gripper
                engine.submit("gripper", np.array([values[joint]]))

    @staticmethod
    def _log(level: str, text: str, throttle: bool) -> None:
        # Errors (a failed tick or inference) are shown; warnings such as overruns are counted
        # in the episode record instead (they would repeat every chunk under a long delay).
        if level == "error":
            print(f"rollout: controller error: {text}", file=sys.stderr, flush=True)

    # ---------------------------------------------------------------- episodes
    def episode(self, seed: int) -> dict[str, Any]:
        """Run one episode with layout `seed`, sampling seeded with `seed` too. A fresh
        controller per episode, as dp-eval starts a fresh policy_node."""
        engine, worker = self.engine, self.worker
        engine.submit("reset", int(seed))
        engine.handle_requests()
        worker.reset()
        if hasattr(self.policy, "seed"):
            self.policy.seed(int(seed))
        self.controller = c = Controller(
            self.settings,
            self.info,
            worker,
            clock=self.now,
            publish=self._publish,
            decode=self._decode,
            log=self._log,
        )
        worker.forget_latency()
        c.warm_up()
        control_ns = round(self.settings.dt * NS)
        next_tick = engine.now_ns
        task = engine.task
        t0 = time.monotonic()
        while not task.done:
            if engine.now_ns >= next_tick:
                t = self.now()
                c.tick(next_tick / NS, t)
                next_tick += control_ns
            engine.handle_requests()
            engine.tick()
        c.stop(self.now())
        engine.handle_requests()
        report = engine.report()
        motion = recorded_smoothness(engine.motion)
        record: dict[str, Any] = {
            "seed": int(seed),
            "success": bool(report["success"]),
            "collided": bool(report.get("collided", False)),
            "time": report["time"],
            "passed_side": report.get("passed_side"),
            **{k: motion[k] for k in MOTION_KEYS},
            **{k: c.counters[k] for k in COUNTERS},
            "wall_s": round(time.monotonic() - t0, 2),
        }
        for key in ("target_bin", "wrong_bin", "dropped"):
            if key in report:
                record[key] = report[key]
        record["outcome"] = outcome(record)
        lat = worker.latency_stats()
        record["inference_latency_p50_ms"] = None if lat.p50 is None else lat.p50 * 1e3
        return record

    def close(self) -> None:
        self.worker.close()
        self.engine.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m diffusion_policy_node.eval.rollout",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", default=None, help="default: the bundled one of --task")
    parser.add_argument("--task", choices=sorted(TASKS), default="reach")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000, help="layout seed of episode 0")
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="simulated inference latency (default: each inference's measured compute time)",
    )
    parser.add_argument(
        "--inference-delay-ms", type=float, default=0.0, help="added to every inference"
    )
    parser.add_argument("--time-limit", type=float, default=None, help="episode length, sim s")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a policy_node parameter (repeatable), e.g. blend_mode=replace (or :=)",
    )
    parser.add_argument("--jsonl", default=None, help="write the episode records here")
    return parser


def _parse_param(text: str) -> tuple[str, Any]:
    """NAME=VALUE, or NAME:=VALUE as dp-eval's --policy-param takes it."""
    name, sep, raw = text.partition("=")
    name = name.removesuffix(":")
    if not sep or not name:
        raise ValueError(f"--param {text!r}: expected NAME=VALUE")
    known = PolicyNodeParams.__dataclass_fields__
    if name not in known:
        raise ValueError(f"--param {text!r}: {name!r} is not a policy_node parameter")
    default = known[name].default
    if isinstance(default, bool):
        if raw.lower() not in ("true", "false"):
            raise ValueError(f"--param {text!r}: expected true or false")
        return name, raw.lower() == "true"
    try:
        return name, type(default)(raw) if isinstance(default, (int, float, str)) else raw
    except ValueError:
        raise ValueError(f"--param {text!r}: not a {type(default).__name__}") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = dict(_parse_param(p) for p in args.param)
        params["inference_delay_ms"] = args.inference_delay_ms
        checkpoint = args.checkpoint or bundled_checkpoint(BUNDLED_MODELS[args.task])
        rollout = Rollout(
            checkpoint, args.task, params, latency_ms=args.latency_ms, time_limit=args.time_limit
        )
    except ValueError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    records = []
    out = open(args.jsonl, "w") if args.jsonl else None  # noqa: SIM115
    try:
        for i in range(args.episodes):
            record = rollout.episode(args.seed + i)
            records.append(record)
            line = json.dumps(record)
            print(line, file=sys.stderr, flush=True)
            if out is not None:
                out.write(line + "\n")
    finally:
        rollout.close()
        if out is not None:
            out.close()
    summary = summarize(records, str(checkpoint), time.monotonic() - t0)
    for key in COUNTERS:
        summary[key] = int(sum(r[key] for r in records))
    summary["inference_latency_p50_ms"] = records[-1]["inference_latency_p50_ms"]
    summary["latency_model"] = (
        "measured compute" if args.latency_ms is None else f"{args.latency_ms:g} ms"
    ) + f" + {args.inference_delay_ms:g} ms delay"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
