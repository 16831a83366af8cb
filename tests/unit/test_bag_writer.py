"""data.bag_writer (raw CDR into rosbag2, mcap and sqlite3) and dp-collect's bag bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from diffusion_policy_node.data.bag_writer import BagWriter, BagWriterError, msgtype_dependencies
from diffusion_policy_node.eval import collect

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
CUSTOM = "my_pkg/msg/Probe"
CUSTOM_DEF = "std_msgs/Header header\nfloat64[] values\nmy_pkg/Inner[2] inner\n"
INNER = "my_pkg/msg/Inner"
INNER_DEF = "int32 code\nstring label\n"


def joint_state_cdr(k: int) -> bytes:
    stamp = T["builtin_interfaces/msg/Time"](sec=k, nanosec=7)
    msg = T["sensor_msgs/msg/JointState"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="base"),
        name=["a", "b"],
        position=np.array([0.5 * k, -1.0]),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(STORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_cdr_round_trip_with_definitions(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    custom = get_typestore(Stores.ROS2_JAZZY)
    from rosbags.typesys import get_types_from_msg

    custom.register(
        {**get_types_from_msg(CUSTOM_DEF, CUSTOM), **get_types_from_msg(INNER_DEF, INNER)}
    )
    inner = [custom.types[INNER](code=c, label=f"l{c}") for c in (3, 4)]
    probe = custom.types[CUSTOM](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="x"
        ),
        values=np.array([1.5, 2.5]),
        inner=inner,
    )
    probe_cdr = bytes(custom.serialize_cdr(probe, CUSTOM))
    with BagWriter(path, storage=storage, definitions={CUSTOM: CUSTOM_DEF, INNER: INNER_DEF}) as w:
        w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
        w.add_topic("/probe", CUSTOM)
        for k in range(5):
            w.write("/joint_states", 1_000 + k, joint_state_cdr(k))
        w.write("/probe", 1_002, memoryview(probe_cdr))
        assert w.message_counts == {"/joint_states": 5, "/probe": 1}
    assert (w.first_ns, w.last_ns) == (1_000, 1_004)

    meta = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage and meta["message_count"] == 6
    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert conns["/probe"].msgtype == CUSTOM
        assert "float64[] values" in conns["/probe"].msgdef.data
        assert "Inner" in conns["/probe"].msgdef.data  # nested definition included
        assert "sensor_msgs/JointState" in conns["/joint_states"].msgdef.data or (
            "string[] name" in conns["/joint_states"].msgdef.data
        )
        got = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
    js = [
        (t, STORE.deserialize_cdr(raw, "sensor_msgs/msg/JointState"))
        for c, t, raw in got
        if c == "/joint_states"
    ]
    assert [t for t, _ in js] == [1_000, 1_001, 1_002, 1_003, 1_004]
    assert [m.position[0] for _, m in js] == [0.0, 0.5, 1.0, 1.5, 2.0]
    (raw_probe,) = [raw for c, _, raw in got if c == "/probe"]
    assert raw_probe == probe_cdr
    back = custom.deserialize_cdr(raw_probe, CUSTOM)
    assert [i.label for i in back.inner] == ["l3", "l4"] and back.values.tolist() == [1.5, 2.5]


def test_writer_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BagWriterError, match="storage='rosbag1'"):
        BagWriter(tmp_path / "a", storage="rosbag1")
    (tmp_path / "exists").mkdir()
    with pytest.raises(BagWriterError, match="already exists"):
        BagWriter(tmp_path / "exists")
    with BagWriter(tmp_path / "b") as w:
        with pytest.raises(BagWriterError, match=r"my_pkg/msg/Unknown.*definitions"):
            w.add_topic("/x", "my_pkg/msg/Unknown")
        with pytest.raises(BagWriterError, match="topic /y was not added"):
            w.write("/y", 1, b"")
        w.add_topic("/js", "sensor_msgs/msg/JointState")
        with pytest.raises(BagWriterError, match="already added"):
            w.add_topic("/js", "sensor_msgs/msg/JointState")
        with pytest.raises(BagWriterError, match="does not parse"):
            w.register_definitions({"my_pkg/msg/Bad": "int32"})
    with pytest.raises(BagWriterError, match="already closed"):
        w.write("/js", 1, joint_state_cdr(0))


def test_msgtype_dependencies() -> None:
    assert msgtype_dependencies(CUSTOM_DEF, CUSTOM) == [INNER, "std_msgs/msg/Header"]
    assert msgtype_dependencies(INNER_DEF, INNER) == []


def test_collect_keeps_only_successful_bags(tmp_path: Path) -> None:
    bags = tmp_path / "bags"
    for name in ("episode_0000", "episode_0001", "episode_0002"):
        (bags / name).mkdir(parents=True)
        (bags / name / "metadata.yaml").write_text("x")
    ok = {"bag": str(bags / "episode_0000"), "success": True}
    bad = {"bag": str(bags / "episode_0001"), "success": False}
    bad2 = {"bag": str(bags / "episode_0002"), "success": False}
    assert collect._settle_bag(ok, tmp_path, keep_failed=False) == ok["bag"]
    assert collect._settle_bag(bad, tmp_path, keep_failed=False) is None
    moved = collect._settle_bag(bad2, tmp_path, keep_failed=True)
    assert moved == str(tmp_path / "failed" / "episode_0002")
    assert sorted(p.name for p in bags.iterdir()) == ["episode_0000"]
    assert (Path(moved) / "metadata.yaml").is_file()


def test_collect_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert collect.main(["--episodes", "0", "--out", "x"]) == 2
    assert "--episodes 0" in capsys.readouterr().err
    args = collect.build_parser().parse_args(
        ["--episodes", "1", "--out", "x", "--real-time-factor", "-1"]
    )
    with pytest.raises(ValueError, match="real-time-factor"):
        collect._check_args(args)


def rewrite_with_bag_writer(src: Path, dst: Path) -> None:
    """Copy a bag's raw CDR messages through BagWriter (what the recorder node does)."""
    with Reader(src) as reader, BagWriter(dst) as writer:
        for conn in reader.connections:
            writer.add_topic(conn.topic, conn.msgtype)
        for conn, record_ns, raw in reader.messages():
            writer.write(conn.topic, record_ns, raw)


