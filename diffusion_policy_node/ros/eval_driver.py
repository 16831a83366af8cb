"""The ROS side of `dp-eval`: run seeded episodes of a running sim_node, driven by a running
policy_node (or by the sim's scripted expert), through their services. Prints one JSON line per
episode on stdout, then `{"done": true, "video": ...}`.

    python -m diffusion_policy_node.ros.eval_driver --episodes 20 --seed 1000 \\
        --sim dp_eval_sim --policy dp_eval_policy --video out/episodes.mp4 --video-episodes 3

Per episode: policy `~/stop`; sim `~/pause` (if it has one); set the sim's `seed` parameter;
sim `~/reset` (the sim is paused);
policy `~/reset` and `~/start`; sim `~/unpause`; poll sim `~/report` until `done` (the sim
pauses itself: `pause_on_done`); policy `~/stop` and `~/status` (its diagnostics as JSON).
The sim's `seed` parameter is set only when the node declares one (a robot that implements
the episode protocol, docs/episode_protocol.md, need not). Camera frames of the first
`--video-episodes` episodes go into one mp4. `eval/evaluate.py` starts the processes and
writes the summary.

Before the first episode (after the sim's services answer) `--require` (a checkpoint's
`GraphRequirements` as JSON) is checked against the graph (`ros/graph_check.py`); anything
missing ends the run with `{"error": ...}` naming it.

`--operator`: no sim services; a person resets the scene and judges success. The driver asks
through its stdin/stdout: it prints `{"prompt": KIND, "text": ..., "timeout": s|null}` (KIND
reset, running, success) and reads one JSON line `{"answer": str|null}` (null: timed out) or
`{"quit": true}`; `eval/evaluate.py` shows the prompts on the terminal.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from diffusion_policy_node.eval.graph_requirements import GraphRequirements
from diffusion_policy_node.eval.media import (
    EpisodeVideo,
    episode_counters,
    failure_reason,
    outcome,
)
from diffusion_policy_node.eval.smoothness import MOTION_KEYS
from diffusion_policy_node.ros.conversions import image_msg_to_rgb
from diffusion_policy_node.ros.graph_check import check_graph
from diffusion_policy_node.ros.service_driver import (
    DriverError,
    ServiceDriver,
    driver_parser,
    run_driver_node,
)

# Policy diagnostics copied into each episode record: percentiles since the node started;
# the counters (COUNTER_KEYS) as their increase over the episode.
STATUS_KEYS = (
    "inference_latency_p50_ms",
    "inference_latency_p90_ms",
    "jitter_p50_ms",
    "jitter_p99_ms",
    "jitter_max_ms",
    "obs_to_cmd_p50_ms",
)


PAUSE_PROBE_S = 1.0  # once the robot's ~/report answered, its other services are discovered


class OperatorQuitError(Exception):
    """The operator ended the run."""


Ask = Callable[[str, str, float | None], str | None]


def pipe_ask(kind: str, text: str, timeout: float | None) -> str | None:
    """Ask the operator through stdout/stdin (see the module docstring)."""
    print(json.dumps({"prompt": kind, "text": text, "timeout": timeout}), flush=True)
    line = sys.stdin.readline()
    if not line:
        raise OperatorQuitError("stdin closed")
    reply = json.loads(line)
    if reply.get("quit"):
        raise OperatorQuitError("the operator quit")
    return reply.get("answer")


def _fit_height(rgb: np.ndarray, height: int) -> np.ndarray:
    """`rgb` scaled to `height` rows (nearest), for side-by-side video frames."""
    rows = np.linspace(0, rgb.shape[0] - 1, height).round().astype(int)
    width = max(1, round(rgb.shape[1] * height / rgb.shape[0]))
    cols = np.linspace(0, rgb.shape[1] - 1, width).round().astype(int)
    return rgb[rows][:, cols]


class EvalDriver(ServiceDriver):
    """Episodes of one sim node with one policy node (or the sim's expert: policy None); with
    `ask` (operator mode) the operator resets and judges instead of the sim."""

    def __init__(
        self,
        node: Node,
        executor: Executor,
        sim: str,
        policy: str | None,
        camera_topic: str,
        timeout: float,
        ask: Ask | None = None,
    ) -> None:
        super().__init__(node, timeout, executor)
        self.sim = sim.strip("/")
        self.policy = policy.strip("/") if policy else None
        self.ask = ask
        self._sim_has_seed: bool | None = None
        self._sim_pause = False
        self._frames: list[np.ndarray] | None = None
        self._frames_lock = threading.Lock()
        self.bad_frames = 0
        # `camera_topic`: one topic, or several comma-separated: side by side in the video,
        # one video frame per frame of the first camera (with the newest of the others)
        self._cameras = [t.strip() for t in camera_topic.split(",") if t.strip()]
        self._latest: dict[str, np.ndarray] = {}
        for topic in self._cameras:
            node.create_subscription(
                Image,
                topic,
                lambda msg, topic=topic: self._on_image(msg, topic),
                qos_profile_sensor_data,
            )

    def _on_image(self, msg: Image, topic: str) -> None:
        with self._frames_lock:
            if self._frames is None:
                return
        try:
            rgb = image_msg_to_rgb(msg, (msg.height, msg.width), "eval video frame")
        except ValueError:
            self.bad_frames += 1
            return
        with self._frames_lock:
            self._latest[topic] = rgb
            if self._frames is None or topic != self._cameras[0]:
                return
            views = [self._latest.get(t) for t in self._cameras]
            if any(v is None for v in views):
                return
            h = views[0].shape[0]
            views = [v if v.shape[0] == h else _fit_height(v, h) for v in views]
            self._frames.append(np.concatenate(views, axis=1) if len(views) > 1 else views[0])

    def _policy(self, service: str) -> str:
        return f"/{self.policy}/{service}"

    def check_robot(
        self,
        require: GraphRequirements | None,
        graph_timeout: float,
        robot_wait: float | None = None,
        policy_wait: float | None = None,
    ) -> None:
        """Before any episode: the sim's protocol services answer (unless operator mode) and
        the graph offers what the checkpoint needs; DriverError naming what is missing.
        `robot_wait` / `policy_wait`: seconds for the services of a robot / policy node that
        is already running (--robot, an attached policy node); None: the service timeout."""
        if self.ask is None:
            self.call_report(robot_wait)
            # The optional ~/pause: called before each ~/reset, so the new episode waits for
            # ~/unpause while the policy is reset and started (a robot without it must wait
            # after ~/reset by itself).
            pause = self._client(Trigger, f"/{self.sim}/pause")
            self._sim_pause = pause.wait_for_service(timeout_sec=PAUSE_PROBE_S)
        if self.policy and policy_wait is not None:
            self.trigger(self._policy("status"), timeout=policy_wait)
        if require is None:
            return
        missing = check_graph(self.node, require, graph_timeout)
        if missing:
            raise DriverError(
                "the robot does not offer what the checkpoint needs (checked for "
                f"{graph_timeout:g} s): " + "; ".join(missing)
            )

    def call_report(self, timeout: float | None = None) -> dict[str, Any]:
        return json.loads(self.trigger(f"/{self.sim}/report", timeout=timeout)[1])

    def _set_seed(self, seed: int) -> bool:
        if self._sim_has_seed is None:
            self._sim_has_seed = self.has_parameter(self.sim, "seed")
        if self._sim_has_seed:
            self.set_parameter(self.sim, "seed", int(seed))
        return self._sim_has_seed

    def _reset(self, text: str) -> Any:
        return json.loads(text) if text.startswith("{") else {"message": text}

    def _start_policy(self, capture: bool) -> None:
        """Reset and start the policy (if any); record video frames from now on if `capture`."""
        if self.policy:
            self.trigger(self._policy("reset"))
            self.trigger(self._policy("start"))
        with self._frames_lock:
            self._frames = [] if capture else None
            self._latest = {}

    def _take_frames(self) -> list[np.ndarray] | None:
        """The episode's video frames (None without capture); recording stops."""
        with self._frames_lock:
            frames, self._frames = self._frames, None
        return frames

    def episode(self, index: int, seed: int, episode_timeout: float, capture: bool) -> tuple:
        """Run one episode; (record, frames or None)."""
        if self.ask is not None:
            return self.operator_episode(index, episode_timeout, capture)
        if self.policy:
            self.trigger(self._policy("stop"), must_succeed=False)
            before = self.trigger_json(self._policy("status"))
        if self._sim_pause:
            self.trigger(f"/{self.sim}/pause")
        seeded = self._set_seed(seed)
        reset = self._reset(self.trigger(f"/{self.sim}/reset")[1])
        self._start_policy(capture)
        self.trigger(f"/{self.sim}/unpause")
        t0 = time.monotonic()
        report = self.wait_episode_done(self.sim, episode_timeout)
        record: dict[str, Any] = {
            "episode": index,
            "seed": seed if seeded else reset.get("episode_seed"),
            "success": bool(report["success"]),
            "collided": bool(report.get("collided", False)),
            "failure_reason": failure_reason(report),
            # the robot's episode time (sim s for sim_node); else wall s until done
            "time": report.get("time", round(time.monotonic() - t0, 3)),
            "passed_side": report.get("passed_side"),
            "expert_side": reset.get("side"),
            "real_time_factor": report.get("real_time_factor"),
            "max_joint_excursion": report.get("max_joint_excursion"),
            # Trajectory header.stamp (the policy's tick) -> applied in the sim, sim ms.
            "trajectories": report.get("trajectories"),
            "command_delay_p50_ms": report.get("command_delay_p50_ms"),
            "command_delay_max_ms": report.get("command_delay_max_ms"),
            # Smoothness of the executed targets (eval/smoothness.py), per episode.
            **{k: report.get(k) for k in MOTION_KEYS},
        }
        record["outcome"] = outcome(record)
        if self.policy:
            self.trigger(self._policy("stop"))
            status = self.trigger_json(self._policy("status"))
            record.update({k: status.get(k) for k in STATUS_KEYS})
            record.update(episode_counters(before, status))
        return record, self._take_frames()

    def operator_episode(self, index: int, episode_time: float, capture: bool) -> tuple:
        """The operator resets the scene, the policy runs for `episode_time` wall seconds (or
        until the operator ends it), the operator says whether it succeeded."""
        ask = self.ask
        before: dict[str, Any] = {}
        if self.policy:
            self.trigger(self._policy("stop"), must_succeed=False)
            before = self.trigger_json(self._policy("status"))
        answer = ask(
            "reset", f"episode {index}: reset the scene, then press Enter (q: quit)", None
        )
        if (answer or "").strip().lower() in ("q", "quit"):
            raise OperatorQuitError("the operator quit")
        self._start_policy(capture)
        t0 = time.monotonic()
        ask(
            "running",
            f"episode {index} running: press Enter to end it (ends by itself after "
            f"{episode_time:g} s)",
            episode_time,
        )
        elapsed = time.monotonic() - t0
        if self.policy:
            self.trigger(self._policy("stop"))
        while True:
            answer = (ask("success", f"episode {index}: success? [y/n]", None) or "").strip()
            if answer.lower() in ("y", "yes", "n", "no"):
                break
        success = answer.lower() in ("y", "yes")
        record: dict[str, Any] = {
            "episode": index,
            "seed": None,
            "success": success,
            "collided": False,
            "time": round(elapsed, 3),
            "judged_by": "operator",
            "outcome": "success" if success else "failure",
        }
        if self.policy:
            status = self.trigger_json(self._policy("status"))
            record.update({k: status.get(k) for k in STATUS_KEYS})
            record.update(episode_counters(before, status))
        return record, self._take_frames()


def main(argv: list[str] | None = None) -> int:
    parser = driver_parser("eval_driver", __doc__.splitlines()[0], seed=1000)
    parser.add_argument("--policy", default="policy_node", help="policy node name ('': expert)")
    parser.add_argument("--camera-topic", default="/camera/image_raw")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="video fps (sim time)")
    parser.add_argument("--video", default="", help="mp4 path ('' for none)")
    parser.add_argument("--video-episodes", type=int, default=3)
    parser.add_argument("--require", default="", help="GraphRequirements JSON ('': no check)")
    parser.add_argument("--graph-timeout", type=float, default=5.0, help="graph check wait (s)")
    for who in ("robot", "policy"):
        parser.add_argument(
            f"--{who}-wait",
            type=float,
            default=None,
            help=f"seconds for the services of an already running {who} node (default: --timeout)",
        )
    parser.add_argument(
        "--operator", action="store_true", help="prompt on stdin/stdout instead of sim services"
    )
    parser.add_argument(
        "--episode-time", type=float, default=30.0, help="operator mode: wall s per episode"
    )
    args, ros_args = parser.parse_known_args(argv)
    require = GraphRequirements.from_json(args.require) if args.require else None

    def episodes(node: Node, executor: Executor) -> Iterator[dict[str, Any]]:
        driver = EvalDriver(
            node,
            executor,
            args.sim,
            args.policy or None,
            args.camera_topic,
            args.timeout,
            ask=pipe_ask if args.operator else None,
        )
        driver.check_robot(require, args.graph_timeout, args.robot_wait, args.policy_wait)
        video = EpisodeVideo(args.video, args.camera_rate) if args.video else None
        length = args.episode_time if args.operator else args.episode_timeout
        for i in range(args.episodes):
            seed = args.seed + i
            capture = video is not None and i < args.video_episodes
            try:
                record, frames = driver.episode(i, seed, length, capture)
            except OperatorQuitError:
                break
            if frames is not None and video is not None:
                label = f"seed {record['seed']}" if record["seed"] is not None else f"episode {i}"
                video.add_episode(frames, label, record["outcome"])
            yield record
        path = video.write() if video is not None else None
        yield {"done": True, "video": None if path is None else str(path)}

    return run_driver_node("dp_eval_driver", ros_args, episodes)


if __name__ == "__main__":
    sys.exit(main())
