"""`dp-collect`: record scripted-expert demonstrations from the bundled MuJoCo arm as rosbag2 bags.

    dp-collect --episodes 50 --out demos --seed 0 --format mcap --real-time-factor 4

Starts three processes that talk over ROS 2 topics and services (the same path a real
demonstration setup takes): `sim_node` in expert mode (paused between episodes), `recorder_node`
(one bag per episode, simulation-time record stamps) and the episode driver
(`ros/collect_driver.py`). Episode i uses layout seed `--seed + i`.

Output in --out:
  bags/episode_NNNN/   one rosbag2 bag per *successful* episode: only successful expert
                       demonstrations are kept as training data; failed episodes (collision or
                       time-out) are deleted, or moved to failed/ with --keep-failed
  episodes.jsonl       one line per episode: seed, side, success, collided, time, kept bag
  logs/                the node logs
The last stdout line is JSON: {"episodes": N, "successes": K, ...}. Train on the result with
`dp-train --config config/train/small.yaml --data <out>/bags --out runs/sim` (its `data:` section
matches config/data/sim_arm.yaml). Use a separate ROS_DOMAIN_ID when other ROS 2 nodes are
running: the sim publishes on the standard topics (/joint_states, /camera/image_raw, ...).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_node.train.processes import ros_list, start_node, stop_node

SIM_NODE = "dp_collect_sim"
RECORDER_NODE = "dp_collect_recorder"
# Publisher history and subscription queue: a recorder stalled for seconds still loses nothing.
QOS_DEPTH = 1000
TOPICS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-collect",
        description="Record scripted-expert demonstrations of the MuJoCo arm as rosbag2 bags.",
        epilog="Example: dp-collect --episodes 50 --out demos --real-time-factor 4",
    )
    parser.add_argument("--episodes", type=int, required=True, help="episodes to run")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="layout seed of the first episode")
    parser.add_argument("--format", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument(
        "--real-time-factor",
        type=float,
        default=4.0,
        help="simulation speed over wall time (0: as fast as possible)",
    )
    parser.add_argument("--camera-rate", type=float, default=30.0, help="camera Hz (sim time)")
    parser.add_argument("--image-size", type=int, nargs=2, default=[96, 96], metavar=("H", "W"))
    parser.add_argument("--time-limit", type=float, default=10.0, help="episode limit (sim s)")
    parser.add_argument("--keep-failed", action="store_true", help="move failed bags to failed/")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="wall seconds allowed per episode"
    )
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.episodes < 1:
        raise ValueError(f"--episodes {args.episodes}: must be >= 1")
    if args.seed < 0:
        raise ValueError(f"--seed {args.seed}: must be >= 0")
    if not (0 <= args.real_time_factor <= 1000):
        raise ValueError(f"--real-time-factor {args.real_time_factor}: must be in [0, 1000]")
    if min(args.image_size) < 8:
        raise ValueError(f"--image-size {args.image_size}: each side must be >= 8")


def _settle_bag(record: dict[str, Any], out: Path, keep_failed: bool) -> str | None:
    """Keep a successful episode's bag, delete (or move to failed/) the others."""
    bag = Path(record["bag"])
    if record["success"]:
        return str(bag)
    if keep_failed:
        dest = out / "failed" / bag.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(bag), dest)
        return str(dest)
    shutil.rmtree(bag, ignore_errors=True)
    return None


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Run the episodes; returns the summary (also the last stdout line of `main`)."""
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (out / "bags").mkdir(exist_ok=True)
    height, width = args.image_size
    sim = start_node(
        "sim_node",
        [
            "-r", f"__node:={SIM_NODE}",
            "-p", "expert:=true", "-p", "start_paused:=true", "-p", "pause_on_done:=true",
            "-p", f"real_time_factor:={float(args.real_time_factor)}",
            "-p", f"camera_rate_hz:={float(args.camera_rate)}",
            "-p", f"image_height:={height}", "-p", f"image_width:={width}",
            "-p", f"time_limit:={float(args.time_limit)}",
            "-p", f"seed:={args.seed}",
            "-p", f"qos_depth:={QOS_DEPTH}",
        ],
        logs / "sim_node.log",
    )  # fmt: skip
    recorder = start_node(
        "recorder_node",
        [
            "-r", f"__node:={RECORDER_NODE}",
            "-p", "use_sim_time:=true",
            "-p", f"output_dir:={(out / 'bags').resolve()}",
            "-p", f"storage:={args.format}",
            "-p", f"queue_depth:={QOS_DEPTH}",
            "-p", f"topics:={ros_list(list(TOPICS))}",
            "-p", f"types:={ros_list(list(TOPICS.values()))}",
        ],
        logs / "recorder_node.log",
    )  # fmt: skip
    driver_cmd = [
        sys.executable, "-m", "diffusion_policy_node.ros.collect_driver",
        "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--sim", SIM_NODE, "--recorder", RECORDER_NODE,
        "--episode-timeout", str(args.timeout),
    ]  # fmt: skip
    records: list[dict[str, Any]] = []
    error = None
    try:
        with (
            open(logs / "driver.log", "w") as driver_log,
            open(out / "episodes.jsonl", "a") as episodes_file,
        ):
            driver = subprocess.Popen(
                driver_cmd, stdout=subprocess.PIPE, stderr=driver_log, text=True
            )
            for line in driver.stdout or ():
                record = json.loads(line)
                if "error" in record:
                    error = record["error"]
                    continue
                record["kept_bag"] = _settle_bag(record, out, args.keep_failed)
                records.append(record)
                episodes_file.write(json.dumps(record) + "\n")
                episodes_file.flush()
                print(
                    f"episode {record['episode']} seed {record['seed']}: "
                    f"{'success' if record['success'] else 'failure'} ({record['side']}, "
                    f"{record['time']:.2f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            if driver.wait() != 0 and error is None:
                error = f"episode driver exited with {driver.returncode}; see {logs}/driver.log"
    finally:
        stop_node(sim)
        stop_node(recorder)
    summary = {
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "requested": args.episodes,
        "bags": [r["kept_bag"] for r in records if r["success"]],
        "out": str(out),
    }
    if error is not None:
        summary["error"] = f"{error} (node logs in {logs})"
    return summary


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
    except ValueError as exc:
        print(f"dp-collect: {exc}", file=sys.stderr)
        return 2
    summary = collect(args)
    print(json.dumps(summary), flush=True)
    return 1 if "error" in summary else 0


if __name__ == "__main__":
    sys.exit(main())
