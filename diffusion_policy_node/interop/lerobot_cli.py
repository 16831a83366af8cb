"""`dp-import lerobot SRC --out DIR` and `dp-export lerobot-policy CHECKPOINT --out DIR`.

    dp-import lerobot outputs/train/pusht/checkpoints/last/pretrained_model --out models/pusht \\
        --fps 10 --camera observation.image=/camera/image_raw --state-joints x,y
    dp-import lerobot SRC --out DIR --robot robot.yaml     # lerobot_robot.py: the YAML keys
    dp-export lerobot-policy models/sim_arm_diffusion --out /tmp/sim_arm_lerobot

Command-line options override the robot YAML. See docs/lerobot.md.
"""

from __future__ import annotations

import argparse
import json
import sys

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
    parser = argparse.ArgumentParser(prog="dp-export", description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=["lerobot-policy"], help="what to write")
    parser.add_argument("checkpoint", help="our checkpoint folder")
    parser.add_argument("--out", required=True, help="LeRobot pretrained_model folder to write")
    args = parser.parse_args(argv)
    from .lerobot_export import export_lerobot

    try:
        summary = export_lerobot(args.checkpoint, args.out)
    except (ValueError, OSError) as exc:
        print(f"dp-export: {exc}", file=sys.stderr)
        return 2
    summary.pop("source_meta", None)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(import_main())
