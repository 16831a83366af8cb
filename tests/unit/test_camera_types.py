"""Camera message types come from the recording, never from the topic name: the bag reader
reports each camera's type, dp-train records it in the checkpoint, the node settings and the
graph check use it; checkpoints without it fall back to the name rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.data.ingest_summary import recorded_camera_types
from diffusion_policy_node.eval.graph_requirements import (
    GraphRequirements,
    GraphSnapshot,
    missing_on_graph,
    requirements_of,
)
from diffusion_policy_node.policy.checkpoint import read_config
from diffusion_policy_node.policy.config import PolicyConfig, camera_types_of
from diffusion_policy_node.runtime.settings import PolicyNodeParams, resolve_settings
from diffusion_policy_node.train.config import run_config_from_dict
from diffusion_policy_node.train.trainer import Trainer
from tests.factories import tiny_run_doc

from .data_fixtures import JOINT_TOPIC, BagSpec, make_config, write_bag

IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
JPEG_TOPIC = "/camera/jpeg"  # a CompressedImage topic whose name does not say so


def test_policy_config_validates_camera_types() -> None:
    PolicyConfig(camera_topics=["/a", "/b"], camera_types=[IMAGE, COMPRESSED])
    with pytest.raises(ValueError, match=r"camera_types.*one type per camera topic"):
        PolicyConfig(camera_topics=["/a", "/b"], camera_types=[IMAGE])
    with pytest.raises(ValueError, match=r"'sensor_msgs/msg/Foo' is not one of"):
        PolicyConfig(camera_topics=["/a"], camera_types=["sensor_msgs/msg/Foo"])


def test_recorded_types_win_over_the_name_and_old_checkpoints_use_the_name() -> None:
    recorded = PolicyConfig(camera_topics=[JPEG_TOPIC, "/x/compressed"])
    assert camera_types_of(recorded) == [IMAGE, COMPRESSED]  # not recorded: the name rule
    recorded = recorded.replace(camera_types=[COMPRESSED, IMAGE])
    assert camera_types_of(recorded) == [COMPRESSED, IMAGE]
    config = PolicyConfig(
        camera_topics=[JPEG_TOPIC], camera_types=[COMPRESSED], joint_names=["a", "b", "c"]
    )
    s = resolve_settings(PolicyNodeParams(checkpoint="/x"), config)
    assert s.camera_types == (COMPRESSED,) and s.camera_types_recorded
    # remapped to another topic: the type stays the recorded one
    s = resolve_settings(PolicyNodeParams(checkpoint="/x", camera_topics=("/other",)), config)
    assert s.camera_types == (COMPRESSED,)
    old = config.replace(camera_types=[])
    s = resolve_settings(PolicyNodeParams(checkpoint="/x"), old)
    assert s.camera_types == (IMAGE,) and not s.camera_types_recorded


def test_bag_summary_reports_each_cameras_type(tmp_path: Path) -> None:
    spec = BagSpec(cameras=(JPEG_TOPIC,), encoding="jpeg", duration_s=1.5)
    bag = write_bag(tmp_path / "jpeg", spec).path
    summary = read_bag(bag, make_config(camera_topics=[JPEG_TOPIC])).summary
    assert summary["camera_types"] == {JPEG_TOPIC: COMPRESSED}


def test_recorded_camera_types_from_several_bags() -> None:
    a = {"bag": "a", "camera_types": {"/c": COMPRESSED}}
    b = {"bag": "b", "camera_types": {"/c": IMAGE}}
    assert recorded_camera_types([a, dict(a, bag="a2")], ["/c"]) == [COMPRESSED]
    with pytest.raises(ValueError, match=r"/c is .*CompressedImage in bag a but .*Image in bag b"):
        recorded_camera_types([a, b], ["/c"])
    assert recorded_camera_types([{"bag": "old"}], ["/c"]) == []  # summary before the field


def test_dp_train_records_the_bags_camera_type_in_the_checkpoint(tmp_path: Path) -> None:
    bags = []
    for i in range(2):
        spec = BagSpec(cameras=(JPEG_TOPIC,), encoding="jpeg", duration_s=2.0, seed=i)
        bags.append(write_bag(tmp_path / f"demo{i}", spec).path)
    doc = tiny_run_doc(
        [JPEG_TOPIC],
        tmp_path / "cache",
        policy={"encoder_width": 16},
        train={"steps": 2, "batch_size": 2, "torch_threads": 1, "val_fraction": 0.0,
               "checkpoint_every": 2},
    )  # fmt: skip
    out = tmp_path / "run"
    Trainer(run_config_from_dict(doc), bags, out, progress=False).fit()
    config, meta = read_config(out / "latest")
    assert config.camera_types == [COMPRESSED]
    req = requirements_of(config, meta)
    assert req.camera_types == (COMPRESSED,)
    ok = GraphSnapshot(publishers={JPEG_TOPIC: [COMPRESSED], JOINT_TOPIC: ["x"]})
    assert not [m for m in missing_on_graph(req, ok) if "camera" in m]
    wrong = GraphSnapshot(publishers={JPEG_TOPIC: [IMAGE]})
    assert f"camera topic {JPEG_TOPIC}: published as ['{IMAGE}'], not {COMPRESSED}" in (
        missing_on_graph(req, wrong)
    )
    assert GraphRequirements.from_json(req.to_json()) == req
