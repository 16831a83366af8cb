"""Window indices (Chi et al.'s create_sample_indices), edge padding, and WindowDataset."""

import json

import numpy as np
import pytest
import torch

from diffusion_policy_node.data.cache import CACHE_FORMAT, build_cache, open_cache
from diffusion_policy_node.data.config import DataConfig
from diffusion_policy_node.data.sampler import (
    WindowDataset,
    create_sample_indices,
    sample_sequence,
)
from diffusion_policy_node.policy.constants import ACTION, ACTION_IS_PAD, OBS_IMAGES, OBS_STATE

from .data_fixtures import make_config


def reference_indices(episode_ends, sequence_length, pad_before, pad_after):
    """Chi et al.'s loop (diffusion_policy/common/sampler.py), as published."""
    indices = []
    for i in range(len(episode_ends)):
        start_idx = 0 if i == 0 else episode_ends[i - 1]
        end_idx = episode_ends[i]
        episode_length = end_idx - start_idx
        min_start = -pad_before
        max_start = episode_length - sequence_length + pad_after
        for idx in range(min_start, max_start + 1):
            buffer_start_idx = max(idx, 0) + start_idx
            buffer_end_idx = min(idx + sequence_length, episode_length) + start_idx
            start_offset = buffer_start_idx - (idx + start_idx)
            end_offset = (idx + sequence_length + start_idx) - buffer_end_idx
            indices.append(
                [buffer_start_idx, buffer_end_idx, start_offset, sequence_length - end_offset]
            )
    return np.array(indices, dtype=np.int64).reshape(-1, 4)


def test_golden_indices_by_hand():
    got = create_sample_indices(np.array([3, 5]), 3, pad_before=1, pad_after=1)
    want = [[0, 2, 1, 3], [0, 3, 0, 3], [1, 3, 0, 2], [3, 5, 1, 3], [3, 5, 0, 2]]
    assert got.dtype == np.int64 and got.tolist() == want


def test_matches_the_reference_on_random_episodes():
    rng = np.random.default_rng(0)
    for _ in range(30):
        lengths = rng.integers(1, 25, size=rng.integers(1, 6))
        seq = int(rng.integers(1, 12))
        pad_before, pad_after = (int(v) for v in rng.integers(0, seq, size=2))
        ends = np.cumsum(lengths)
        got = create_sample_indices(ends, seq, pad_before, pad_after)
        np.testing.assert_array_equal(got, reference_indices(ends, seq, pad_before, pad_after))
        # Window count per episode: length - seq + pad_before + pad_after + 1 (if positive).
        assert len(got) == sum(max(n - seq + pad_before + pad_after + 1, 0) for n in lengths)


def test_empty_and_invalid_inputs():
    assert create_sample_indices(np.array([], np.int64), 4).shape == (0, 4)
    assert create_sample_indices(np.array([2, 2, 5]), 3).tolist() == [[2, 5, 0, 3]]
    with pytest.raises(ValueError, match="pad_before"):
        create_sample_indices(np.array([5]), 3, pad_before=3)
    with pytest.raises(ValueError, match="nondecreasing"):
        create_sample_indices(np.array([5, 3]), 2)
    with pytest.raises(ValueError, match="sequence_length"):
        create_sample_indices(np.array([5]), 0)


def test_sample_sequence_repeats_the_edges():
    data = {"x": np.arange(5) * 10, "y": np.arange(10).reshape(5, 2)}
    out = sample_sequence(data, 3, 3, 5, 1, 3)
    assert out["x"].tolist() == [30, 30, 40] and out["y"].tolist() == [[6, 7], [6, 7], [8, 9]]
    assert sample_sequence(data, 3, 3, 5, 0, 2)["x"].tolist() == [30, 40, 40]
    assert sample_sequence(data, 4, 1, 3, 1, 3)["x"].tolist() == [10, 10, 20, 20]
    assert sample_sequence(data, 2, 0, 2, 0, 2)["x"].tolist() == [0, 10]
    with pytest.raises(ValueError, match="inconsistent window"):
        sample_sequence(data, 3, 0, 2, 0, 3)


