"""Streaming encoder (runtime/frame_features.py): features encoded as frames arrive are the
features a request would compute, and the worker encodes offered frames between requests."""

import time

import numpy as np
import pytest
import torch

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.constants import OBS_IMAGE_FEATURES, OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import build_policy
from diffusion_policy_node.runtime.frame_features import FrameFeatureCache
from diffusion_policy_node.runtime.inference_worker import InferenceWorker

TINY = {
    "camera_topics": ["/cam_a", "/cam_b"],
    "image_size": (40, 40),
    "crop_shape": (36, 36),
    "state_dim": 3,
    "action_dim": 2,
    "n_obs_steps": 2,
    "horizon": 8,
    "n_action_steps": 4,
    "num_keypoints": 4,
    "down_dims": (16, 32),
    "diffusion_step_embed_dim": 16,
    "num_train_timesteps": 20,
    "num_inference_steps": 5,
}


def tiny_policy(acceleration: str = "none", **overrides):
    torch.manual_seed(0)
    policy = build_policy(PolicyConfig(**{**TINY, **overrides})).eval()
    policy.set_normalizer_stats([-1, -2, -3], [1, 2, 3], [0.0, -5.0], [2.0, 5.0])
    policy.enable_acceleration(acceleration)
    return policy


def frames(seed: int, steps: int = 2) -> np.ndarray:
    """(1, T, 2 cameras, 3, 40, 40) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (1, steps, 2, 3, 40, 40), np.uint8)


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def hwc(chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chw.transpose(1, 2, 0))


@pytest.mark.parametrize("share_encoder", [True, False])
@pytest.mark.parametrize("acceleration", ["none", "jit"])
def test_features_encoded_ahead_equal_features_encoded_at_request(
    share_encoder: bool, acceleration: str
) -> None:
    policy = tiny_policy(acceleration, share_encoder=share_encoder)
    images = frames(1)
    ahead = FrameFeatureCache(policy, n_cameras=2)
    for t in range(2):
        for camera in range(2):
            ahead.add(camera, hwc(images[0, t, camera]))
    assert ahead.encoded == 4
    streamed = ahead.features(images)
    assert ahead.hits == 4 and ahead.encoded == 4  # nothing encoded at request time
    at_request = FrameFeatureCache(policy, n_cameras=2).features(images)
    assert torch.equal(streamed, at_request)  # bit for bit
    # The batched path (stream off) computes the same features, rounded in another order.
    batched = policy.obs_encoder.image_features(torch.from_numpy(images))
    assert streamed.shape == batched.shape == (1, 2, 2 * 2 * 4)
    torch.testing.assert_close(streamed, batched, rtol=1e-5, atol=1e-5)
    # Features of one camera's frame never stand in for another camera's.
    other = frames(2)
    assert not torch.allclose(ahead.features(other), streamed)


def test_chunk_from_streamed_features_matches_the_chunk_from_images() -> None:
    policy = tiny_policy()
    images = frames(3)
    state = np.random.default_rng(4).uniform(-1, 1, (1, 2, 3)).astype(np.float32)
    cache = FrameFeatureCache(policy, n_cameras=2)
    obs = cache.replace_images({OBS_IMAGES: images, OBS_STATE: state})
    assert OBS_IMAGES not in obs and obs[OBS_IMAGE_FEATURES].shape == (1, 2, 16)
    policy.seed(7)
    streamed = policy.predict_action_chunk(obs)
    policy.seed(7)
    reference = policy.predict_action_chunk({OBS_IMAGES: images, OBS_STATE: state})
    torch.testing.assert_close(streamed, reference, rtol=1e-4, atol=1e-5)


def test_bad_feature_shape_is_refused() -> None:
    policy = tiny_policy()
    state = np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match=OBS_IMAGE_FEATURES):
        policy.predict_action_chunk({OBS_IMAGE_FEATURES: torch.zeros(1, 2, 15), OBS_STATE: state})
    with pytest.raises(ValueError, match="camera"):
        FrameFeatureCache(policy, n_cameras=2).add(2, hwc(frames(0)[0, 0, 0]))


def test_worker_encodes_offered_frames_between_requests() -> None:
    policy = tiny_policy()
    images = frames(5)
    state = np.zeros((1, 2, 3), np.float32)
    with InferenceWorker(policy, stream_encoder=True, torch_threads=1) as worker:
        assert worker.streams_frames
        for t in range(2):
            for camera in range(2):
                worker.offer_frame(camera, hwc(images[0, t, camera]))
                # Offered frames are encoded on the worker thread, one at a time.
                assert wait_until(lambda n=2 * t + camera + 1: worker.frames.encoded == n)
        assert worker.frames.encoded == 4
        assert worker.submit({OBS_IMAGES: images, OBS_STATE: state}, 0.0)
        assert worker.wait(30.0)
        result = worker.poll()
        assert result is not None and result.ok, result
        assert worker.frames.hits == 4 and worker.frames.encoded == 4
    with InferenceWorker(policy, torch_threads=1) as plain:
        assert not plain.streams_frames
        plain.offer_frame(0, hwc(images[0, 0, 0]))  # ignored
        assert plain.frames is None
