"""The case for diffusion: two action modes for one observation are kept apart, not averaged.

Demonstrations: for the same observation the action chunk is (+0.8, +0.8) or (−0.8, −0.8) with
equal probability (plus small noise). A small DiffusionPolicy trained a few hundred steps puts
30–70% of 500 samples in each mode and < 10% between; the MSE regressor with the same encoder
and U-Net predicts the mean, between the modes.
"""

import pytest
import torch

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.constants import ACTION, OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import DiffusionPolicy, build_policy

BATCH = 64
STEPS = 300
IMAGE = (33, 33)  # smallest size the encoder accepts (ResNet output 2x2)


def train(policy_type: str) -> DiffusionPolicy:
    torch.manual_seed(0)
    config = PolicyConfig(
        policy_type=policy_type,
        image_size=IMAGE,
        crop_shape=None,
        state_dim=2,
        action_dim=2,
        n_obs_steps=1,
        horizon=4,
        n_action_steps=1,
        num_keypoints=4,
        down_dims=(32, 64),
        diffusion_step_embed_dim=32,
        num_train_timesteps=50,
        num_inference_steps=10,
    )
    policy = build_policy(config)
    policy.set_normalizer_stats([-1, -1], [1, 1], [-1, -1], [1, 1])
    # The observation never changes, so the encoder has nothing to learn: freeze it to save time.
    policy.obs_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    images = torch.full((BATCH, 1, 1, 3, *IMAGE), 128, dtype=torch.uint8)
    state = torch.zeros(BATCH, 1, 2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        mode = torch.randint(0, 2, (BATCH, 1, 1), generator=gen).float() * 2 - 1
        actions = mode * 0.8 + 0.05 * torch.randn(BATCH, 4, 2, generator=gen)
        loss = policy.compute_loss({OBS_IMAGES: images, OBS_STATE: state, ACTION: actions})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return policy.eval()


def mode_fractions(policy: DiffusionPolicy, n: int = 500) -> dict[str, float]:
    policy.seed(0)
    obs = {
        OBS_IMAGES: torch.full((n, 1, 1, 3, *IMAGE), 128, dtype=torch.uint8),
        OBS_STATE: torch.zeros(n, 1, 2),
    }
    chunk = policy.predict_action_chunk(obs)  # (n, 4, 2)
    position = chunk.mean(dim=(1, 2))  # along the line through both modes
    return {
        "plus": (position > 0.4).float().mean().item(),
        "minus": (position < -0.4).float().mean().item(),
        "between": (position.abs() <= 0.4).float().mean().item(),
    }


@pytest.mark.slow
def test_diffusion_keeps_both_modes_regression_averages_them() -> None:
    torch.set_num_threads(2)
    diffusion = mode_fractions(train("diffusion"))
    assert 0.3 <= diffusion["plus"] <= 0.7, diffusion
    assert 0.3 <= diffusion["minus"] <= 0.7, diffusion
    assert diffusion["between"] < 0.1, diffusion
    regression = mode_fractions(train("regression"))
    assert regression["between"] > 0.9, regression
