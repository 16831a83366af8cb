"""`fake_sensors` (test tool, not a product node): camera Image + JointState publisher for
trying the policy node without a robot.

    fake_sensors --ros-args -p image_width:=40 -p image_height:=40 -p rate_hz:=30.0

Publishes a moving rgb8 pattern on each of `camera_topics` (BEST_EFFORT, like camera drivers) and
a JointState at `joint_rate_hz` with the joints in a shuffled order plus one extra joint (so the
consumer must select by name). The `mode` parameter (settable at run time with
`ros2 param set` or the SetParameters service) injects bad input:

    normal          good messages
    wrong_size      every image is (2H+8)x(W+16) instead of HxW
    wrong_encoding  every `bad_every`-th image claims encoding "yuv422" (unsupported)
    flood           1920x1080 rgb8 images at `flood_rate_hz` (60 Hz) instead of the normal camera
    nan_joint       every `bad_every`-th JointState has a NaN position
    missing_joint   every `bad_every`-th JointState lacks the last joint
    duplicate_joint every `bad_every`-th JointState repeats the first joint with 0.0 (a buggy
                    driver)
    out_of_order    every `bad_every`-th image and JointState is stamped 0.5 s in the past

Services (std_srvs/Trigger): `~/pause` / `~/resume` stop and restart the cameras,
`~/pause_joints` / `~/resume_joints` the joint states. On exit it prints one JSON line with the
message counts.
"""

from __future__ import annotations

import json
import math
import sys

import cv2
import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_srvs.srv import Trigger

from diffusion_policy_node.ros.conversions import rgb_to_image_msg, sec_to_stamp
from diffusion_policy_node.ros.node_main import run_node
from diffusion_policy_node.ros.parameters import ParamSpec, declare_parameters

MODES = (
    "normal",
    "wrong_size",
    "wrong_encoding",
    "flood",
    "nan_joint",
    "missing_joint",
    "duplicate_joint",
    "out_of_order",
)
IMAGE_QOS = QoSProfile(depth=1, reliability=QoSReliabilityPolicy.BEST_EFFORT)
EXTRA_JOINT = "fake_sensors_extra_joint"
OUT_OF_ORDER_S = 0.5
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("camera_topics", "string_array", ["/camera/image_raw"], "Image topics to publish."),
    ParamSpec("image_width", "int", 40, "Image width (px)."),
    ParamSpec("image_height", "int", 40, "Image height (px)."),
    ParamSpec("rate_hz", "double", 30.0, "Camera rate."),
    ParamSpec("encoding", "string", "rgb8", "Encoding of good images: rgb8 | bgr8 | mono8."),
    ParamSpec(
        "image_format",
        "string",
        "raw",
        "raw (sensor_msgs/Image) | jpeg (sensor_msgs/CompressedImage, on any topic name).",
    ),
    ParamSpec("joint_state_topic", "string", "/joint_states", "JointState topic."),
    ParamSpec("joint_names", "string_array", ["joint1", "joint2", "joint3"], "Joints to publish."),
    ParamSpec("joint_rate_hz", "double", 100.0, "JointState rate."),
    ParamSpec("joint_amplitude", "double", 0.5, "Amplitude of the joint sine waves."),
    ParamSpec("mode", "string", "normal", f"Input mode, one of {MODES} (settable at run time)."),
    ParamSpec("bad_every", "int", 2, "In intermittent bad modes, every N-th message is bad."),
    ParamSpec("flood_width", "int", 1920, "Image width in flood mode."),
    ParamSpec("flood_height", "int", 1080, "Image height in flood mode."),
    ParamSpec("flood_rate_hz", "double", 60.0, "Image rate in flood mode."),
)


