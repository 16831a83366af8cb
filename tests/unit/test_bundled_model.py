"""The checkpoint shipped in models/ (what `make demo` runs): loads, fits the bundled sim, is small
enough for the repository, is documented, and acts on a rendered observation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.sim.arm_task import JOINT_NAMES, ArmTask, ArmTaskConfig
from diffusion_policy_node.train.evaluate import BUNDLED_MODEL, bundled_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_bundled_checkpoint_is_found_in_the_source_tree():
    assert bundled_checkpoint() == REPO / "models" / BUNDLED_MODEL


def test_bundled_checkpoint_matches_the_sim_and_is_small():
    folder = bundled_checkpoint()
    config, _ = read_config(folder)
    task = ArmTaskConfig()
    assert config.policy_type == "diffusion"
    assert config.joint_names == list(JOINT_NAMES)
    assert config.image_size == (task.image_height, task.image_width)
    assert config.dt == task.control_dt
    assert config.camera_topics == ["/camera/image_raw"]
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 20 * 2**20, f"{folder} is {size / 2**20:.1f} MiB"
    card = (folder / "MODEL_CARD.md").read_text()
    for must in ("dp-collect", "dp-train", "dp-eval", "success rate", "seed"):
        assert must in card


def test_bundled_policy_acts_within_its_action_range_on_a_sim_image():
    policy = load_checkpoint(bundled_checkpoint())
    config = policy.config
    with ArmTask() as task:
        task.reset(1000)
        image = task.render()  # (H, W, 3) uint8
        state = task.joint_positions().astype(np.float32)
    frames = np.stack([image.transpose(2, 0, 1)] * config.n_obs_steps)[None, :, None]
    obs = {
        OBS_IMAGES: torch.from_numpy(frames),
        OBS_STATE: torch.from_numpy(np.stack([state] * config.n_obs_steps)[None]),
    }
    policy.seed(0)
    actions = policy.predict_action_chunk(obs).numpy()[0]
    assert actions.shape == (config.horizon, config.action_dim)
    low, high = policy.action_normalizer.min.numpy(), policy.action_normalizer.max.numpy()
    span = high - low
    assert np.all(actions >= low - 0.05 * span) and np.all(actions <= high + 0.05 * span)
    # The first executed action is near the current joint positions (no jump at the start).
    first = actions[config.n_obs_steps - 1]
    assert np.abs(first - state).max() < 0.3
