"""The robot description policy_node takes its joint limits from: `robot_description_file`,
else the `robot_description_topic` (latched by robot_state_publisher), waited for."""

from __future__ import annotations

import time
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.wait_for_message import wait_for_message
from std_msgs.msg import String

from diffusion_policy_node.runtime.limits import parse_urdf, read_urdf_file

DESCRIPTION_QOS = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,  # as robot_state_publisher latches it
)


def robot_description(node: Node, params: Any) -> tuple[dict[str, Any] | None, str]:
    """(joints of the URDF, where it came from): robot_description_file, else the
    robot_description_topic, waited for up to robot_description_timeout seconds of wall
    time (sim time or not: /clock may not run yet) — ValueError naming the topic when it
    never comes —, else (both empty) None: the demonstrated range, warned per joint."""
    if params.robot_description_file:
        return read_urdf_file(params.robot_description_file), params.robot_description_file
    topic = params.robot_description_topic
    if not topic:
        return None, ""
    timeout = params.robot_description_timeout
    deadline = time.monotonic() + timeout
    node.get_logger().info(f"waiting up to {timeout:g} s for the robot description on {topic}")
    while True:
        left = deadline - time.monotonic()
        ok, msg = wait_for_message(
            String,
            node,
            topic,
            qos_profile=DESCRIPTION_QOS,
            time_to_wait=max(min(left, 0.5), 0.0),
        )
        if ok:
            return parse_urdf(msg.data, f"topic {topic}"), f"topic {topic}"
        if left <= 0 or not node.context.ok():
            break
    publishers = [i.node_name for i in node.get_publishers_info_by_topic(topic)]
    seen = (
        f"publisher(s) {publishers} sent nothing latched (transient local)"
        if publishers
        else "no publisher"
    )
    raise ValueError(
        f"no robot description on topic {topic} within robot_description_timeout="
        f"{timeout:g} s ({seen}): run robot_state_publisher, give robot_description_file, "
        "raise robot_description_timeout, or set robot_description_topic:='' to run on the "
        "demonstrated range"
    )