def chunk_crcs(mcap: Path) -> list[int]:
    from rosbags.rosbag2.storage_mcap import McapReader

    storage = McapReader(mcap)
    storage.open()
    try:
        offsets = [c.chunk_start_offset for c in storage.chunks]
    finally:
        storage.close()
    raw = mcap.read_bytes()
    assert offsets and all(raw[o] == 0x06 for o in offsets)  # chunk records
    return [int.from_bytes(raw[o + 33 : o + 37], "little") for o in offsets]


def test_mcap_chunks_carry_crcs_and_damage_is_reported(make_bag, tmp_path: Path) -> None:
    from diffusion_policy_node.data.bag_reader import BagReadError, read_bag

    from .data_fixtures import CAMERA, frame_color, make_config

    truth = make_bag(image_hw=(200, 200))  # ~120 kB frames: several 1 MB chunks
    bag = tmp_path / "recorded"
    rewrite_with_bag_writer(truth.path, bag)
    mcap = bag / "recorded.mcap"
    crcs = chunk_crcs(mcap)
    assert len(crcs) > 3 and all(crcs), crcs
    clean = read_bag(bag, make_config())
    assert clean.summary["chunk_crc"] == f"verified ({len(crcs)} mcap chunks)"
    # Zero 20 kB of pixel rows of frame 30 in the middle of the file.
    raw = bytearray(mcap.read_bytes())
    row = bytes(frame_color(0, 30)) * 200
    at = raw.find(row, len(raw) // 3)
    assert at > 0
    raw[at + 1000 : at + 21000] = bytes(20000)
    mcap.write_bytes(bytes(raw))
    with pytest.raises(BagReadError, match="chunk checksum \\(CRC\\) mismatch") as err:
        read_bag(bag, make_config())
    assert f"bag {bag}" in str(err.value) and "damaged" in str(err.value)
    # Without CRCs (rosbags' own writer) the same damage would pass unseen: say so.
    plain = read_bag(truth.path, make_config())
    assert plain.summary["chunk_crc"].startswith(f"absent in {len(crcs)} of {len(crcs)} mcap")
    assert CAMERA in plain.summary["clock_offsets_ms"]


def test_a_crc_less_mcap_warns_once_and_require_crc_refuses_it(
    make_bag, tmp_path: Path, caplog
) -> None:
    import logging

    from diffusion_policy_node.data.bag_reader import BagReadError, read_bag
    from diffusion_policy_node.train.cli import main as dp_train

    from .data_fixtures import make_config

    truth = make_bag()  # rosbags' own writer: chunks without CRCs
    with caplog.at_level(logging.WARNING):
        read_bag(truth.path, make_config())
    warnings = [r for r in caplog.records if "chunk CRCs absent" in r.getMessage()]
    assert len(warnings) == 1 and str(truth.path) in warnings[0].getMessage()
    with pytest.raises(BagReadError, match=r"require_crc .* refuses it") as err:
        read_bag(truth.path, make_config(require_crc=True))
    assert f"bag {truth.path}" in str(err.value)
    # Written with chunk CRCs (recorder_node's writer): read without a warning, accepted.
    bag = tmp_path / "recorded"
    rewrite_with_bag_writer(truth.path, bag)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert read_bag(bag, make_config(require_crc=True)).episodes
    assert not [r for r in caplog.records if "chunk CRCs" in r.getMessage()]
    # dp-train --require-crc: exit 2 with the reason, nothing trained.
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump({"policy": {"preset": "demo"}, "data": make_config().to_dict()})
    )
    out = tmp_path / "run"
    rc = dp_train(["--config", str(config), "--data", str(truth.path), "--out", str(out),
                   "--require-crc", "--quiet"])  # fmt: skip
    assert rc == 2 and not out.exists()
