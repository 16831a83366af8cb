"""`dp-collect`: record demonstrations as rosbag2 bags, one per episode.

    dp-collect --episodes 50 --out demos --seed 0 --format mcap --real-time-factor 4
    dp-collect --task pick_place --episodes 100 --out runs/pick_place_demos
    dp-collect --robot my_robot --expert-cmd "python3 my_expert.py --seed {seed}" \
        --topics /camera/image_raw /joint_states /arm_controller/joint_trajectory \
        --episodes 40 --out demos

`--robot NODE`: your own robot or simulator, a running node that speaks the episode protocol
(docs/episode_protocol.md: `~/reset`, `~/unpause`, `~/report`, optional `seed` and `~/pause`).
dp-collect starts only `recorder_node` (recording `--topics`; `--sim-time` if the robot
publishes /clock) and the episode driver; per episode it starts `--expert-cmd` (your scripted
expert or teleoperation bridge, `{seed}` and `{episode}` replaced, DP_SEED / DP_EPISODE /
DP_ROBOT in its environment, output in logs/expert_NNNN.log) after `~/reset` and before the
recorder starts (which waits for its command topics) and `~/unpause`, and stops it (SIGINT)
when the robot reports `done`. Without `--robot` it
records the bundled MuJoCo sim's scripted expert:

`--task` picks the sim_node task (`sim.engine.TASKS`): reach (default; the 3-joint arm, one
camera, JointTrajectory actions) or pick_place (UR5e + gripper: both cameras, the arm's
JointTrajectory and the gripper's Float64MultiArray commands are recorded; defaults
--camera-rate 30, --time-limit 20, --real-time-factor 2).

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
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_node.eval.media import reason_suffix
from diffusion_policy_node.eval.processes import (
    add_episode_args,
    check_episode_args,
    driver_command,
    ros_list,
    run_driver,
    sim_node_args,
    start_node,
    stop_node,
)

SIM_NODE = "dp_collect_sim"
RECORDER_NODE = "dp_collect_recorder"
# Publisher history and subscription queue: a recorder stalled for seconds still loses nothing.
QOS_DEPTH = 1000
TOPICS = {
    "/camera/image_raw": "sensor_msgs/msg/Image",
    "/joint_states": "sensor_msgs/msg/JointState",
    "/arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
}
# What each task's bags hold (the sim_node topics of that task).
TASK_TOPICS: dict[str, dict[str, str]] = {
    "reach": TOPICS,
    "pick_place": {
        "/scene_camera/image_raw": "sensor_msgs/msg/Image",
        "/wrist_camera/image_raw": "sensor_msgs/msg/Image",
        "/joint_states": "sensor_msgs/msg/JointState",
        "/arm_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
        "/gripper_controller/commands": "std_msgs/msg/Float64MultiArray",
    },
}
# Per-task defaults of the options left unset (None) on the command line.
TASK_DEFAULTS: dict[str, dict[str, float]] = {
    "reach": {"camera_rate": 30.0, "time_limit": 10.0, "real_time_factor": 4.0},
    # Bags with the gripper's header-less Float64MultiArray are timed by record time (the data
    # reader never mixes time bases), whose jitter is a few ms with outliers: 30 Hz frames keep
    # the image chosen for a 0.1 s grid step within 1/30 s of it (10 Hz: one step off at times).
    "pick_place": {"camera_rate": 30.0, "time_limit": 20.0, "real_time_factor": 2.0},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-collect",
        description="Record demonstrations as rosbag2 bags: the bundled MuJoCo sim's scripted "
        "expert, or your robot (--robot) driven by your expert or teleoperation (--expert-cmd).",
        epilog="Example: dp-collect --episodes 50 --out demos --real-time-factor 4",
    )
    parser.add_argument(
        "--robot",
        default="",
        help="a running robot/sim node speaking the episode protocol (docs/episode_protocol.md)"
        "; dp-collect then starts no sim",
    )
    parser.add_argument(
        "--expert-cmd",
        default="",
        help="command run per episode that demonstrates (publishes the commands); {seed} and "
        "{episode} are replaced",
    )
    parser.add_argument(
        "--topics", nargs="+", default=None, help="topics to record (required with --robot)"
    )
    parser.add_argument(
        "--sim-time", action="store_true", help="record on the robot's /clock (use_sim_time)"
    )
    parser.add_argument(
        "--task",
        choices=sorted(TASK_TOPICS),
        default="reach",
        help="sim task (default reach; pick_place: UR5e + gripper, two cameras)",
    )
    parser.add_argument("--episodes", type=int, required=True, help="episodes to run")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="layout seed of the first episode")
    parser.add_argument("--format", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument(
        "--real-time-factor",
        type=float,
        default=None,
        help="simulation speed over wall time (0: as fast as possible; default reach 4, "
        "pick_place 2)",
    )
    parser.add_argument("--image-size", type=int, nargs=2, default=[96, 96], metavar=("H", "W"))
    parser.add_argument("--keep-failed", action="store_true", help="move failed bags to failed/")
    add_episode_args(parser)
    parser.set_defaults(camera_rate=None, time_limit=None)  # per task: TASK_DEFAULTS
    return parser


def fill_task_defaults(args: argparse.Namespace, keys: tuple[str, ...] | None = None) -> None:
    """The task's defaults for the options left unset (`keys`: only those)."""
    for name, value in TASK_DEFAULTS[getattr(args, "task", "reach")].items():
        if keys is not None and name not in keys:
            continue
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def _check_args(args: argparse.Namespace) -> None:
    fill_task_defaults(args)
    if args.robot and not args.topics:
        raise ValueError(
            "--robot needs --topics: the cameras, /joint_states and every command topic to record"
        )
    if args.topics and any(not t.startswith("/") for t in args.topics):
        raise ValueError(f"--topics {args.topics}: fully qualified names such as /joint_states")
    check_episode_args(args, max_real_time_factor=1000)
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
    procs = []
    robot = args.robot.strip("/")
    if not robot:
        procs.append(
            start_node(
                "sim_node",
                [
                    *sim_node_args(
                        SIM_NODE,
                        expert=True,
                        real_time_factor=args.real_time_factor,
                        camera_rate=args.camera_rate,
                        image_size=args.image_size,
                        time_limit=args.time_limit,
                        seed=args.seed,
                    ),
                    "-p", f"qos_depth:={QOS_DEPTH}",
                    "-p", f"task:={args.task}",
                ],
                logs / "sim_node.log",
            )
        )  # fmt: skip
    topics = dict.fromkeys(args.topics, "") if args.topics else TASK_TOPICS[args.task]
    types = [] if any(not t for t in topics.values()) else list(topics.values())
    procs.append(
        start_node(
            "recorder_node",
            [
                "-r", f"__node:={RECORDER_NODE}",
                "-p", f"use_sim_time:={'true' if args.sim_time or not robot else 'false'}",
                "-p", f"output_dir:={(out / 'bags').resolve()}",
                "-p", f"storage:={args.format}",
                "-p", f"queue_depth:={QOS_DEPTH}",
                "-p", f"topics:={ros_list(list(topics))}",
                *(["-p", f"types:={ros_list(types)}"] if types else []),
            ],
            logs / "recorder_node.log",
        )
    )  # fmt: skip
    driver_cmd = driver_command(
        "collect_driver", args, robot or SIM_NODE,
        "--recorder", RECORDER_NODE,
        f"--expert-cmd={args.expert_cmd}",
        "--log-dir", str(logs),
    )  # fmt: skip

    def settle(record: dict[str, Any]) -> dict[str, Any]:
        record["kept_bag"] = _settle_bag(record, out, args.keep_failed)
        print(
            f"episode {record['episode']} seed {record['seed']}: "
            f"{'success' if record['success'] else 'failure'}{reason_suffix(record)} "
            f"({record['side'] or '-'}, "
            f"{record['time']:.2f} s)",
            file=sys.stderr,
            flush=True,
        )
        return record

    try:
        records, _, error = run_driver(
            driver_cmd, logs, out / "episodes.jsonl", settle, append=True
        )
    finally:
        for proc in procs:
            stop_node(proc)
    summary = {
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "requested": args.episodes,
        "bags": [r["kept_bag"] for r in records if r["success"]],
        "out": str(out),
        "task": args.task,
    }
    if robot:
        summary["robot"] = robot
        del summary["task"]
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
