"""Check the ROS graph against what a checkpoint needs (eval/graph_requirements.py), before any
episode: publishers of the camera topics, a JointState naming every observed joint, a controller
subscribed to each action group's command topic. Stops with a message naming what is missing.
"""

from __future__ import annotations

import threading
import time

from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import JointState

from diffusion_policy_node.eval.graph_requirements import (
    GraphRequirements,
    GraphSnapshot,
    missing_on_graph,
)

POLL_S = 0.1


def graph_snapshot(
    node: Node, req: GraphRequirements, joint_names: list[str] | None
) -> GraphSnapshot:
    """Publisher and subscriber types of the required topics as `node` sees them now."""
    topics = {*req.cameras, req.joint_state_topic}
    publishers = {
        t: [i.topic_type for i in node.get_publishers_info_by_topic(t)] for t in sorted(topics)
    }
    subscribers = {
        g.topic: [i.topic_type for i in node.get_subscriptions_info_by_topic(g.topic)]
        for g in req.groups
    }
    return GraphSnapshot(publishers, subscribers, joint_names)


def check_graph(node: Node, req: GraphRequirements, timeout: float) -> list[str]:
    """What is missing after waiting up to `timeout` s for it to appear ([] as soon as nothing
    is). `node` must be spun by an executor (the JointState arrives in a callback)."""
    got: dict[str, list[str]] = {}
    arrived = threading.Event()

    def on_joint_state(msg: JointState) -> None:
        if not arrived.is_set():
            got["names"] = list(msg.name)
            arrived.set()

    qos = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)
    sub = node.create_subscription(JointState, req.joint_state_topic, on_joint_state, qos)
    deadline = time.monotonic() + timeout
    try:
        while True:
            names = got.get("names") if arrived.is_set() else None
            missing = missing_on_graph(req, graph_snapshot(node, req, names))
            if not missing or time.monotonic() >= deadline:
                return missing
            time.sleep(POLL_S)
    finally:
        node.destroy_subscription(sub)
