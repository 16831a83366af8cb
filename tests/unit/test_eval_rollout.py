"""`eval.rollout`: the node's controller and the simulation in one loop on simulated time, with
the inference latency simulated, so an episode depends only on checkpoint, seed and latency."""

from __future__ import annotations

import pytest

from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from diffusion_policy_node.eval.rollout import Rollout, _parse_param, main


@pytest.fixture(scope="module")
def rollout():
    r = Rollout(
        bundled_checkpoint(), "reach", {"inference_delay_ms": 100.0}, latency_ms=200.0,
        time_limit=3.0,
    )  # fmt: skip
    yield r
    r.close()


def test_an_episode_is_repeatable_and_sees_the_simulated_latency(rollout) -> None:
    first = rollout.episode(1000)
    again = rollout.episode(1000)
    for key in ("success", "time", "jerk_within_mean", "max_acc", "chunks", "dropped_actions"):
        assert first[key] == pytest.approx(again[key], rel=1e-9), key
    assert first["time"] > 1.0  # the arm was driven: an episode, not an instant stop
    assert first["chunks"] >= 3
    # the controller measured what was simulated (200 ms + 100 ms delay), not the CPU's time
    assert first["inference_latency_p50_ms"] == pytest.approx(300.0)
    other = rollout.episode(1001)
    assert other["jerk_within_mean"] != first["jerk_within_mean"]  # another layout, another run


def test_bad_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="'blend' is not a policy_node parameter"):
        _parse_param("blend=inpaint")
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        _parse_param("blend_mode")
    with pytest.raises(ValueError, match="not a int"):
        _parse_param("inpaint_overlap=two")
    assert _parse_param("start_idle_chunks_late=false") == ("start_idle_chunks_late", False)
    assert _parse_param("inpaint_decay=0.25") == ("inpaint_decay", 0.25)
    assert _parse_param("blend_mode:=replace") == ("blend_mode", "replace")  # dp-eval's form
    assert main(["--param", "blend_mode=mix", "--episodes", "1"]) == 2
