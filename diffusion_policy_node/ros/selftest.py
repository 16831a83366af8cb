"""`ros_selftest`: check that two processes exchange camera and joint-state messages over DDS.

    ros_selftest talk   [--count N] [--rate HZ]        publish Image (rgb8) + JointState
    ros_selftest listen [--count N] [--timeout S]      receive, verify content, exit 0/1

Each message carries a sequence number (`header.frame_id = "selftest/<seq>"`) from which its
content is fully determined, so the listener checks every pixel and joint value, not only arrival.
Useful on a new robot PC to tell DDS/network problems apart from policy problems.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from diffusion_policy_node.ros.entry import restore_default_handlers

IMAGE_TOPIC = "selftest/image_raw"
JOINT_TOPIC = "selftest/joint_states"
SIZE = 96
JOINTS = ["joint1", "joint2", "joint3", "joint4"]
QOS = QoSProfile(
    depth=50,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.VOLATILE,
)


def expected_image(seq: int) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 RGB pattern for message `seq`."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    rgb = np.stack([(x + seq) % 256, (2 * y) % 256, (x + y + 3 * seq) % 256], axis=-1)
    return rgb.astype(np.uint8)


def expected_joints(seq: int) -> dict[str, float]:
    return {name: float(np.sin(0.1 * seq + i)) for i, name in enumerate(JOINTS)}


def make_messages(node: Node, seq: int) -> tuple[Image, JointState]:
    stamp = node.get_clock().now().to_msg()
    img = Image()
    img.header.stamp = stamp
    img.header.frame_id = f"selftest/{seq}"
    img.height = img.width = SIZE
    img.encoding = "rgb8"
    img.step = SIZE * 3
    img.data = expected_image(seq).tobytes()
    js = JointState()
    js.header.stamp = stamp
    js.header.frame_id = f"selftest/{seq}"
    # Drivers do not promise a joint order: rotate it per message so the receiver must use names.
    names = JOINTS[seq % len(JOINTS) :] + JOINTS[: seq % len(JOINTS)]
    values = expected_joints(seq)
    js.name = names
    js.position = [values[n] for n in names]
    return img, js


def check_image(msg: Image) -> str | None:
    """Return None when `msg` has the content its sequence number implies, else the problem."""
    seq = int(msg.header.frame_id.split("/")[-1])
    if (msg.encoding, msg.height, msg.width, msg.step) != ("rgb8", SIZE, SIZE, SIZE * 3):
        return f"image {seq}: got {msg.encoding} {msg.width}x{msg.height} step {msg.step}"
    got = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(SIZE, SIZE, 3)
    bad = int(np.count_nonzero(got != expected_image(seq)))
    return f"image {seq}: {bad} wrong bytes" if bad else None


def check_joints(msg: JointState) -> str | None:
    seq = int(msg.header.frame_id.split("/")[-1])
    want = expected_joints(seq)
    got = dict(zip(msg.name, msg.position, strict=True))
    if set(got) != set(want):
        return f"joint_state {seq}: names {sorted(got)} != {sorted(want)}"
    worst = max(abs(got[n] - want[n]) for n in want)
    return f"joint_state {seq}: off by {worst:g}" if worst > 1e-12 else None


def talk(count: int, rate_hz: float) -> int:
    node = rclpy.create_node("dp_selftest_talker")
    pub_img = node.create_publisher(Image, IMAGE_TOPIC, QOS)
    pub_js = node.create_publisher(JointState, JOINT_TOPIC, QOS)
    # Wait (bounded) for a subscriber so the first messages are not lost to discovery.
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not (
        pub_img.get_subscription_count() and pub_js.get_subscription_count()
    ):
        rclpy.spin_once(node, timeout_sec=0.05)
    for seq in range(count):
        img, js = make_messages(node, seq)
        pub_img.publish(img)
        pub_js.publish(js)
        rclpy.spin_once(node, timeout_sec=1.0 / rate_hz)
    # Give a late reliable reader time to fetch the history before the writer disappears.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    return 0


def listen(count: int, timeout_s: float) -> int:
    node = rclpy.create_node("dp_selftest_listener")
    seen = {"image": set(), "joint_state": set()}
    errors: list[str] = []

    def on_image(msg: Image) -> None:
        problem = check_image(msg)
        (errors.append(problem) if problem else seen["image"].add(msg.header.frame_id))

    def on_joints(msg: JointState) -> None:
        problem = check_joints(msg)
        (errors.append(problem) if problem else seen["joint_state"].add(msg.header.frame_id))

    node.create_subscription(Image, IMAGE_TOPIC, on_image, QOS)
    node.create_subscription(JointState, JOINT_TOPIC, on_joints, QOS)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not errors:
        if all(len(s) >= count for s in seen.values()):
            break
        rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    summary = {k: len(v) for k, v in seen.items()}
    if errors:
        print(f"selftest FAILED: {errors[0]} ({len(errors)} bad messages)", flush=True)
        return 1
    if any(n < count for n in summary.values()):
        print(f"selftest FAILED: received {summary} of {count} each in {timeout_s} s", flush=True)
        return 1
    print(f"selftest OK: verified {summary} messages", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ros_selftest", description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["talk", "listen"])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rate", type=float, default=30.0, help="talker rate in Hz")
    parser.add_argument("--timeout", type=float, default=30.0, help="listener timeout in s")
    args, ros_args = parser.parse_known_args(argv)
    restore_default_handlers()  # the console script's exit-at-once handlers (ros/entry.py)
    rclpy.init(args=[sys.argv[0], *ros_args])
    try:
        if args.role == "talk":
            return talk(args.count, args.rate)
        return listen(args.count, args.timeout)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0  # Ctrl-C, or `ros2 launch` stopping the talker once the listener is done
    finally:
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
