"""`dp-export lerobot BAGS --out DIR`, `dp-train --data DIR` (LeRobotDataset v2.1), LeRobot-free.

The exported folder is checked file by file against the cache dp-train builds from the same bags
(state and action bit for bit, PNG images lossless), read back into a cache that equals the
first, and trained on for a few steps. LeRobot itself reading it: bench/lerobot_dataset_check.py.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from diffusion_policy_node.data.cache import build_cache, open_cache
from diffusion_policy_node.data.config import DataConfig
from diffusion_policy_node.data.lerobot_dataset import LeRobotDatasetError
from diffusion_policy_node.interop.lerobot_cli import export_main
from diffusion_policy_node.train import cli as train_cli
from tests.factories import tiny_run_doc

from .data_fixtures import CAMERA, JOINTS, JT_TOPIC, BagSpec, write_bag

SECOND = "/wrist/image_raw"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_ds")
    bags = []
    for i, seconds in enumerate([2.0, 2.5]):
        spec = BagSpec(duration_s=seconds, cameras=(CAMERA, SECOND), seed=i)
        write_bag(root / f"demo{i}", spec)
        bags.append(root / f"demo{i}")
    doc = tiny_run_doc([CAMERA, SECOND], root / "train_cache", train={"steps": 3})
    doc["train"].update(batch_size=4, torch_threads=1, val_fraction=0.0, log_every=1)
    doc["train"].update(checkpoint_every=3)
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    config = DataConfig.from_dict(doc["data"])
    build_cache(bags, config, root / "cache")
    out = root / "ds"
    rc = export_main(["lerobot", *map(str, bags), "--config", str(config_path), "--out", str(out)])
    assert rc == 0
    return {"root": root, "bags": bags, "config": config, "path": config_path, "out": out}


def test_export_writes_lerobot_v21_with_the_cache_values(exported):
    out, cache = exported["out"], open_cache(exported["root"] / "cache")
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["fps"] == 10
    assert info["total_episodes"] == cache.n_episodes == 2
    assert info["total_frames"] == cache.n_steps and info["splits"] == {"train": "0:2"}
    cams = ["observation.images.camera", "observation.images.wrist"]
    feats = info["features"]
    assert list(feats)[:2] == cams
    assert feats[cams[0]] == {
        "dtype": "image",
        "shape": [40, 40, 3],
        "names": ["height", "width", "channels"],
    }
    assert feats["observation.state"]["names"] == JOINTS
    assert feats["action"] == {"dtype": "float32", "shape": [4], "names": JOINTS}
    episodes = [json.loads(x) for x in (out / "meta" / "episodes.jsonl").read_text().splitlines()]
    lengths = np.diff(np.r_[0, cache.episode_ends])
    assert [e["length"] for e in episodes] == lengths.tolist()
    robot = yaml.safe_load((out / "meta" / "ros_robot.yaml").read_text())
    assert robot["cameras"] == dict(zip(cams, [CAMERA, SECOND], strict=True))
    assert robot["state_joints"] == JOINTS and robot["action_lead"] == pytest.approx(0.1)
    assert robot["action_groups"][0]["topic"] == JT_TOPIC
    ros = json.loads((out / "meta" / "ros2.json").read_text())
    assert ros["data_config"] == exported["config"].to_dict()

    import cv2

    stats = [
        json.loads(x) for x in (out / "meta" / "episodes_stats.jsonl").read_text().split("\n") if x
    ]
    for e in range(cache.n_episodes):
        sl = cache.episode_slice(e)
        table = pq.read_table(out / f"data/chunk-000/episode_{e:06d}.parquet")
        assert table.num_rows == sl.stop - sl.start
        assert json.loads(table.schema.metadata[b"huggingface"])["info"]["features"][cams[0]] == {
            "_type": "Image"
        }
        state = np.array(table.column("observation.state").to_pylist(), np.float32)
        action = np.array(table.column("action").to_pylist(), np.float32)
        assert np.array_equal(state, cache.state[sl]) and np.array_equal(action, cache.action[sl])
        assert table.column("frame_index").to_pylist() == list(range(table.num_rows))
        assert table.column("index").to_pylist() == list(range(sl.start, sl.stop))
        assert table.column("episode_index").to_pylist() == [e] * table.num_rows
        ts = np.array(table.column("timestamp").to_pylist())
        np.testing.assert_allclose(ts, np.arange(table.num_rows) / 10, atol=1e-6)
        for c, key in enumerate(cams):
            for t, item in enumerate(table.column(key).to_pylist()):
                bgr = cv2.imdecode(np.frombuffer(item["bytes"], np.uint8), cv2.IMREAD_COLOR)
                assert np.array_equal(bgr[..., ::-1], cache.images[sl.start + t, c])
        st = stats[e]["stats"]
        assert stats[e]["episode_index"] == e
        np.testing.assert_allclose(st["action"]["max"], cache.action[sl].max(0), rtol=1e-6)
        assert np.array(st[cams[1]]["mean"]).shape == (3, 1, 1)


def test_exported_folder_reads_back_into_the_same_cache(exported, tmp_path):
    first = open_cache(exported["root"] / "cache")
    info = build_cache([exported["out"]], exported["config"], tmp_path / "again")
    again = open_cache(info.path)
    assert info.ingest[0]["format"] == "LeRobotDataset v2.1"
    for name in ("images", "state", "action", "episode_ends"):
        assert np.array_equal(getattr(again, name), getattr(first, name)), name


def test_reading_refuses_another_grid_or_camera_count(exported, tmp_path):
    config = exported["config"]
    with pytest.raises(LeRobotDatasetError, match=r"fps 10 but data\.dt is 0\.05"):
        build_cache(
            [exported["out"]], config.__class__(**{**config.to_dict(), "dt": 0.05}), tmp_path / "a"
        )
    one_cam = {**config.to_dict(), "camera_topics": ["/top/image_raw"]}
    with pytest.raises(LeRobotDatasetError, match=r"maps no image feature to camera topic"):
        build_cache([exported["out"]], DataConfig.from_dict(one_cam), tmp_path / "b")


def test_dp_train_trains_on_the_exported_folder(exported, tmp_path, capsys):
    out = tmp_path / "run"
    rc = train_cli.main(
        [
            "--config",
            str(exported["path"]),
            "--data",
            str(exported["out"]),
            "--out",
            str(out),
            "--set",
            f"train.cache_dir={tmp_path / 'cache'}",
            "--quiet",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3 and np.isfinite(summary["loss"])
    assert (out / "latest" / "model.safetensors").is_file()
    trained = open_cache(tmp_path / "cache")
    first = open_cache(exported["root"] / "cache")
    assert np.array_equal(trained.action, first.action)
    assert trained.meta["sources"][0]["path"] == str(Path(exported["out"]).resolve())


@pytest.mark.parametrize("codec", ["ffv1", "mp4v"])
def test_video_export_reads_back_within_the_codec_loss(exported, tmp_path, codec):
    out = tmp_path / "ds"
    argv = ["lerobot", *map(str, exported["bags"]), "--config", str(exported["path"])]
    assert export_main([*argv, "--out", str(out), "--video", codec]) == 0
    info = json.loads((out / "meta" / "info.json").read_text())
    key = "observation.images.wrist"
    assert info["features"][key]["dtype"] == "video"
    assert info["features"][key]["info"]["video.codec"] == {"ffv1": "ffv1", "mp4v": "mpeg4"}[codec]
    assert info["total_videos"] == 4 and info["video_path"].endswith(".mp4")
    assert (out / f"videos/chunk-000/{key}/episode_000001.mp4").is_file()
    table = pq.read_table(out / "data/chunk-000/episode_000000.parquet")
    assert key not in table.column_names
    first = open_cache(exported["root"] / "cache")
    again = open_cache(build_cache([out], exported["config"], tmp_path / "c").path)
    assert np.array_equal(again.state, first.state) and np.array_equal(again.action, first.action)
    diff = np.abs(again.images.astype(int) - first.images)
    if codec == "ffv1":
        assert diff.max() == 0
    else:  # lossy, small on these flat synthetic frames
        assert 0 < diff.max() <= 16 and diff.mean() < 4, (diff.max(), diff.mean())


def _to_v30(src: Path, dst: Path) -> None:
    """Re-pack a v2.1 folder in v3.0's layout: all episodes in one data file and one mp4 per
    camera, located by meta/episodes/chunk-000/file-000.parquet."""
    import shutil

    import cv2
    import pyarrow as pa

    info = json.loads((src / "meta" / "info.json").read_text())
    episodes = [json.loads(x) for x in (src / "meta" / "episodes.jsonl").read_text().splitlines()]
    videos = [k for k, f in info["features"].items() if f["dtype"] == "video"]
    info.update(
        codebase_version="v3.0",
        data_path="data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        video_path="videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
    )
    (dst / "meta" / "episodes" / "chunk-000").mkdir(parents=True)
    (dst / "data" / "chunk-000").mkdir(parents=True)
    (dst / "meta" / "info.json").write_text(json.dumps(info))
    shutil.copy(src / "meta" / "ros_robot.yaml", dst / "meta" / "ros_robot.yaml")
    tables = [
        pq.read_table(src / f"data/chunk-000/episode_{e['episode_index']:06d}.parquet")
        for e in episodes
    ]
    pq.write_table(pa.concat_tables(tables), dst / "data/chunk-000/file-000.parquet")
    rows, start = [], 0
    for ep in episodes:
        row = {"episode_index": ep["episode_index"], "length": ep["length"], "tasks": ep["tasks"]}
        for key in videos:
            row[f"videos/{key}/chunk_index"] = 0
            row[f"videos/{key}/file_index"] = 0
            row[f"videos/{key}/from_timestamp"] = start / info["fps"]
        rows.append(row)
        start += ep["length"]
    pq.write_table(pa.Table.from_pylist(rows), dst / "meta/episodes/chunk-000/file-000.parquet")
    for key in videos:
        path = dst / f"videos/{key}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True)
        h, w = info["features"][key]["shape"][:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), info["fps"], (w, h))
        for ep in episodes:
            cap = cv2.VideoCapture(
                str(src / f"videos/chunk-000/{key}/episode_{ep['episode_index']:06d}.mp4")
            )
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                writer.write(bgr)
        writer.release()


@pytest.mark.parametrize("video", [False, True])
def test_a_v30_folder_reads_into_the_same_cache(exported, tmp_path, video):
    src = exported["out"]
    if video:
        src = tmp_path / "v21"
        argv = ["lerobot", *map(str, exported["bags"]), "--config", str(exported["path"])]
        assert export_main([*argv, "--out", str(src), "--video", "ffv1"]) == 0
    _to_v30(src, tmp_path / "v30")
    first = open_cache(exported["root"] / "cache")
    info = build_cache([tmp_path / "v30"], exported["config"], tmp_path / "c")
    assert info.ingest[0]["format"] == "LeRobotDataset v3.0"
    again = open_cache(info.path)
    for name in ("images", "state", "action", "episode_ends"):
        assert np.array_equal(getattr(again, name), getattr(first, name)), name


def _copy_with_info(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    info = json.loads((dst / "meta" / "info.json").read_text())
    edit(info)
    (dst / "meta" / "info.json").write_text(json.dumps(info))
    return dst


def test_state_and_action_columns_are_taken_by_name(exported, tmp_path):
    def reverse_state_names(info):
        info["features"]["observation.state"]["names"] = JOINTS[::-1]

    folder = _copy_with_info(exported["out"], tmp_path / "ds", reverse_state_names)
    again = open_cache(build_cache([folder], exported["config"], tmp_path / "c").path)
    first = open_cache(exported["root"] / "cache")
    assert np.array_equal(again.state, first.state[:, ::-1])
    assert np.array_equal(again.action, first.action)

    def narrow_action(info):
        info["features"]["action"]["names"] = ["a", "b", "c"]

    folder = _copy_with_info(exported["out"], tmp_path / "ds2", narrow_action)
    with pytest.raises(LeRobotDatasetError, match=r"feature action: has 3 values"):
        build_cache([folder], exported["config"], tmp_path / "c2")


def test_export_refuses_a_non_empty_out_folder_before_reading_bags(exported, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    missing = tmp_path / "no_such_bag"
    argv = ["lerobot", str(missing), "--config", str(exported["path"])]
    assert export_main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert export_main([*argv, "--out", str(tmp_path / "new")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ("policy.eta=0.5", "SECTION one of data"),
        ("data.dt=[0.1", "not valid YAML"),
        ("data.dt=-1", "dt"),
    ],
)
def test_export_refuses_a_bad_set_before_reading_bags(exported, tmp_path, capsys, override, error):
    argv = ["lerobot", str(tmp_path / "no_such_bag"), "--config", str(exported["path"])]
    assert export_main([*argv, "--set", override, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert error in err and "not found" not in err
