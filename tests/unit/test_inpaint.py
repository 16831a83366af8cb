"""Inpainting sampler (real-time chunking for ε-prediction DDPM/DDIM, modeling._inpaint)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from diffusion_policy_node.policy.constants import INPAINT_ACTIONS, INPAINT_WEIGHTS

from .test_policy import tiny_obs, tiny_policy

H, D = 8, 2  # tiny_policy's horizon and action_dim; action range [0, 2] x [-5, 5]


def policy_for_inference():
    return tiny_policy().eval()  # eval: centre crop, not the training's random crop


def known_chunk(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = np.array([0.0, -5.0]), np.array([2.0, 5.0])
    return (low + (high - low) * rng.uniform(0.1, 0.9, (1, H, D))).astype(np.float32)


def sample(policy, weights: np.ndarray | None, seed: int = 3, known=None) -> np.ndarray:
    obs = tiny_obs()
    if weights is not None:
        obs[INPAINT_ACTIONS] = known_chunk() if known is None else known
        obs[INPAINT_WEIGHTS] = weights.astype(np.float32)[None]
    return policy.predict_action_chunk(obs, torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize(
    "sampler",
    [
        dict(scheduler="ddim", num_inference_steps=5, eta=0.0),
        dict(scheduler="ddim", num_inference_steps=5, eta=0.7),
        dict(scheduler="ddpm", num_inference_steps=20, eta=0.0),
    ],
    ids=["ddim-eta0", "ddim-eta0.7", "ddpm"],
)
@pytest.mark.parametrize("acceleration", ["none", "jit"])
def test_frozen_prefix_is_reproduced_and_the_rest_is_sampled(
    sampler: dict, acceleration: str
) -> None:
    policy = policy_for_inference()
    policy.set_inference(**sampler)
    policy.enable_acceleration(acceleration)
    weights = np.zeros(H)
    weights[:3] = 1.0
    out = sample(policy, weights)
    norm = policy.action_normalizer.normalize
    got, want = norm(torch.from_numpy(out)), norm(torch.from_numpy(known_chunk()))
    assert torch.max(torch.abs(got[:, :3] - want[:, :3])) < 1e-4
    # the free part is sampled, not copied
    assert torch.max(torch.abs(got[:, 4:] - want[:, 4:])) > 1e-2
    plain = sample(policy, None)
    assert np.max(np.abs(out[:, 4:] - plain[:, 4:])) > 1e-3


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_zero_weights_sample_exactly_as_plain_sampling(scheduler: str) -> None:
    policy = policy_for_inference()
    policy.set_inference(
        scheduler, 5 if scheduler == "ddim" else 20, 0.3 if scheduler == "ddim" else 0.0
    )
    np.testing.assert_array_equal(sample(policy, np.zeros(H)), sample(policy, None))


def test_overlap_moves_towards_the_previous_chunk_as_the_guidance_grows() -> None:
    # A fake ε-network: ε̂ = 0 everywhere, so plain DDIM keeps the initial noise's direction;
    # only the soft mask pulls the overlap towards the known actions.
    policy = policy_for_inference()
    policy.set_inference("ddim", 5, 0.0)
    policy.network.forward_prepared = lambda sample, conditioning, k: torch.zeros_like(sample)
    norm = policy.action_normalizer.normalize
    want = norm(torch.from_numpy(known_chunk()))
    distances = []
    for g in (0.0, 0.1, 0.3, 0.6, 0.9):
        weights = np.zeros(H)
        weights[2:6] = g * np.exp(-0.5 * np.arange(1, 5))  # a decaying overlap
        got = norm(torch.from_numpy(sample(policy, weights)))
        distances.append(float(torch.mean(torch.abs(got[:, 2:6] - want[:, 2:6]))))
        # outside the overlap nothing changes
        np.testing.assert_allclose(got[:, 6:], norm(torch.from_numpy(sample(policy, None)))[:, 6:])
    assert all(a > b for a, b in itertools.pairwise(distances)), distances


def test_bad_inpaint_inputs_are_named() -> None:
    policy = policy_for_inference()
    with pytest.raises(ValueError, match=INPAINT_WEIGHTS):
        sample(policy, np.full(H, 2.0))
    with pytest.raises(ValueError, match=INPAINT_ACTIONS):
        sample(policy, np.ones(H), known=np.zeros((1, H + 1, D), np.float32))
    nan = known_chunk()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sample(policy, np.ones(H), known=nan)
    weights = np.zeros(H)
    weights[1:] = 1.0  # a NaN where the weight is 0 is ignored
    assert np.all(np.isfinite(sample(policy, weights, known=nan)))