@pytest.fixture
def cache(make_bag, tmp_path):
    bags = [make_bag("a").path, make_bag("b", duration_s=2.5, seed=1).path]
    return open_cache(build_cache(bags, make_config(), tmp_path / "cache").path)


def test_window_dataset_items_chi_end(cache):
    ds = WindowDataset(cache, 2, horizon=8, n_action_steps=4, window_end="action_steps")
    lengths = np.diff(np.concatenate([[0], cache.episode_ends]))
    assert lengths.tolist() == [19, 24]
    assert len(ds) == sum(n - 8 + 1 + 3 + 1 for n in lengths)  # 16 + 21
    item = ds[0]
    assert item[OBS_IMAGES].shape == (2, 1, 3, 16, 16) and item[OBS_IMAGES].dtype == torch.uint8
    assert item[OBS_STATE].shape == (2, 4) and item[OBS_STATE].dtype == torch.float32
    assert item[ACTION].shape == (8, 4) and item[ACTION_IS_PAD].dtype == torch.bool
    # First window: one padded observation step before the episode (a copy of step 0).
    np.testing.assert_array_equal(item[OBS_STATE].numpy(), cache.state[[0, 0]])
    np.testing.assert_array_equal(item[ACTION].numpy(), cache.action[[0, 0, 1, 2, 3, 4, 5, 6]])
    want_images = np.asarray(cache.images[[0, 0]]).transpose(0, 1, 4, 2, 3)
    np.testing.assert_array_equal(item[OBS_IMAGES].numpy(), want_images)
    assert not item[ACTION_IS_PAD].any()
    # Last window of episode 0 starts at step 14: steps 19..21 are past the end (padded).
    last = ds[15]
    np.testing.assert_array_equal(last[OBS_STATE].numpy(), cache.state[[14, 15]])
    np.testing.assert_array_equal(
        last[ACTION].numpy(), cache.action[[14, 15, 16, 17, 18, 18, 18, 18]]
    )
    assert last[ACTION_IS_PAD].tolist() == [False] * 5 + [True] * 3
    # The next window is the first of episode 1 (never mixes episodes).
    np.testing.assert_array_equal(ds[16][OBS_STATE].numpy(), cache.state[[19, 19]])
    # The newest observation runs once over each episode's steps 0 .. length - 4: the last
    # window's 8 actions then end n_action_steps - 1 = 3 steps past the episode.
    newest_obs = [int(r[0] + max(1 - r[2], 0)) for r in ds.indices]
    assert sorted(set(newest_obs)) == newest_obs == [*range(0, 16), *range(19, 40)]


def test_window_dataset_batches_and_validates(cache):
    ds = WindowDataset(cache.path, n_obs_steps=1, horizon=4, n_action_steps=4)
    assert len(ds) == sum(n - 4 + 0 + 3 + 1 for n in np.diff([0, *cache.episode_ends]))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch[OBS_IMAGES].shape == (5, 1, 1, 3, 16, 16)
    assert batch[ACTION].shape == (5, 4, 4)
    with pytest.raises(ValueError, match="exceeds horizon"):
        WindowDataset(cache, n_obs_steps=2, horizon=4, n_action_steps=4)
    with pytest.raises(ValueError, match="n_obs_steps=0"):
        WindowDataset(cache, n_obs_steps=0, horizon=4, n_action_steps=4)
    with pytest.raises(ValueError, match="window_end='end'"):
        WindowDataset(cache, n_obs_steps=1, horizon=4, n_action_steps=4, window_end="end")


