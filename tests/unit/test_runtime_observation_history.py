"""ObservationHistory: filling/rolling, HWC→CHW batch layout, ages and staleness reasons."""

import numpy as np
import pytest

from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.runtime.observation_history import STATE_INPUT, ObservationHistory

H, W = 4, 5


def pattern_image(offset: int) -> np.ndarray:
    """image[h, w, c] = offset + 50*h + 10*w + c (all < 256)."""
    h, w, c = np.meshgrid(np.arange(H), np.arange(W), np.arange(3), indexing="ij")
    return (offset + 50 * h + 10 * w + c).astype(np.uint8)


def make_history(n_obs_steps: int = 3) -> ObservationHistory:
    return ObservationHistory(n_obs_steps, ["front", "wrist"], state_dim=2)


def feed(hist: ObservationHistory, t: float, state: list[float], offset: int = 0) -> None:
    hist.update_image("front", pattern_image(offset), t)
    hist.update_image("wrist", pattern_image(offset + 1), t)
    hist.update_state(np.array(state), t)


def test_first_sample_fills_and_layout_is_chw() -> None:
    hist = make_history()
    feed(hist, 0.0, [1.0, 2.0])
    hist.sample(0.0)
    batch, t_newest = hist.as_batch()
    assert t_newest == 0.0
    images, state = batch[OBS_IMAGES], batch[OBS_STATE]
    assert images.shape == (1, 3, 2, 3, H, W) and images.dtype == np.uint8
    assert state.shape == (1, 3, 2) and state.dtype == np.float32
    np.testing.assert_array_equal(state[0], [[1, 2], [1, 2], [1, 2]])
    # HWC -> CHW: images[0, step, cam, c, h, w] == offset + 50h + 10w + c
    assert images[0, 2, 0, 2, 3, 4] == 50 * 3 + 10 * 4 + 2
    assert images[0, 0, 1, 1, 2, 0] == 1 + 50 * 2 + 1
    np.testing.assert_array_equal(images[0, 0], images[0, 2])


def test_history_rolls_oldest_out() -> None:
    hist = make_history()
    for k in range(5):
        feed(hist, 0.1 * k, [float(k), -float(k)], offset=k)
        hist.sample(0.1 * k)
    batch, t_newest = hist.as_batch()
    assert t_newest == pytest.approx(0.4)
    np.testing.assert_array_equal(batch[OBS_STATE][0, :, 0], [2, 3, 4])
    # newest frame of the front camera was written with offset 4
    assert batch[OBS_IMAGES][0, 2, 0, 0, 0, 0] == 4
    assert batch[OBS_IMAGES][0, 0, 0, 0, 0, 0] == 2
    assert hist.n_samples == 3


def test_inputs_are_copied_at_sample_time() -> None:
    hist = make_history(n_obs_steps=2)
    img = pattern_image(0)
    hist.update_image("front", img, 0.0)
    hist.update_image("wrist", img, 0.0)
    hist.update_state(np.zeros(2), 0.0)
    hist.sample(0.0)
    img[:] = 255
    batch, _ = hist.as_batch()
    assert batch[OBS_IMAGES][0, 1, 0, 0, 0, 0] == 0


def test_ages_and_staleness_reasons() -> None:
    hist = make_history()
    hist.update_image("front", pattern_image(0), 1.00)
    hist.update_image("wrist", pattern_image(0), 0.70)
    hist.update_state(np.zeros(2), 0.95)
    ages = hist.ages(1.05)
    assert ages["front"] == pytest.approx(0.05)
    assert ages["wrist"] == pytest.approx(0.35)
    assert ages[STATE_INPUT] == pytest.approx(0.10)

    fresh = hist.is_stale(1.05, max_age=0.5)
    assert not fresh and fresh.reason == "" and fresh.inputs == ()

    stale = hist.is_stale(1.05, max_age=0.2)
    assert stale and stale.inputs == ("wrist",)
    assert "camera 'wrist' image is 0.350 s old" in stale.reason
    assert "front" not in stale.reason

    both = hist.is_stale(1.30, max_age=0.2)
    assert both.inputs == ("front", "wrist", STATE_INPUT)
    assert "joint state is 0.350 s old" in both.reason


def test_missing_and_future_inputs_are_stale() -> None:
    hist = make_history()
    hist.update_image("front", pattern_image(0), 0.0)
    res = hist.is_stale(0.0, max_age=0.1)
    assert res.inputs == ("wrist", STATE_INPUT)
    assert "no camera 'wrist' image received yet" in res.reason
    assert "no joint state received yet" in res.reason
    with pytest.raises(RuntimeError, match="wrist"):
        hist.sample(0.0)

    hist.update_image("wrist", pattern_image(0), 0.0)
    hist.update_state(np.zeros(2), 5.0)  # stamped far ahead of the node's clock
    res = hist.is_stale(0.0, max_age=0.1)
    assert res.inputs == (STATE_INPUT,)
    assert "in the future" in res.reason


def test_out_of_order_messages_are_ignored() -> None:
    hist = make_history()
    assert hist.update_state(np.array([1.0, 1.0]), 2.0)
    assert not hist.update_state(np.array([9.0, 9.0]), 1.5)
    assert hist.update_image("front", pattern_image(3), 2.0)
    assert not hist.update_image("front", pattern_image(7), 1.0)
    hist.update_image("wrist", pattern_image(0), 2.0)
    hist.sample(2.0)
    batch, _ = hist.as_batch()
    np.testing.assert_array_equal(batch[OBS_STATE][0, -1], [1, 1])
    assert batch[OBS_IMAGES][0, -1, 0, 0, 0, 0] == 3


def test_reset_time_going_back_and_validation() -> None:
    hist = make_history(n_obs_steps=2)
    feed(hist, 1.0, [1.0, 1.0])
    hist.sample(1.0)
    with pytest.raises(ValueError, match="reset"):
        hist.sample(0.5)
    hist.reset()
    assert hist.n_samples == 0 and hist.last_sample_time is None
    with pytest.raises(RuntimeError, match="sample"):
        hist.as_batch()
    feed(hist, 0.5, [7.0, 8.0])
    hist.sample(0.5)
    np.testing.assert_array_equal(hist.as_batch()[0][OBS_STATE][0], [[7, 8], [7, 8]])

    hist.reset(clear_inputs=True)
    assert not hist.ready and hist.missing_inputs() == ["front", "wrist", STATE_INPUT]

    with pytest.raises(ValueError, match="unknown camera 'side'"):
        hist.update_image("side", pattern_image(0), 0.0)
    with pytest.raises(ValueError, match="uint8"):
        hist.update_image("front", pattern_image(0).astype(np.float32), 0.0)
    hist.update_image("front", pattern_image(0), 0.0)
    with pytest.raises(ValueError, match="resize"):
        hist.update_image("wrist", np.zeros((H + 1, W, 3), np.uint8), 0.0)
    with pytest.raises(ValueError, match="joint_names"):
        hist.update_state(np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="n_obs_steps"):
        ObservationHistory(0, ["front"], 2)
    with pytest.raises(ValueError, match="unique"):
        ObservationHistory(2, ["a", "a"], 2)


def test_state_only_history_has_no_image_key() -> None:
    hist = ObservationHistory(2, [], state_dim=1)
    hist.update_state(np.array([0.5]), 0.0)
    hist.sample(0.0)
    batch, _ = hist.as_batch()
    assert set(batch) == {OBS_STATE}
    assert batch[OBS_STATE].shape == (1, 2, 1)
