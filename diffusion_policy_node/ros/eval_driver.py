"""The ROS side of `dp-eval`: run seeded episodes of a running sim_node, driven by a running
policy_node (or by the sim's scripted expert), through their services. Prints one JSON line per
episode on stdout, then `{"done": true, "video": ...}`.

    python -m diffusion_policy_node.ros.eval_driver --episodes 20 --seed 1000 \\
        --sim dp_eval_sim --policy dp_eval_policy --video out/episodes.mp4 --video-episodes 3

Per episode: policy `~/stop`; set the sim's `seed` parameter; sim `~/reset` (the sim is paused);
policy `~/reset` and `~/start`; sim `~/unpause`; poll sim `~/report` until `done` (the sim
pauses itself: `pause_on_done`); policy `~/stop` and `~/status` (its diagnostics as JSON).
Camera frames of the first `--video-episodes` episodes go into one mp4.
`train/evaluate.py` starts the processes and writes the summary.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from rclpy.executors import Executor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from diffusion_policy_node.ros.conversions import image_msg_to_rgb
from diffusion_policy_node.ros.service_driver import (
    ServiceDriver,
    driver_parser,
    run_driver_node,
)
from diffusion_policy_node.train.eval_media import EpisodeVideo, outcome

# Policy diagnostics copied into each episode record (cumulative since the node started).
MOTION_KEYS = (
    "chunk_boundaries",
    "max_acc",
    "jerk_boundary_mean",
    "jerk_within_mean",
    "jerk_ratio",
)
STATUS_KEYS = (
    "inference_latency_p50_ms",
    "inference_latency_p90_ms",
    "inference_count",
    "inference_errors",
    "jitter_p50_ms",
    "jitter_p99_ms",
    "jitter_max_ms",
    "timed_ticks",
    "missed_ticks",
    "obs_to_cmd_p50_ms",
    "position_clamps",
    "velocity_clamps",
    "nonfinite_commands",
    "overruns",
    "dry_ticks",
)


class EvalDriver(ServiceDriver):
    """Episodes of one sim node with one policy node (or the sim's expert: policy None)."""

    def __init__(
        self,
        node: Node,
        executor: Executor,
        sim: str,
        policy: str | None,
        camera_topic: str,
        timeout: float,
    ) -> None:
        super().__init__(node, timeout, executor)
        self.sim = sim.strip("/")
        self.policy = policy.strip("/") if policy else None
        self._frames: list[np.ndarray] | None = None
        self._frames_lock = threading.Lock()
        self.bad_frames = 0
        node.create_subscription(Image, camera_topic, self._on_image, qos_profile_sensor_data)

    def _on_image(self, msg: Image) -> None:
        with self._frames_lock:
            if self._frames is None:
                return
        try:
            rgb = image_msg_to_rgb(msg, (msg.height, msg.width), "eval video frame")
        except ValueError:
            self.bad_frames += 1
            return
        with self._frames_lock:
            if self._frames is not None:
                self._frames.append(rgb)

    def _policy(self, service: str) -> str:
        return f"/{self.policy}/{service}"

    def episode(self, index: int, seed: int, episode_timeout: float, capture: bool) -> tuple:
        """Run one episode; (record, frames or None)."""
        if self.policy:
            self.trigger(self._policy("stop"), must_succeed=False)
        self.set_parameter(self.sim, "seed", int(seed))
        reset = self.trigger_json(f"/{self.sim}/reset")
        if self.policy:
            self.trigger(self._policy("reset"))
            self.trigger(self._policy("start"))
        with self._frames_lock:
            self._frames = [] if capture else None
        self.trigger(f"/{self.sim}/unpause")
        report = self.wait_episode_done(self.sim, episode_timeout)
        record: dict[str, Any] = {
            "episode": index,
            "seed": seed,
            "success": bool(report["success"]),
            "collided": bool(report["collided"]),
            "time": report["time"],
            "passed_side": report.get("passed_side"),
            "expert_side": reset.get("side"),
            "real_time_factor": report.get("real_time_factor"),
            "max_joint_excursion": report.get("max_joint_excursion"),
            # Trajectory header.stamp (the policy's tick) -> applied in the sim, sim ms.
            "trajectories": report.get("trajectories"),
            "command_delay_p50_ms": report.get("command_delay_p50_ms"),
            "command_delay_max_ms": report.get("command_delay_max_ms"),
            # Smoothness of the executed targets (sim/smoothness.py), per episode.
            **{k: report.get(k) for k in MOTION_KEYS},
        }
        record["outcome"] = outcome(record)
        if self.policy:
            self.trigger(self._policy("stop"))
            status = self.trigger_json(self._policy("status"))
            record.update({k: status.get(k) for k in STATUS_KEYS})
        with self._frames_lock:
            frames, self._frames = self._frames, None
        return record, frames


def main(argv: list[str] | None = None) -> int:
    parser = driver_parser("eval_driver", __doc__.splitlines()[0], seed=1000)
    parser.add_argument("--policy", default="policy_node", help="policy node name ('': expert)")
    parser.add_argument("--camera-topic", default="/camera/image_raw")
    parser.add_argument("--camera-rate", type=float, default=30.0, help="video fps (sim time)")
    parser.add_argument("--video", default="", help="mp4 path ('' for none)")
    parser.add_argument("--video-episodes", type=int, default=3)
    args, ros_args = parser.parse_known_args(argv)

    def episodes(node: Node, executor: Executor) -> Iterator[dict[str, Any]]:
        driver = EvalDriver(
            node, executor, args.sim, args.policy or None, args.camera_topic, args.timeout
        )
        video = EpisodeVideo(args.video, args.camera_rate) if args.video else None
        for i in range(args.episodes):
            seed = args.seed + i
            capture = video is not None and i < args.video_episodes
            record, frames = driver.episode(i, seed, args.episode_timeout, capture)
            if frames is not None and video is not None:
                video.add_episode(frames, f"seed {seed}", record["outcome"])
            yield record
        path = video.write() if video is not None else None
        yield {"done": True, "video": None if path is None else str(path)}

    return run_driver_node("dp_eval_driver", ros_args, episodes)


if __name__ == "__main__":
    sys.exit(main())
