"""`dp-import lerobot SRC --out DIR` and `dp-export lerobot-policy CHECKPOINT --out DIR`.

    dp-import lerobot outputs/train/pusht/checkpoints/last/pretrained_model --out models/pusht \\
        --fps 10 --camera observation.image=/camera/image_raw --state-joints x,y
    dp-import lerobot SRC --out DIR --robot robot.yaml     # lerobot_robot.py: the YAML keys
    dp-export lerobot-policy models/sim_arm_diffusion --out /tmp/sim_arm_lerobot
    dp-export lerobot bags/ --config config/robots/sim_arm/train_small.yaml --out /tmp/ds

Command-line options override the robot YAML. See docs/lerobot.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from ..config_util import add_overrides_argument, parse_override
from .lerobot_robot import RobotMapping


def _robot(args: argparse.Namespace) -> RobotMapping | None:
    given = args.robot or args.fps or args.camera or args.state_joints or args.action_lead
    if not given and not args.command_topic:
        return None  # import_lerobot: SRC/ros_robot.yaml when present
    robot = RobotMapping.from_yaml(args.robot) if args.robot else RobotMapping()
    if args.fps is not None:
        robot.fps = args.fps
    for item in args.camera or []:
        feature, sep, topic = item.partition("=")
        if not sep or not topic.startswith("/"):
            raise ValueError(f"--camera {item!r}: expected FEATURE=/topic")
        robot.cameras[feature] = topic
    if args.state_joints:
        robot.state_joints = [j for j in args.state_joints.split(",") if j]
    if args.action_lead is not None:
        robot.action_lead = args.action_lead
    if args.command_topic:
        if robot.action_groups is not None:
            raise ValueError("--command-topic: the robot YAML already gives action_groups")
        if not robot.state_joints:
            raise ValueError("--command-topic needs --state-joints (the group's joints)")
        robot.action_groups = [
            {
                "name": "arm",
                "joints": list(robot.state_joints),
                "topic": args.command_topic,
                "type": args.command_type,
            }
        ]
    return robot


def import_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dp-import", description=__doc__.splitlines()[0])
    parser.add_argument("source", choices=["lerobot"], help="what the checkpoint comes from")
    parser.add_argument("src", help="LeRobot pretrained_model folder (or its parent)")
    parser.add_argument("--out", required=True, help="our checkpoint folder to write")
    parser.add_argument("--robot", help="robot mapping YAML (fps, cameras, state_joints, ...)")
    parser.add_argument("--fps", type=float, help="the training data's frame rate (Hz)")
    parser.add_argument(
        "--camera", action="append", help="FEATURE=/topic, e.g. observation.image=/cam/image_raw"
    )
    parser.add_argument("--state-joints", help="comma-separated joint names of observation.state")
    parser.add_argument(
        "--command-topic", help="one action group of the state joints on this topic"
    )
    parser.add_argument(
        "--command-type",
        default="JointTrajectory",
        choices=["JointTrajectory", "Float64MultiArray"],
    )
    parser.add_argument("--action-lead", type=float, help="action-time lead in seconds")
    args = parser.parse_args(argv)
    from .lerobot_checkpoint import import_lerobot

    try:
        folder = import_lerobot(args.src, args.out, _robot(args))
    except (ValueError, OSError) as exc:
        print(f"dp-import: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"imported": str(args.src), "checkpoint": str(folder)}))
    return 0


def export_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dp-export",
        description="lerobot-policy CHECKPOINT: one of our checkpoints as a LeRobot 0.3.x "
        "pretrained_model folder; lerobot BAGS...: bags as a LeRobotDataset v2.1 folder, "
        "resampled exactly as dp-train resamples them",
    )
    parser.add_argument("target", choices=["lerobot-policy", "lerobot"], help="what to write")
    parser.add_argument(
        "sources", nargs="+", help="lerobot-policy: our checkpoint folder; lerobot: bags"
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument(
        "--config",
        help="lerobot: training YAML (its data: section) or data config YAML, as for dp-train",
    )
    add_overrides_argument(parser, ("data",), "data.dt=0.05", note="lerobot: ")
    parser.add_argument(
        "--cache", help="lerobot: dp-train cache folder to reuse/build (default: a temporary one)"
    )
    parser.add_argument("--task", default=None, help="lerobot: the episodes' task string")
    parser.add_argument("--robot-type", default=None, help="lerobot: info.json robot_type")
    parser.add_argument(
        "--video",
        choices=["mp4v", "ffv1"],
        help="lerobot: mp4 video features (mp4v lossy, ffv1 lossless) instead of PNG images",
    )
    args = parser.parse_args(argv)
    try:
        if args.target == "lerobot-policy":
            if len(args.sources) != 1:
                raise ValueError("lerobot-policy takes one checkpoint folder")
            from .lerobot_export import export_lerobot

            summary = export_lerobot(args.sources[0], args.out)
            summary.pop("source_meta", None)
        else:
            summary = export_dataset(args)
    except (ValueError, OSError) as exc:
        print(f"dp-export: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


def _data_config(args: argparse.Namespace):
    from ..data.config import DataConfig, load_data_config

    if not args.config:
        raise ValueError("dp-export lerobot: --config is required (the data: section)")
    config = load_data_config(args.config)
    if args.overrides:
        values = config.to_dict()
        for item in args.overrides:
            _, name, value = parse_override(item, ("data",))
            values[name] = value
        config = DataConfig.from_dict(values, where=f"data config {args.config}")
    return config


def export_dataset(args: argparse.Namespace) -> dict:
    """`dp-export lerobot`: the bags through dp-train's cache, then the cache as a dataset."""
    from ..data.cache import ensure_cache, open_cache
    from ..data.lerobot_dataset import DEFAULT_TASK
    from ..data.lerobot_dataset_writer import write_lerobot_dataset

    config = _data_config(args)
    out = Path(args.out)
    existed = out.exists()
    if existed and (not out.is_dir() or any(out.iterdir())):  # before the bags are read
        raise ValueError(f"--out {out}: exists and is not an empty folder")
    with tempfile.TemporaryDirectory(prefix="dp-export-cache-") as tmp:
        cache_dir = Path(args.cache) if args.cache else Path(tmp) / "cache"
        info = ensure_cache(args.sources, config, cache_dir)
        cache = open_cache(info.path)
        try:
            summary = write_lerobot_dataset(
                cache,
                out,
                task=args.task or DEFAULT_TASK,
                robot_type=args.robot_type,
                video=args.video,
            )
        except BaseException:
            if not existed:
                shutil.rmtree(out, ignore_errors=True)
            raise
        summary["skipped"] = info.skipped
        del cache
    return summary


if __name__ == "__main__":
    raise SystemExit(import_main())
