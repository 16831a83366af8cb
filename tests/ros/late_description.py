"""Publishes a URDF latched (transient local, as robot_state_publisher) after a delay.

python -m tests.ros.late_description TOPIC DELAY_S URDF_FILE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from std_msgs.msg import String


def main() -> None:
    topic, delay, path = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
    time.sleep(delay)
    rclpy.init()
    node = rclpy.create_node("late_description")
    qos = QoSProfile(
        depth=1,
        reliability=QoSReliabilityPolicy.RELIABLE,
        durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
    )
    node.create_publisher(String, topic, qos).publish(String(data=path.read_text()))
    print("published", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
