"""Tiny policy configs, policies, observations and checkpoints for tests: the one factory module.

Sizes are the smallest that exercise every part (two U-Net levels, a few keypoints, a few
denoising steps), so a chunk takes ~15 ms on a CPU. Weights are random but seeded: the same
call gives the same policy. Pass keyword overrides for whatever a test needs to differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_policy_node.policy.checkpoint import save_checkpoint
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import DiffusionPolicy, build_policy

JOINTS = ["joint1", "joint2", "joint3"]

# The network of every tiny policy: two U-Net levels, 8 keypoints, a 16-wide step embedding.
TINY_NETWORK: dict[str, Any] = {
    "num_keypoints": 8,
    "down_dims": (16, 32),
    "diffusion_step_embed_dim": 16,
    "num_inference_steps": 3,
}


def tiny_config(
    joints: Sequence[str] = JOINTS,
    cameras: Sequence[str] = ("/camera/image_raw",),
    image_size: tuple[int, int] = (40, 40),
    crop_shape: tuple[int, int] | None = (36, 36),
    **overrides: Any,
) -> PolicyConfig:
    """A tiny `PolicyConfig` for `joints` (state = action = joint positions) and `cameras`."""
    values: dict[str, Any] = {
        "camera_topics": list(cameras),
        "image_size": image_size,
        "crop_shape": crop_shape,
        "joint_names": list(joints),
        "state_dim": len(joints),
        "action_dim": len(joints),
        **TINY_NETWORK,
    }
    values.update(overrides)
    return PolicyConfig(**values)


def tiny_policy(
    config: PolicyConfig | None = None,
    *,
    state_range: tuple[Sequence[float], Sequence[float]] | None = None,
    action_range: tuple[Sequence[float], Sequence[float]] | None = None,
    seed: int = 0,
) -> DiffusionPolicy:
    """A seeded random-weight policy of `config` (default `tiny_config()`) with normalizer
    ranges `state_range` / `action_range` (default [-1, 1] per dimension)."""
    config = config or tiny_config()
    torch.manual_seed(seed)
    policy = build_policy(config)
    s_min, s_max = state_range or ([-1.0] * config.state_dim, [1.0] * config.state_dim)
    a_min, a_max = action_range or ([-1.0] * config.action_dim, [1.0] * config.action_dim)
    policy.set_normalizer_stats(
        np.asarray(s_min, np.float64),
        np.asarray(s_max, np.float64),
        np.asarray(a_min, np.float64),
        np.asarray(a_max, np.float64),
    )
    return policy


def tiny_checkpoint(
    folder: Path,
    config: PolicyConfig | None = None,
    *,
    state_range: tuple[Sequence[float], Sequence[float]] | None = None,
    action_range: tuple[Sequence[float], Sequence[float]] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """`tiny_policy(...)` saved as a checkpoint folder at `folder`; returns the folder."""
    policy = tiny_policy(config, state_range=state_range, action_range=action_range)
    if meta is None:
        return save_checkpoint(policy, folder)
    return save_checkpoint(policy, folder, meta=meta)


def tiny_observation(config: PolicyConfig, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images and states in [-1, 1] of the shapes `config` expects."""
    rng = np.random.default_rng(seed)
    height, width = config.image_size
    images = (batch, config.n_obs_steps, config.n_cameras, 3, height, width)
    return {
        OBS_IMAGES: rng.integers(0, 256, images, dtype=np.uint8),
        OBS_STATE: rng.uniform(-1, 1, (batch, config.n_obs_steps, config.state_dim)).astype(
            np.float32
        ),
    }


def tiny_run_doc(
    cameras: Sequence[str],
    cache_dir: Path,
    policy: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A dp-train YAML document (as a dict) for the synthetic bags of tests/unit/data_fixtures:
    a tiny policy on CPU, `cameras` at 40x40, the fixture's joints and JointTrajectory
    commands at dt 0.1; `policy` and `train` entries override the tiny defaults."""
    from tests.unit.data_fixtures import JOINT_TOPIC, JOINTS, JT_TOPIC

    return {
        "policy": {
            "crop_shape": [36, 36],
            "down_dims": [16, 32],
            "num_keypoints": 8,
            "diffusion_step_embed_dim": 16,
            **(policy or {}),
        },
        "data": {
            "camera_topics": list(cameras),
            "image_size": [40, 40],
            "joint_state_topic": JOINT_TOPIC,
            "joint_names": JOINTS,
            "command_topic": JT_TOPIC,
            "command_type": "JointTrajectory",
            "dt": 0.1,
            "n_obs_steps": 2,
            "horizon": 8,
            "n_action_steps": 4,
        },
        "train": {
            "device": "cpu",
            "num_workers": 0,
            "cache_dir": str(cache_dir),
            **(train or {}),
        },
    }
