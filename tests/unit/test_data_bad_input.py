"""Bad input: every case gives an error naming bag, topic and field, or a counted skip."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from diffusion_policy_node.data.bag_reader import BagReadError, find_bags, read_bag
from diffusion_policy_node.data.cache import (
    CacheError,
    build_cache,
    ensure_cache,
    open_cache,
)
from diffusion_policy_node.data.images import ImageDecodeError

from .data_fixtures import JOINTS, frame_color, joint_positions, make_config, newest

CAMERA = "/camera/image_raw"


def storage_file(bag):
    (file,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    return file


def truncate(bag, fraction=0.6):
    file = storage_file(bag)
    with open(file, "r+b") as fh:
        fh.truncate(int(file.stat().st_size * fraction))
    return file


def test_missing_bag_path(tmp_path):
    missing = tmp_path / "no_such_bag"
    for call in (
        lambda: read_bag(missing, make_config()),
        lambda: find_bags([missing]),
        lambda: build_cache([missing], make_config(), tmp_path / "cache"),
    ):
        with pytest.raises(BagReadError, match="not found") as err:
            call()
        assert str(missing) in str(err.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_is_an_error_naming_it(make_bag, storage):
    truth = make_bag(storage=storage)
    file = truncate(truth.path)
    for target in (truth.path, file):
        with pytest.raises(BagReadError, match="truncated or corrupt") as err:
            read_bag(target, make_config())
        assert str(target) in str(err.value)


def test_bag_folder_without_metadata(make_bag, tmp_path):
    # One storage file (or the numbered parts of one recording) is read as the bag...
    truth = make_bag()
    (ep,) = read_bag(truth.path, make_config()).episodes
    (truth.path / "metadata.yaml").unlink()
    (again,) = read_bag(truth.path, make_config()).episodes
    np.testing.assert_array_equal(again.state, ep.state)
    # ...two unrelated files are not: reindex or pass them one by one.
    other = make_bag("other", seed=5)
    shutil.copy(storage_file(other.path), truth.path / "other.mcap")
    with pytest.raises(BagReadError, match=r"no metadata\.yaml.*ros2 bag reindex"):
        read_bag(truth.path, make_config())


def test_configured_topic_absent(make_bag):
    truth = make_bag()
    with pytest.raises(BagReadError) as err:
        read_bag(truth.path, make_config(camera_topics=["/camera/wrist/image_raw"]))
    msg = str(err.value)
    assert str(truth.path) in msg and "topic /camera/wrist/image_raw" in msg
    assert "DataConfig.camera_topics" in msg and CAMERA in msg  # lists what the bag has


def test_topic_of_the_wrong_type(make_bag):
    truth = make_bag()
    with pytest.raises(BagReadError, match="sensor_msgs/msg/JointState") as err:
        read_bag(truth.path, make_config(joint_state_topic=CAMERA))
    assert f"topic {CAMERA}" in str(err.value) and "joint_state_topic" in str(err.value)


def test_joint_name_not_in_the_joint_states(make_bag):
    truth = make_bag(command_type=None)
    cfg = make_config(truth.spec, joint_names=[*JOINTS, "elbow_roll"])
    with pytest.raises(BagReadError) as err:
        read_bag(truth.path, cfg)
    msg = str(err.value)
    assert str(truth.path) in msg and "topic /joint_states field name" in msg
    assert "elbow_roll" in msg and "gripper_finger" in msg  # names what the bag has


def test_joint_missing_from_the_trajectory_command(make_bag):
    truth = make_bag(command_joint_names=JOINTS[:3])
    with pytest.raises(BagReadError) as err:
        read_bag(truth.path, make_config())
    msg = str(err.value)
    assert "topic /arm_controller/joint_trajectory message 0 field joint_names" in msg
    assert "'wrist'" in msg


def test_float64_command_of_the_wrong_length(make_bag):
    truth = make_bag(command_type="Float64MultiArray")
    with pytest.raises(BagReadError, match="field data: has 4 values, expected 3"):
        read_bag(truth.path, make_config(truth.spec, joint_names=JOINTS[:3]))


def test_unsupported_image_encoding(make_bag):
    truth = make_bag(encoding="yuv422")
    with pytest.raises(ImageDecodeError) as err:
        read_bag(truth.path, make_config())
    msg = str(err.value)
    assert f"bag {truth.path} topic {CAMERA} message 0 field encoding" in msg
    assert "yuv422" in msg


def test_image_size_change_within_an_episode_is_an_error(make_bag):
    truth = make_bag(size_change=(10, (24, 32)))
    with pytest.raises(BagReadError) as err:
        read_bag(truth.path, make_config())
    msg = str(err.value)
    assert f"topic {CAMERA} message 10" in msg and "from 32x32 to 24x32" in msg


def test_image_sizes_may_differ_between_bags(make_bag, tmp_path):
    small = make_bag("small", image_hw=(32, 32))
    large = make_bag("large", image_hw=(48, 40), encoding="png", seed=3)
    info = build_cache([small.path, large.path], make_config(), tmp_path / "cache")
    cache = open_cache(info.path)
    assert cache.images.shape[1:] == (1, 16, 16, 3) and info.n_episodes == 2
    assert cache.episode_ends.tolist() == [19, 38]
    # Both bags' grids start at 0.12 s (the first command); the 48x40 png frame is resized.
    second = cache.images[cache.episode_slice(1)]
    first_frame = newest(large.camera_header_ns[CAMERA], [1_700_000_000_120_000_000])[0]
    assert np.all(second[0, 0] == frame_color(0, int(first_frame)))


def test_short_episode_is_skipped_and_counted(make_bag, tmp_path):
    good = make_bag("good")
    short = make_bag("short", duration_s=0.8)
    contents = read_bag(short.path, make_config())
    assert contents.episodes == []
    (item,) = contents.skipped
    assert item.source == str(short.path) and "fewer than min_episode_steps=8" in item.reason
    info = build_cache([good.path, short.path], make_config(), tmp_path / "cache")
    assert info.n_episodes == 1
    assert info.skipped == [{"source": str(short.path), "reason": item.reason}]


def test_only_short_episodes_is_an_error_and_builds_nothing(make_bag, tmp_path):
    short = make_bag("short", duration_s=0.8)
    with pytest.raises(CacheError, match=r"no usable episode.*fewer than"):
        build_cache([short.path], make_config(), tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short"]


def _skipped_joint_message(make_bag, fault: str):
    """Reads a bag whose joint message picked at grid step 5 is made bad by make_bag's `fault`
    option; asserts that it is the one skipped item (on /joint_states), that step 5 keeps the
    previous message's sample and every other step the clean bag's. Returns (contents, the
    skipped item, the episode)."""
    clean = make_bag("clean")
    (ep,) = read_bag(clean.path, make_config()).episodes
    picked = int(newest(clean.joint_header_ns, ep.times_ns[5:6])[0])
    truth = make_bag(fault, **{fault: (picked,)})
    contents = read_bag(truth.path, make_config())
    (bad,) = contents.episodes
    (item,) = contents.skipped
    assert item.source == f"{truth.path} topic /joint_states"
    np.testing.assert_allclose(
        bad.state[5], joint_positions(int(truth.joint_header_ns[picked - 1])), atol=1e-6
    )
    np.testing.assert_array_equal(np.delete(bad.state, 5, 0), np.delete(ep.state, 5, 0))
    return contents, item, bad


def test_nan_joint_state_is_skipped_counted_and_the_previous_sample_used(make_bag):
    _, item, bad = _skipped_joint_message(make_bag, "nan_joint_messages")
    assert item.reason == "1 message(s) skipped: NaN/inf in a selected joint position"
    assert np.all(np.isfinite(bad.state))


def test_joint_state_with_a_duplicate_name_is_skipped_never_last_wins(make_bag):
    """A driver that repeats a joint (with 0.0) in one JointState: the message is skipped and
    counted with the joint named in the ingest summary; the grid step keeps the previous
    sample (the reader used to keep the last entry: 0.0, silently)."""
    contents, item, _ = _skipped_joint_message(make_bag, "duplicate_joint_messages")
    assert item.reason == (
        f"1 message(s) skipped: duplicate joint name(s) ['{JOINTS[1]}'] in one JointState"
    )
    assert contents.summary["skipped_messages"] == {
        "/joint_states": {f"duplicate joint name(s) ['{JOINTS[1]}'] in one JointState": 1}
    }


def test_bad_bag_never_replaces_a_good_cache(make_bag, tmp_path):
    good = make_bag("good")
    bad = make_bag("bad", storage="sqlite3", seed=2)
    truncate(bad.path)
    cache_dir = tmp_path / "cache"
    ensure_cache([good.path], make_config(), cache_dir)
    before = {p.name: p.read_bytes() for p in cache_dir.iterdir()}
    for build in (ensure_cache, build_cache):
        with pytest.raises(BagReadError, match=str(bad.path)):
            build([good.path, bad.path], make_config(), cache_dir)
        assert {p.name: p.read_bytes() for p in cache_dir.iterdir()} == before
    # No temporary folder is left behind, and the old cache still opens.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "cache", "good"]
    assert open_cache(cache_dir).n_episodes == 1


def test_interrupted_swap_is_recovered(make_bag, tmp_path):
    good = make_bag("good")
    cache_dir = tmp_path / "cache"
    build_cache([good.path], make_config(), cache_dir)
    # A crash between the two renames (of a swap without RENAME_EXCHANGE) leaves only the
    # old cache, set aside by a process that is gone.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".cache.old-{dead.pid}-0123abcd"
    os.replace(cache_dir, aside)
    assert open_cache(cache_dir).n_episodes == 1
    assert not aside.exists()


def test_a_folder_that_is_not_a_cache_is_never_replaced(make_bag, tmp_path):
    good = make_bag("good")
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(CacheError, match="not a dataset cache"):
        build_cache([good.path], make_config(), precious)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    shutil.rmtree(precious)


def test_header_stamps_on_another_clock_than_record_times(make_bag):
    # Float64MultiArray has no header, so it is timed by record time; the sensors' stamps are
    # 5 s away from their record times (e.g. sim time recorded against the wall clock).
    truth = make_bag(
        command_type="Float64MultiArray", joint_latency_ns=5 * 10**9, camera_latency_ns=5 * 10**9
    )
    with pytest.raises(BagReadError, match=r"differ from the record times by -5\.0 s"):
        read_bag(truth.path, make_config(truth.spec))
    # Same clock (the default 1-8 ms latencies): fine.
    ok = make_bag("same_clock", command_type="Float64MultiArray")
    assert len(read_bag(ok.path, make_config(ok.spec)).episodes) == 1
