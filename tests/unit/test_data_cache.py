"""Training cache: contents, memory mapping, rebuild-on-change, normalizer statistics."""

import json
import os
import pickle

import numpy as np
import pytest

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.data.cache import (
    build_cache,
    ensure_cache,
    normalizer_stats,
    open_cache,
)
from diffusion_policy_node.policy.constants import ACTION, OBS_STATE

from .data_fixtures import make_config


@pytest.fixture
def two_bags(make_bag):
    return [make_bag("a").path, make_bag("b", storage="sqlite3", duration_s=3.0, seed=1).path]


def test_cache_holds_the_episodes_back_to_back(two_bags, tmp_path):
    cfg = make_config()
    info = build_cache(two_bags, cfg, tmp_path / "cache")
    episodes = [ep for bag in two_bags for ep in read_bag(bag, cfg).episodes]
    assert (info.n_episodes, info.n_steps, info.rebuilt) == (2, 48, True)
    cache = open_cache(info.path)
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable
    assert cache.episode_ends.dtype == np.int64 and cache.episode_ends.tolist() == [19, 48]
    assert cache.images.shape == (48, 1, 16, 16, 3) and cache.state.dtype == np.float32
    for name in ("images", "state", "action"):
        np.testing.assert_array_equal(
            getattr(cache, name), np.concatenate([getattr(ep, name) for ep in episodes])
        )
    np.testing.assert_array_equal(cache.state[cache.episode_slice(1)], episodes[1].state)
    meta = json.loads((info.path / "meta.json").read_text())
    assert meta["config"] == cfg.to_dict() and meta["config_hash"] == cfg.content_hash()
    assert [e["length"] for e in meta["episodes"]] == [19, 29]
    for source, bag in zip(meta["sources"], two_bags, strict=True):
        files = [p for p in bag.iterdir()]
        assert source["path"] == str(bag.resolve())
        assert source["size"] == sum(p.stat().st_size for p in files)
        assert source["mtime_ns"] == max(p.stat().st_mtime_ns for p in files)
    assert cache.config == cfg


def test_ensure_cache_rebuilds_only_on_change(two_bags, tmp_path):
    cfg = make_config()
    cache_dir = tmp_path / "cache"
    assert ensure_cache(two_bags, cfg, cache_dir).rebuilt
    created = json.loads((cache_dir / "meta.json").read_text())["created_unix"]
    again = ensure_cache(two_bags, cfg, cache_dir)
    assert not again.rebuilt and again.n_steps == 48
    assert json.loads((cache_dir / "meta.json").read_text())["created_unix"] == created
    # A re-recorded bag (new mtime), another config or another bag list: rebuild.
    file = next(p for p in two_bags[0].iterdir() if p.suffix == ".mcap")
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert ensure_cache(two_bags, cfg, cache_dir).rebuilt
    assert not ensure_cache(two_bags, cfg, cache_dir).rebuilt
    smaller = ensure_cache(two_bags, make_config(image_size=(8, 8)), cache_dir)
    assert smaller.rebuilt and open_cache(cache_dir).images.shape[2:4] == (8, 8)
    only_a = ensure_cache(two_bags[:1], make_config(image_size=(8, 8)), cache_dir)
    assert only_a.rebuilt and only_a.n_episodes == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "cache"]


def test_normalizer_stats_are_per_dimension_min_max(two_bags, tmp_path):
    info = build_cache(two_bags, make_config(), tmp_path / "cache")
    cache = open_cache(info.path)
    stats = normalizer_stats(cache)
    assert set(stats) == {OBS_STATE, ACTION}
    np.testing.assert_array_equal(stats[OBS_STATE]["min"], np.asarray(cache.state).min(0))
    np.testing.assert_array_equal(stats[ACTION]["max"], np.asarray(cache.action).max(0))
    assert stats[ACTION]["min"].dtype == np.float32 and stats[ACTION]["min"].shape == (4,)
    # Joint 0 ramps at 0.3 rad/s from the grid start (0.12 s) to the 3 s bag's end (2.92 s).
    np.testing.assert_allclose(stats[OBS_STATE]["min"][0], 0.036, atol=1e-6)
    np.testing.assert_allclose(stats[OBS_STATE]["max"][0], 0.876, atol=1e-6)
    assert normalizer_stats(info.path)[OBS_STATE]["max"][0] == stats[OBS_STATE]["max"][0]


def test_an_opened_cache_pickles_by_path(two_bags, tmp_path):
    cache = open_cache(build_cache(two_bags, make_config(), tmp_path / "cache").path)
    blob = pickle.dumps(cache)
    assert len(blob) < 2000  # the path, not the arrays
    copy = pickle.loads(blob)
    np.testing.assert_array_equal(copy.images, cache.images)
