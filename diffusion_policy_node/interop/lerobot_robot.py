"""The robot side of a LeRobot checkpoint: what LeRobot's features are on a ROS 2 robot.

A LeRobot policy knows features (`observation.images.top`, `observation.state`, `action`) and
their shapes, not topics, joints or the control rate. `RobotMapping` supplies them, from a small
YAML file and/or the command line:

    fps: 10                                   # the dataset's frame rate (required)
    cameras:                                  # LeRobot image feature -> camera topic
      observation.images.top: /top/image_raw
    state_joints: [joint1, joint2, joint3]    # observation.state, in order
    action_groups:                            # optional: default one JointTrajectory group of
      - name: arm                             #   the state joints on /arm_controller/...
        joints: [joint1, joint2, joint3]
        topic: /arm_controller/joint_trajectory
        type: JointTrajectory
    action_lead: 0.1                          # optional (s); default per group type (see below)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..action_groups import action_joints, check_groups, parse_groups, single_group
from ..config_util import load_yaml
from ..policy.config import DEFAULT_COMMAND_TOPIC

ROBOT_FILE = "ros_robot.yaml"  # written next to an exported LeRobot checkpoint


def default_camera_topic(feature: str) -> str:
    """`observation.image` -> /camera/image_raw; `observation.images.top` -> /top/image_raw."""
    name = feature.split(".")[-1] if feature.startswith("observation.images.") else "camera"
    return f"/{name}/image_raw"


@dataclass
class RobotMapping:
    """Topics, joints and timing of the robot a LeRobot policy runs on (module docstring)."""

    fps: float | None = None
    cameras: dict[str, str] = field(default_factory=dict)
    state_joints: list[str] = field(default_factory=list)
    action_groups: list[dict[str, Any]] | None = None
    action_lead: float | None = None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RobotMapping:
        doc = load_yaml(path, "robot mapping") or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a mapping (fps, cameras, state_joints, ...)")
        unknown = sorted(
            set(doc) - {"fps", "cameras", "state_joints", "action_groups", "action_lead"}
        )
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {unknown}")
        cameras = doc.get("cameras") or {}
        if not isinstance(cameras, dict):
            raise ValueError(f"{path}: cameras must map LeRobot image features to topics")
        return cls(
            fps=doc.get("fps"),
            cameras={str(k): str(v) for k, v in cameras.items()},
            state_joints=[str(j) for j in doc.get("state_joints") or []],
            action_groups=doc.get("action_groups"),
            action_lead=doc.get("action_lead"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"fps": self.fps, "cameras": dict(self.cameras)}
        out["state_joints"] = list(self.state_joints)
        if self.action_groups is not None:
            out["action_groups"] = [dict(g) for g in self.action_groups]
        if self.action_lead is not None:
            out["action_lead"] = self.action_lead
        return out

    def write(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)

    # ------------------------------------------------------------------ resolution
    def dt(self) -> float:
        fps = self.fps
        if fps is None:
            raise ValueError(
                "robot mapping: fps is required (the dataset's frame rate; LeRobot's policy "
                "config does not record it): give --fps or fps: in the robot YAML"
            )
        fps = float(fps)
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"robot mapping: fps={fps!r} must be a positive number")
        return 1.0 / fps

    def camera_topics(self, features: list[str]) -> list[str]:
        """One topic per LeRobot image feature, in feature order (default_camera_topic for
        those not mapped); an unknown feature in the mapping is an error."""
        unknown = sorted(set(self.cameras) - set(features))
        if unknown:
            raise ValueError(
                f"robot mapping: cameras names {unknown}, which the checkpoint does not have "
                f"(its image features: {features})"
            )
        return [self.cameras.get(f, default_camera_topic(f)) for f in features]

    def joints(self, state_dim: int) -> list[str]:
        joints = list(self.state_joints) or [f"joint{i + 1}" for i in range(state_dim)]
        if len(joints) != state_dim:
            raise ValueError(
                f"robot mapping: state_joints has {len(joints)} names, the checkpoint's "
                f"observation.state has {state_dim} values"
            )
        return joints

    def groups(self, joints: list[str], action_dim: int) -> list[dict[str, Any]]:
        if self.action_groups is None:
            if action_dim != len(joints):
                raise ValueError(
                    f"robot mapping: the checkpoint's action has {action_dim} values and its "
                    f"state {len(joints)}: give action_groups (joints, topic, type per group)"
                )
            return [g.to_dict() for g in single_group(joints, DEFAULT_COMMAND_TOPIC)]
        groups = parse_groups(self.action_groups, where="robot mapping action_groups")
        check_groups(groups, joints, where="robot mapping action_groups")
        if len(action_joints(groups)) != action_dim:
            raise ValueError(
                f"robot mapping: action_groups command {len(action_joints(groups))} joints, the "
                f"checkpoint's action has {action_dim} values"
            )
        return [g.to_dict() for g in groups]

    def lead(self, groups: list[dict[str, Any]], dt: float) -> float:
        """action_lead if given; else dt when every group is a JointTrajectory (the action of
        frame t is where the arm should be one frame later), 0 for stream commands."""
        if self.action_lead is not None:
            return float(self.action_lead)
        parsed = parse_groups(groups, where="robot mapping action_groups")
        return max(g.action_lead(dt) for g in parsed)