def test_window_dataset_default_observes_every_step_then_holds(cache):
    ds = WindowDataset(cache, n_obs_steps=2, horizon=8, n_action_steps=4)
    lengths = np.diff(np.concatenate([[0], cache.episode_ends]))
    assert len(ds) == sum(n - 8 + 1 + 6 + 1 for n in lengths)  # pad_after = horizon - n_obs
    newest_obs = [int(r[0] + max(1 - r[2], 0)) for r in ds.indices]
    assert newest_obs == [*range(0, 19), *range(19, 43)]  # every step, the last included
    last = ds[18]  # episode 0's last window: observations 17, 18 (its last step)
    np.testing.assert_array_equal(last[OBS_STATE].numpy(), cache.state[[17, 18]])
    np.testing.assert_array_equal(last[ACTION].numpy(), cache.action[[17] + [18] * 7])
    assert not last[ACTION_IS_PAD].any()  # holding at the last action is a target


def _write_cache(folder, state, action, episode_ends):
    """A cache folder holding these arrays (blank 8x8 images), as build_cache lays it out."""
    folder.mkdir()
    n = len(state)
    config = DataConfig(joint_names=[f"j{i}" for i in range(state.shape[1])], image_size=(8, 8))
    np.save(folder / "images.npy", np.zeros((n, 1, 8, 8, 3), np.uint8))
    np.save(folder / "state.npy", state.astype(np.float32))
    np.save(folder / "action.npy", action.astype(np.float32))
    np.save(folder / "episode_ends.npy", np.asarray(episode_ends, np.int64))
    meta = {"format": CACHE_FORMAT, "config": config.to_dict(), "n_steps": n}
    meta["n_episodes"] = len(episode_ends)
    (folder / "meta.json").write_text(json.dumps(meta))
    return open_cache(folder)


def _gripper_demos(n_episodes=4, length=30):
    """Demonstrations that end on a gripper close: the arm (state/action column 0) moves to a
    target, which it reaches one step before the end; the gripper (column 1) is commanded
    closed (1.0) on the last step only, as a recording stopped right after the close."""
    states, actions, ends = [], [], []
    for e in range(n_episodes):
        target = 0.5 + 0.1 * e
        arm = np.minimum(np.arange(length) / (length - 2), 1.0) * target
        grip_state = np.zeros(length)
        grip_cmd = np.zeros(length)
        grip_cmd[-1] = 1.0
        states.append(np.stack([arm, grip_state], axis=1))
        actions.append(np.stack([np.append(arm[1:], arm[-1]), grip_cmd], axis=1))
        ends.append(length * (e + 1))
    return np.concatenate(states), np.concatenate(actions), ends


def _nearest_window_policy(ds):
    """The smallest policy that learns exactly what the windows teach: the executed action
    (index n_obs_steps - 1) of the training window whose observation is nearest."""
    items = [ds[i] for i in range(len(ds))]
    obs = np.stack([it[OBS_STATE].numpy().ravel() for it in items])
    act = np.stack([it[ACTION].numpy()[ds.n_obs_steps - 1] for it in items])

    def policy(observation):
        return act[np.argmin(np.linalg.norm(obs - observation.ravel(), axis=1))]

    return policy


@pytest.mark.parametrize("window_end", ["hold", "action_steps"])
def test_a_demonstration_ending_on_a_gripper_close_teaches_the_close(tmp_path, window_end):
    state, action, ends = _gripper_demos()
    cache = _write_cache(tmp_path / "c", state, action, ends)
    ds = WindowDataset(cache, n_obs_steps=2, horizon=16, n_action_steps=8, window_end=window_end)
    newest = {int(r[0] + max(1 - r[2], 0)) for r in ds.indices}
    last_steps = {e - 1 for e in ends}
    # The robot has arrived at demonstration 1's target (two observations, gripper open).
    policy = _nearest_window_policy(ds)
    arrived = state[ends[1] - 2 : ends[1]]
    assert arrived[0, 0] == arrived[1, 0] == 0.6
    if window_end == "hold":
        assert last_steps <= newest  # the last step is an observation
        assert policy(arrived)[1] == 1.0  # ... so the policy closes the gripper
    else:  # Chi et al.'s padding: the end is never seen, the policy never closes
        assert not last_steps & newest
        assert policy(arrived)[1] == 0.0