def pattern(height: int, width: int, seq: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB test pattern that moves with `seq`."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 4 + seq) % 256, (y * 4) % 256, ((x + y) * 2 + 3 * seq) % 256], axis=-1)
    return rgb.astype(np.uint8)


def joint_positions(t: float, n: int, amplitude: float) -> np.ndarray:
    """Smooth joint trajectory: joint i = amplitude * sin(2π·0.2·t + i)."""
    return amplitude * np.sin(2 * math.pi * 0.2 * t + np.arange(n))


class FakeSensors(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "fake_sensors") -> None:
        super().__init__(node_name)
        g = declare_parameters(self, PARAMS)
        if g["mode"] not in MODES:
            raise ValueError(f"parameter mode={g['mode']!r}: expected one of {MODES}")
        if g["encoding"] not in ("rgb8", "bgr8", "mono8"):
            raise ValueError(f"parameter encoding={g['encoding']!r}: rgb8, bgr8 or mono8")
        if g["bad_every"] < 1:
            raise ValueError(f"parameter bad_every={g['bad_every']}: must be >= 1")
        self.mode = g["mode"]
        self.bad_every = int(g["bad_every"])
        self.size = (int(g["image_height"]), int(g["image_width"]))
        self.encoding = g["encoding"]
        self.joint_names = list(g["joint_names"])
        self.amplitude = float(g["joint_amplitude"])
        self.camera_paused = False
        self.joints_paused = False
        self.counts = {"images": 0, "flood_images": 0, "bad_images": 0, "joint_states": 0}
        self.counts["bad_joint_states"] = 0
        self._seq = 0
        self._js_seq = 0
        self._rng = np.random.default_rng(0)
        if g["image_format"] not in ("raw", "jpeg"):
            raise ValueError(f"parameter image_format={g['image_format']!r}: raw or jpeg")
        self.jpeg = g["image_format"] == "jpeg"
        img_type = CompressedImage if self.jpeg else Image
        self._img_pubs = [
            self.create_publisher(img_type, t, IMAGE_QOS) for t in g["camera_topics"]
        ]
        self._js_pub = self.create_publisher(JointState, g["joint_state_topic"], 10)
        flood = rgb_to_image_msg(
            pattern(int(g["flood_height"]), int(g["flood_width"]), 0), sec_to_stamp(0.0)
        )
        self._flood_msg = flood  # built once: only the stamp changes per message
        self.add_on_set_parameters_callback(self._on_set_parameters)
        for name, flag, value in (
            ("pause", "camera_paused", True),
            ("resume", "camera_paused", False),
            ("pause_joints", "joints_paused", True),
            ("resume_joints", "joints_paused", False),
        ):
            self.create_service(Trigger, f"~/{name}", self._toggle(flag, value))
        self.create_timer(1.0 / float(g["rate_hz"]), self._on_camera)
        self.create_timer(1.0 / float(g["flood_rate_hz"]), self._on_flood)
        self.create_timer(1.0 / float(g["joint_rate_hz"]), self._on_joints)

    def _toggle(self, flag: str, value: bool):
        def handler(_req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
            setattr(self, flag, value)
            resp.success = True
            resp.message = f"{flag}={value}"
            return resp

        return handler

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for param in params:
            if param.name == "mode":
                if param.value not in MODES:
                    return SetParametersResult(
                        successful=False, reason=f"mode must be one of {MODES}"
                    )
                self.mode = param.value
                self.get_logger().info(f"mode -> {self.mode}")
            elif param.name == "bad_every":
                if int(param.value) < 1:
                    return SetParametersResult(successful=False, reason="bad_every must be >= 1")
                self.bad_every = int(param.value)
        return SetParametersResult(successful=True)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _bad_turn(self, seq: int) -> bool:
        return seq % self.bad_every == self.bad_every - 1

    def _on_camera(self) -> None:
        if self.camera_paused or self.mode == "flood":
            return
        seq = self._seq
        self._seq += 1
        now = self._now()
        stamp = now
        h, w = self.size
        encoding = self.encoding
        bad = False
        if self.mode == "wrong_size":
            h, w, bad = 2 * h + 8, w + 16, True
        elif self.mode == "wrong_encoding" and self._bad_turn(seq):
            encoding, bad = "yuv422", True
        elif self.mode == "out_of_order" and self._bad_turn(seq):
            stamp, bad = now - OUT_OF_ORDER_S, True
        rgb = pattern(h, w, seq)
        msg = rgb_to_image_msg(rgb, sec_to_stamp(stamp), frame_id=f"fake_camera/{seq}")
        if encoding == "bgr8":
            msg.data = rgb[:, :, ::-1].tobytes()
        elif encoding == "mono8":
            msg.data = rgb[:, :, 1].tobytes()
            msg.step = w
        msg.encoding = encoding
        if self.jpeg:
            ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]))
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            msg = CompressedImage(header=msg.header, format="rgb8; jpeg compressed bgr8")
            msg.data = buf.tobytes()
        for pub in self._img_pubs:
            pub.publish(msg)
        self.counts["images"] += 1
        self.counts["bad_images"] += int(bad)

    def _on_flood(self) -> None:
        if self.camera_paused or self.mode != "flood":
            return
        self._flood_msg.header.stamp = sec_to_stamp(self._now())
        for pub in self._img_pubs:
            pub.publish(self._flood_msg)
        self.counts["flood_images"] += 1

    def _on_joints(self) -> None:
        if self.joints_paused:
            return
        seq = self._js_seq
        self._js_seq += 1
        now = self._now()
        stamp = now
        values = dict(
            zip(
                self.joint_names,
                joint_positions(now, len(self.joint_names), self.amplitude),
                strict=True,
            )
        )
        values[EXTRA_JOINT] = 0.0
        bad = self._bad_turn(seq)
        if self.mode == "nan_joint" and bad:
            values[self.joint_names[0]] = float("nan")
        elif self.mode == "missing_joint" and bad:
            del values[self.joint_names[-1]]
        elif self.mode == "out_of_order" and bad:
            stamp = now - OUT_OF_ORDER_S
        else:
            bad = False
        names = list(values)
        self._rng.shuffle(names)
        msg = JointState()
        msg.header.stamp = sec_to_stamp(stamp)
        msg.name = names
        msg.position = [float(values[n]) for n in names]
        if self.mode == "duplicate_joint" and self._bad_turn(seq):
            bad = True
            msg.name = [*names, self.joint_names[0]]
            msg.position = [*msg.position, 0.0]
        self._js_pub.publish(msg)
        self.counts["joint_states"] += 1
        self.counts["bad_joint_states"] += int(bad)


def main(argv: list[str] | None = None) -> int:
    def report(node: FakeSensors) -> None:
        print(json.dumps({"fake_sensors": node.counts}), flush=True)

    return run_node(
        FakeSensors,
        "fake_sensors",
        argv,
        on_exit=report,
        description=__doc__,
        parameters=PARAMS,
    )


if __name__ == "__main__":
    sys.exit(main())
