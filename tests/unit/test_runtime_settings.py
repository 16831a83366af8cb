"""The node's settings without ROS: parameter validation, merge with the checkpoint, limits,
and the control loop's timing statistics."""

from __future__ import annotations

import pytest

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.runtime.settings import (
    InferenceSettings,
    NodeSettings,
    PolicyNodeParams,
    resolve_settings,
)
from diffusion_policy_node.runtime.timing import TickTiming
from tests.factories import tiny_config

JOINTS = ["a", "b", "c"]


def _config(**changes: object) -> PolicyConfig:
    cameras = ["/cam/front", "/cam/wrist/compressed"]
    return tiny_config(JOINTS, cameras, image_size=(48, 64), crop_shape=None, **changes)


def _settings(params: PolicyNodeParams | None = None) -> NodeSettings:
    return resolve_settings(params or PolicyNodeParams(checkpoint="/x"), _config())


def test_settings_default_to_the_checkpoint() -> None:
    s = resolve_settings(PolicyNodeParams(checkpoint="/x"), _config())
    assert s.camera_topics == ("/cam/front", "/cam/wrist/compressed")
    assert s.joint_names == tuple(JOINTS)
    assert s.dt == 0.1 and s.control_rate_hz == pytest.approx(10.0)
    assert s.image_size == (48, 64)
    assert s.output_topics == ("/arm_controller/joint_trajectory",)
    assert s.output_mode == "chunk" and s.action_joints == tuple(JOINTS)
    stream = resolve_settings(PolicyNodeParams(checkpoint="/x", output_mode="stream"), _config())
    assert stream.output_topics == ("/forward_position_controller/commands",)
    assert stream.output_mode == "stream"


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
    assert s.output_topics == ("/out",)
    # renamed observed joints rename the commanded ones
    assert s.groups[0].joints == ("x", "y", "z")
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


def test_inference_settings_come_from_the_parameters() -> None:
    inf = _settings().inference
    assert inf == InferenceSettings(checkpoint="/x", acceleration="jit")  # 0/-1 mean defaults
    assert inf.num_inference_steps is None and inf.seed is None and inf.torch_threads is None
    p = PolicyNodeParams(
        checkpoint="/x", num_inference_steps=4, seed=3, torch_threads=1, inference_nice=5
    )
    inf = _settings(p).inference
    assert (inf.num_inference_steps, inf.seed, inf.torch_threads, inf.nice) == (4, 3, 1, 5)
    with pytest.raises(ValueError, match="parameter torch_threads=0"):
        InferenceSettings(checkpoint="/x", torch_threads=0)
    with pytest.raises(ValueError, match="parameter acceleration='fast'"):
        InferenceSettings(checkpoint="/x", acceleration="fast")


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


def test_action_lead_comes_from_the_checkpoint_unless_the_parameter_sets_it() -> None:
    assert _settings().action_lead == 0.0  # a config that records no convention
    config = _config(action_lead=0.1)
    assert resolve_settings(PolicyNodeParams(checkpoint="/x"), config).action_lead == 0.1
    over = resolve_settings(PolicyNodeParams(checkpoint="/x", action_lead=0.0), config)
    assert over.action_lead == 0.0
    with pytest.raises(ValueError, match=r"parameter action_lead=-2\.0"):
        PolicyNodeParams(checkpoint="/x", action_lead=-2.0)
