"""The policy node's parts without processes: parameters, conversions, timing statistics."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, JointState

from diffusion_policy_node.data.images import ImageDecodeError
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.ros.conversions import (
    JointStateSelector,
    check_image_msg,
    image_msg_to_rgb,
    rgb_to_image_msg,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_from_msg,
    trajectory_msg,
)
from diffusion_policy_node.ros.params import (
    PARAMETERS,
    PolicyNodeParams,
    declare_and_read,
    resolve_limits,
    resolve_settings,
)
from diffusion_policy_node.ros.policy_node import TickTiming
from diffusion_policy_node.runtime.safety import limits_from_action_range

JOINTS = ["a", "b", "c"]
REPO = Path(__file__).resolve().parents[2]


def _config(**changes: object) -> PolicyConfig:
    base = {
        "camera_topics": ["/cam/front", "/cam/wrist/compressed"],
        "image_size": (48, 64),
        "crop_shape": None,
        "joint_names": JOINTS,
        "state_dim": 3,
        "action_dim": 3,
        "dt": 0.1,
        "down_dims": (16, 32),
    }
    return PolicyConfig(**{**base, **changes})


# ---------------------------------------------------------------------------------- params
def test_settings_default_to_the_checkpoint() -> None:
    s = resolve_settings(PolicyNodeParams(checkpoint="/x"), _config())
    assert s.camera_topics == ("/cam/front", "/cam/wrist/compressed")
    assert s.joint_names == tuple(JOINTS)
    assert s.dt == 0.1 and s.control_rate_hz == pytest.approx(10.0)
    assert s.image_size == (48, 64)
    assert s.output_topic == "/arm_controller/joint_trajectory"
    stream = resolve_settings(PolicyNodeParams(checkpoint="/x", output_mode="stream"), _config())
    assert stream.output_topic == "/forward_position_controller/commands"


def test_settings_overrides_and_mismatches() -> None:
    p = PolicyNodeParams(
        checkpoint="/x",
        camera_topics=("/a", "/b"),
        joint_names=("x", "y", "z"),
        control_rate_hz=10.0,
        output_topic="/out",
    )
    s = resolve_settings(p, _config())
    assert s.camera_topics == ("/a", "/b") and s.joint_names == ("x", "y", "z")
    assert s.output_topic == "/out"
    cases = [
        (dict(control_rate_hz=30.0), "control_rate_hz=30.0"),
        (dict(camera_topics=("/only_one",)), "camera_topics"),
        (dict(joint_names=("x", "y")), "joint_names"),
        (dict(joint_upper_limits=(1.0, 2.0)), "joint_upper_limits"),
        (dict(max_joint_velocity=(1.0, 2.0)), "max_joint_velocity"),
    ]
    for changes, name in cases:
        with pytest.raises(ValueError, match=name):
            resolve_settings(PolicyNodeParams(checkpoint="/x", **changes), _config())
    with pytest.raises(ValueError, match="set joint_names"):
        resolve_settings(PolicyNodeParams(checkpoint="/x"), _config(joint_names=[]))


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        (dict(checkpoint=""), "checkpoint"),
        (dict(output_mode="trajectory"), "output_mode"),
        (dict(blend_mode="mean"), "blend_mode"),
        (dict(device="tpu"), "device"),
        (dict(max_obs_age=0.0), "max_obs_age"),
        (dict(max_joint_velocity=(0.0,)), "max_joint_velocity"),
        (dict(joint_names=("a", "a")), "joint_names"),
        (dict(inference_nice=20), "inference_nice"),
        (dict(spin_lead_ms=-1.0), "spin_lead_ms"),
        (dict(spin_lead_ms=float("nan")), "spin_lead_ms"),
    ],
)
def test_params_validate_themselves(changes: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"parameter {name}="):
        PolicyNodeParams(**{"checkpoint": "/x", **changes})


def test_limits_from_checkpoint_range_and_overrides() -> None:
    amin, amax = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 2.0])
    derived = resolve_limits(PolicyNodeParams(checkpoint="/x"), amin, amax, 3)
    want = limits_from_action_range(amin, amax, margin_frac=0.1)
    np.testing.assert_allclose(derived.lower, [-1.2, -0.05, 1.999])
    np.testing.assert_allclose(derived.upper, want.upper)
    np.testing.assert_allclose(derived.max_velocity, want.max_velocity)
    p = PolicyNodeParams(
        checkpoint="/x", joint_upper_limits=(0.5, 0.4, 3.0), max_joint_velocity=(0.25,)
    )
    over = resolve_limits(p, amin, amax, 3)
    np.testing.assert_allclose(over.upper, [0.5, 0.4, 3.0])
    np.testing.assert_allclose(over.lower, want.lower)
    np.testing.assert_allclose(over.max_velocity, [0.25] * 3)
    with pytest.raises(ValueError, match="lower must be < upper"):
        resolve_limits(
            PolicyNodeParams(checkpoint="/x", joint_upper_limits=(-5, 1, 3)), amin, amax, 3
        )


def test_yaml_defaults_match_the_declarations() -> None:
    doc = yaml.safe_load((REPO / "config" / "policy_node.yaml").read_text())
    values = doc["policy_node"]["ros__parameters"]
    scalars = {p.name: p.default for p in PARAMETERS if not p.kind.endswith("_array")}
    assert values == scalars
    text = (REPO / "config" / "policy_node.yaml").read_text()
    for p in PARAMETERS:  # list parameters are documented (commented out: empty = checkpoint)
        assert f"# {p.name}:" in text or p.name in values


def test_declare_and_read_parses_overrides_and_keeps_unset_lists_empty() -> None:
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
        p = declare_and_read(node)
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
def _joint_state(names: list[str], positions: list[float]) -> JointState:
    msg = JointState()
    msg.name, msg.position = names, positions
    return msg


def test_joint_state_selection_by_name() -> None:
    sel = JointStateSelector(JOINTS)
    got = sel.select(_joint_state(["c", "extra", "a", "b"], [3.0, 9.0, 1.0, 2.0]))
    np.testing.assert_array_equal(got, [1.0, 2.0, 3.0])
    got = sel.select(_joint_state(["b", "a", "c"], [2.5, 1.5, 3.5]))  # another order
    np.testing.assert_array_equal(got, [1.5, 2.5, 3.5])
    with pytest.raises(ValueError, match=r"joint\(s\) \['c'\] missing"):
        sel.select(_joint_state(["a", "b"], [1.0, 2.0]))
    with pytest.raises(ValueError, match=r"non-finite position for joint\(s\) \['b'\]"):
        sel.select(_joint_state(["a", "b", "c"], [1.0, float("nan"), 2.0]))
    with pytest.raises(ValueError, match="inconsistent"):
        sel.select(_joint_state(["a", "b", "c"], [1.0, 2.0]))
    # A NaN in a joint we do not use is fine.
    np.testing.assert_array_equal(
        sel.select(_joint_state(["a", "b", "c", "x"], [1.0, 2.0, 3.0, float("nan")])),
        [1.0, 2.0, 3.0],
    )


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


# ---------------------------------------------------------------------------------- timing
def test_tick_timing_statistics() -> None:
    timing = TickTiming(dt=0.1)
    for k, late in enumerate([0.001, 0.002, 0.0, 0.010]):
        ideal = 1.0 + 0.1 * k
        timing.tick(ideal, ideal + late, skipped=2 if k == 3 else 0)
        if k % 2 == 0:  # chunk mode: not every tick publishes
            timing.published(ideal, ideal + late + 0.0005)
        timing.done(ideal, ideal + late + 0.001)
    stats = TickTiming.summarize(timing.snapshot())
    assert stats["timed_ticks"] == 4 and stats["missed_ticks"] == 2
    assert stats["published_ticks"] == 2
    assert stats["jitter_p50_ms"] == pytest.approx(1.0)  # 1.5 and 0.5 ms
    assert stats["jitter_max_ms"] == pytest.approx(1.5)
    assert stats["tick_start_p50_ms"] == pytest.approx(1.5)
    assert stats["tick_done_max_ms"] == pytest.approx(11.0)
    timing.reset()
    assert TickTiming.summarize(timing.snapshot())["jitter_p50_ms"] is None


# ------------------------------------------------------------------------------- parameters
def test_integer_override_of_a_double_parameter_is_accepted() -> None:
    import rclpy
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException
    from rclpy.parameter import Parameter

    from diffusion_policy_node.ros.params import declare_scalar

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
