"""The policy node's ROS parts without processes: parameter declarations, conversions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage

from diffusion_policy_node.data.images import ImageDecodeError
from diffusion_policy_node.ros.conversions import (
    check_image_msg,
    image_msg_to_rgb,
    rgb_to_image_msg,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_from_msg,
    trajectory_msg,
    trajectory_points_from_msg,
)
from diffusion_policy_node.ros.policy_node_params import declare, read_params

pytestmark = pytest.mark.ros

JOINTS = ["a", "b", "c"]
REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------- params
def test_declare_then_read_parses_overrides_and_keeps_unset_lists_empty() -> None:
    ctx = rclpy.Context()
    rclpy.init(
        context=ctx,
        signal_handler_options=SignalHandlerOptions.NO,
        args=[
            "x", "--ros-args",
            "-p", "checkpoint:=/ck", "-p", "camera_topics:=[/c1, /c2]",
            "-p", "joint_upper_limits:=[1.0, 2.0]", "-p", "output_mode:=stream",
            "-p", "max_obs_age:=0.25", "-p", "start_active:=false", "-p", "torch_threads:=2",
        ],
    )  # fmt: skip
    try:
        node = rclpy.create_node("params_probe", context=ctx)
        assert declare(node) == (True, False)  # (autostart, start_active)
        p = read_params(node)
        assert p.checkpoint == "/ck" and p.camera_topics == ("/c1", "/c2")
        assert p.joint_upper_limits == (1.0, 2.0) and p.joint_lower_limits == ()
        assert p.joint_names == () and p.max_joint_velocity == ()
        assert p.output_mode == "stream" and p.max_obs_age == 0.25
        assert p.start_active is False and p.torch_threads == 2
        assert p.control_rate_hz == 0.0 and p.inference_process is True
        described = node.describe_parameter("control_rate_hz")
        assert "checkpoint" in described.description
        assert described.floating_point_range[0].to_value == 1000.0
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


# ---------------------------------------------------------------------------------- conversions
def test_trajectory_velocities_and_accelerations_round_trip() -> None:
    pos = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    vel, acc = pos * 2, pos * 3
    msg = trajectory_msg(["c", "a", "b"], sec_to_stamp(1.0), [0.1, 0.2], pos, vel, acc)
    assert list(msg.points[0].velocities) == [0.2, 0.4, 0.6]
    _, _, _, v, a = trajectory_points_from_msg(msg, ["a", "b", "c"])
    np.testing.assert_allclose(v, vel[:, [1, 2, 0]])
    np.testing.assert_allclose(a, acc[:, [1, 2, 0]])
    plain = trajectory_msg(["a"], sec_to_stamp(1.0), [0.1], np.zeros((1, 1)))
    assert trajectory_points_from_msg(plain)[3:] == (None, None)
    msg.points[1].velocities = []
    with pytest.raises(ValueError, match="each point needs all or none"):
        trajectory_points_from_msg(msg)


def test_trajectory_round_trip_and_reordering() -> None:
    pos = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    msg = trajectory_msg(["c", "a", "b"], sec_to_stamp(12.5), [0.05, 0.1], pos)
    assert stamp_to_sec(msg.header.stamp) == 12.5
    names, times, got = trajectory_from_msg(msg, ["a", "b", "c"])
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(times, [0.05, 0.1])
    np.testing.assert_allclose(got, pos[:, [1, 2, 0]])
    empty = trajectory_msg(JOINTS, sec_to_stamp(1.0), [], np.zeros((0, 3)))
    assert trajectory_from_msg(empty, JOINTS)[2].shape == (0, 3)
    with pytest.raises(ValueError, match="do not match"):
        trajectory_from_msg(msg, ["a", "b", "d"])


def test_images_decode_resize_and_reject() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    msg = rgb_to_image_msg(rgb, sec_to_stamp(1.0))
    np.testing.assert_array_equal(image_msg_to_rgb(msg, (30, 50), "t"), rgb)
    small = image_msg_to_rgb(msg, (15, 25), "t")
    assert small.shape == (15, 25, 3)
    np.testing.assert_array_equal(small, cv2.resize(rgb, (25, 15), interpolation=cv2.INTER_AREA))
    msg.encoding, msg.data = "bgr8", rgb[:, :, ::-1].tobytes()
    np.testing.assert_array_equal(image_msg_to_rgb(msg, (30, 50), "t"), rgb)
    comp = CompressedImage(format="png", data=cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
    np.testing.assert_array_equal(image_msg_to_rgb(comp, (30, 50), "t"), rgb)
    msg.encoding = "yuv422"
    with pytest.raises(ImageDecodeError, match=r"camera X.*yuv422"):
        check_image_msg(msg, "camera X")
    with pytest.raises(ImageDecodeError):
        check_image_msg(CompressedImage(format="jpeg"), "camera X")


# ------------------------------------------------------------------------------- parameters
def test_integer_override_of_a_double_parameter_is_accepted() -> None:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.parameter import Parameter

    from diffusion_policy_node.ros.parameters import declare_scalar

    context = rclpy.Context()
    rclpy.init(args=[], context=context)
    try:
        node = rclpy.create_node(
            "declare_scalar_test",
            context=context,
            parameter_overrides=[
                Parameter("rate", Parameter.Type.INTEGER, 30),  # -p rate:=30
                Parameter("gain", Parameter.Type.STRING, "high"),
            ],
        )
        declare_scalar(node, "rate", 10.0, ParameterDescriptor())
        value = node.get_parameter("rate").value
        assert value == 30.0 and isinstance(value, float)
        declare_scalar(node, "count", 3, ParameterDescriptor())  # ints stay ints
        assert node.get_parameter("count").value == 3
        with pytest.raises(InvalidParameterTypeException):  # other mismatches still fail
            declare_scalar(node, "gain", 1.0, ParameterDescriptor())
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
