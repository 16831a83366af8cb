"""What a checkpoint needs from the ROS graph of a robot, and what is missing from a snapshot.

Before any episode `dp-eval` checks that the robot (or sim) offers what the checkpoint was
trained on: every camera topic published with an image type, the joint-state topic published
and one of its messages naming every observed joint, and a controller subscribed to the command
topic of every action group with the group's message type. `GraphRequirements` is that list,
`missing_on_graph` compares it with a `GraphSnapshot` (taken by `ros/graph_check.py`) and
names each missing item. ROS-free, so the rules are unit-tested without DDS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from diffusion_policy_node.action_groups import ActionGroup, single_group

from ..policy.config import camera_type_by_name

DEFAULT_COMMAND_TOPIC = "/arm_controller/joint_trajectory"
DEFAULT_JOINT_STATE_TOPIC = "/joint_states"
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
GROUP_MSGTYPES = {
    "JointTrajectory": "trajectory_msgs/msg/JointTrajectory",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
}


def command_groups(config: Any) -> tuple[ActionGroup, ...]:
    """The checkpoint's action groups (`PolicyConfig.action_groups`); a config without them
    (older checkpoints) commands all its joints on the trajectory controller's topic."""
    groups = getattr(config, "action_groups", None)
    if groups:
        return tuple(ActionGroup.from_dict(g) for g in groups)
    return single_group(list(config.joint_names), DEFAULT_COMMAND_TOPIC)


@dataclass(frozen=True)
class GraphRequirements:
    """Topics and joints a checkpoint needs on the graph (see the module docstring)."""

    cameras: tuple[str, ...]
    joint_state_topic: str
    joints: tuple[str, ...]
    groups: tuple[ActionGroup, ...]
    # the message type of each camera (recorded in the checkpoint); () : by the topic name
    camera_types: tuple[str, ...] = ()

    def camera_type(self, index: int) -> str:
        if self.camera_types:
            return self.camera_types[index]
        return camera_type_by_name(self.cameras[index])

    def to_json(self) -> str:
        return json.dumps(
            {
                "cameras": list(self.cameras),
                "joint_state_topic": self.joint_state_topic,
                "joints": list(self.joints),
                "groups": [g.to_dict() for g in self.groups],
                "camera_types": list(self.camera_types),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> GraphRequirements:
        data = json.loads(text)
        return cls(
            cameras=tuple(data["cameras"]),
            joint_state_topic=str(data["joint_state_topic"]),
            joints=tuple(data["joints"]),
            groups=tuple(ActionGroup.from_dict(g) for g in data["groups"]),
            camera_types=tuple(data.get("camera_types", ())),
        )


def requirements_of(config: Any, meta: Mapping[str, Any] | None = None) -> GraphRequirements:
    """The requirements of a checkpoint (`read_config`'s config and meta): its cameras, its
    observed joints on the training data's joint-state topic, its command groups."""
    data = (meta or {}).get("data") if isinstance(meta, Mapping) else None
    topic = DEFAULT_JOINT_STATE_TOPIC
    if isinstance(data, Mapping) and isinstance(data.get("joint_state_topic"), str):
        topic = data["joint_state_topic"]
    return GraphRequirements(
        cameras=tuple(config.camera_topics),
        joint_state_topic=topic,
        joints=tuple(config.joint_names),
        groups=command_groups(config),
        camera_types=tuple(getattr(config, "camera_types", None) or ()),
    )


@dataclass
class GraphSnapshot:
    """What the graph showed: topic -> message types of its publishers / of its subscribers,
    and the joint names of one joint-state message (None: none arrived)."""

    publishers: dict[str, list[str]] = field(default_factory=dict)
    subscribers: dict[str, list[str]] = field(default_factory=dict)
    joint_names: Sequence[str] | None = None


def missing_on_graph(req: GraphRequirements, snap: GraphSnapshot) -> list[str]:
    """One line per missing or mismatched item; [] when the robot offers everything."""
    missing: list[str] = []
    for i, topic in enumerate(req.cameras):
        types = snap.publishers.get(topic, [])
        want = req.camera_type(i)
        if not types:
            missing.append(f"camera topic {topic}: no publisher")
        elif want not in types:
            missing.append(f"camera topic {topic}: published as {sorted(set(types))}, not {want}")
    js = req.joint_state_topic
    if not snap.publishers.get(js):
        missing.append(f"joint states {js}: no publisher (joints {list(req.joints)} unseen)")
    elif snap.joint_names is None:
        missing.append(
            f"joint states {js}: published, but no message arrived (a paused sim publishes "
            "nothing: keep the robot publishing between episodes)"
        )
    else:
        absent = [j for j in req.joints if j not in set(snap.joint_names)]
        if absent:
            missing.append(f"joint(s) {absent} not in {js} (it has {list(snap.joint_names)})")
    for g in req.groups:
        want = GROUP_MSGTYPES[g.type]
        types = snap.subscribers.get(g.topic, [])
        if not types:
            missing.append(
                f"action group {g.name!r}: nobody subscribes to {g.topic} ({want}, joints "
                f"{list(g.joints)}); is its controller running?"
            )
        elif want not in types:
            missing.append(
                f"action group {g.name!r}: {g.topic} is subscribed as {sorted(set(types))}, "
                f"not {want}"
            )
    return missing
