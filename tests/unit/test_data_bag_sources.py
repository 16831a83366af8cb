"""Split bags, duplicates and metadata advice: one bag, or a clear error."""

import shutil

import numpy as np
import pytest
import yaml

from diffusion_policy_node.data.bag_reader import BagReadError, find_bags, read_bag
from diffusion_policy_node.data.cache import build_cache

from .data_fixtures import copy_messages, make_config, split_bag


def same_episode(a, b):
    for name in ("images", "state", "action", "times_ns"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("metadata", [False, True])
def test_a_split_recording_is_read_as_one_bag(make_bag, tmp_path, metadata):
    truth = make_bag(duration_s=3.0)
    (whole,) = read_bag(truth.path, make_config()).episodes
    rec = tmp_path / "rec"
    parts = split_bag(truth.path, rec, n_parts=3, metadata=metadata)
    bags = find_bags([tmp_path / "rec"])
    assert bags == ([rec] if metadata else [parts[0]])
    contents = read_bag(bags[0], make_config())
    (ep,) = contents.episodes
    same_episode(ep, whole)
    assert contents.summary["files"] == [str(p) for p in parts]
    # The folder itself, any part, or all the parts given as files: the same one bag.
    for arg in ([rec], [parts[1]], parts):
        (bag,) = find_bags(arg)
        same_episode(read_bag(bag, make_config()).episodes[0], whole)
    info = build_cache([rec], make_config(), tmp_path / "cache")
    assert (info.n_episodes, info.n_steps) == (1, len(whole))


def test_a_missing_part_is_named(make_bag, tmp_path):
    truth = make_bag(duration_s=3.0)
    parts = split_bag(truth.path, tmp_path / "rec", n_parts=3)
    parts[1].unlink()
    for call in (
        lambda: find_bags([tmp_path / "rec"]),
        lambda: read_bag(parts[0], make_config()),
    ):
        with pytest.raises(BagReadError, match=r"part\(s\) \[1\] \(rec_1\.mcap\) are missing"):
            call()


def test_parts_that_overlap_in_time_are_not_one_recording(make_bag, tmp_path):
    a, b = make_bag("a"), make_bag("b", seed=4)
    rec = tmp_path / "rec"
    rec.mkdir()
    shutil.copy(next(a.path.glob("*.mcap")), rec / "rec_0.mcap")
    shutil.copy(next(b.path.glob("*.mcap")), rec / "rec_1.mcap")
    with pytest.raises(BagReadError, match="overlap in time"):
        read_bag(find_bags([rec])[0], make_config())


def test_the_same_bag_twice_is_refused(make_bag, tmp_path):
    truth = make_bag()
    mcap = next(truth.path.glob("*.mcap"))
    copy = tmp_path / "copy"
    shutil.copytree(truth.path, copy)
    cases = {
        "given twice": [truth.path, truth.path],
        "is also part of bag": [truth.path, mcap],
        "identical to those of bag": [truth.path, copy],
    }
    for what, args in cases.items():
        with pytest.raises(BagReadError, match=what) as err:
            find_bags(args)
        assert str(truth.path) in str(err.value)
    with pytest.raises(BagReadError, match="given twice"):
        build_cache([truth.path, truth.path], make_config(), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    # A different recording is fine.
    other = make_bag("other", seed=3)
    assert find_bags([truth.path, other.path]) == [truth.path, other.path]


def edit_metadata(bag, change):
    meta = bag / "metadata.yaml"
    data = yaml.safe_load(meta.read_text())
    change(data["rosbag2_bagfile_information"])
    meta.write_text(yaml.safe_dump(data))


def set_serialization(info):
    info["topics_with_message_count"][0]["topic_metadata"]["serialization_format"] = "json"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("garbage", r"metadata\.yaml: not UTF-8 text \(byte 0xff at offset 40\)"),
        ("not_yaml", r"metadata\.yaml: not valid YAML at line 3"),
        ("schema", r"no rosbag2_bagfile_information mapping at the top \(found \['topics'\]\)"),
        ("version", r"field version: 10, newer than the rosbag2 metadata versions"),
        ("serialization", r"serialization format 'json' is not supported; only 'cdr'"),
        ("storage", r"field storage_identifier: 'rosbag_v1' is not supported"),
    ],
)
def test_metadata_problems_get_their_own_advice(make_bag, damage, expected):
    truth = make_bag()
    meta = truth.path / "metadata.yaml"
    if damage == "garbage":
        raw = bytearray(meta.read_bytes())
        raw[40:44] = b"\xff\xfe\x00\x9c"
        meta.write_bytes(bytes(raw))
    elif damage == "not_yaml":
        meta.write_text("rosbag2_bagfile_information:\n  version: [9\n")
    elif damage == "schema":
        meta.write_text(yaml.safe_dump({"topics": []}))
    elif damage == "version":
        edit_metadata(truth.path, lambda info: info.update(version=10))
    elif damage == "serialization":
        edit_metadata(truth.path, set_serialization)
    else:
        edit_metadata(truth.path, lambda info: info.update(storage_identifier="rosbag_v1"))
    with pytest.raises(BagReadError, match=expected) as err:
        read_bag(truth.path, make_config())
    msg = str(err.value)
    assert str(meta) in msg
    assert "truncated" not in msg and "re-record it, try" not in msg


def test_version_advice_points_at_the_storage_file_which_still_reads(make_bag):
    truth = make_bag()
    (ep,) = read_bag(truth.path, make_config()).episodes
    edit_metadata(truth.path, lambda info: info.update(version=10))
    with pytest.raises(BagReadError, match=r"pass the \.mcap file"):
        read_bag(truth.path, make_config())
    (again,) = read_bag(next(truth.path.glob("*.mcap")), make_config()).episodes
    same_episode(again, ep)


def test_a_bare_mcap_with_another_serialization_is_named(make_bag, tmp_path):
    truth = make_bag()
    out = tmp_path / "json_bag"
    copy_messages(truth.path, out)
    mcap = next(out.glob("*.mcap"))
    raw = mcap.read_bytes()
    assert raw.count(b"\x03\x00\x00\x00cdr") >= 3  # channel message encodings
    mcap.write_bytes(raw.replace(b"\x03\x00\x00\x00cdr", b"\x03\x00\x00\x00jsn"))
    with pytest.raises(BagReadError, match=r"serialization format 'jsn' is not supported") as err:
        read_bag(mcap, make_config())
    assert str(mcap) in str(err.value)
