"""Window indices (Chi et al.'s create_sample_indices), edge padding, and WindowDataset."""

import numpy as np
import pytest
import torch

from diffusion_policy_node.data.cache import build_cache, open_cache
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


def test_window_dataset_items(cache):
    ds = WindowDataset(cache, n_obs_steps=2, horizon=8, n_action_steps=4)
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
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5, shuffle=False)))
    assert batch[OBS_IMAGES].shape == (5, 1, 1, 3, 16, 16)
    assert batch[ACTION].shape == (5, 4, 4)
    with pytest.raises(ValueError, match="exceeds horizon"):
        WindowDataset(cache, n_obs_steps=2, horizon=4, n_action_steps=4)
    with pytest.raises(ValueError, match="n_obs_steps=0"):
        WindowDataset(cache, n_obs_steps=0, horizon=4, n_action_steps=4)
