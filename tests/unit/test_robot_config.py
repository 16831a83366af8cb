"""dp-config: a starter training config from the first bags of a new robot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.train.config import (
    load_run_config,
    policy_preset,
    policy_presets,
    run_config_from_dict,
)
from diffusion_policy_node.train.cost import machine_plan, steps_for_budget
from diffusion_policy_node.train.robot_config import cdr_stamp_ns, main
from diffusion_policy_node.train.trainer import Trainer

from .data_fixtures import (
    CAMERA,
    EXTRA_JOINT,
    GRIPPER_TOPIC,
    JOINT_TOPIC,
    JOINTS,
    JT_TOPIC,
    TYPESTORE,
    BagSpec,
    write_bag,
)

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps-per-s", "5"]  # plan with a given rate instead of measuring here


def test_config_from_an_arm_trajectory_and_a_gripper_array(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bags = [write_bag(tmp_path / f"bag{i}", BagSpec(gripper_hz=5.0, seed=i)) for i in range(2)]
    out = tmp_path / "cfg" / "my_robot.yaml"
    assert main([str(tmp_path), "--out", str(out), *FAST]) == 0
    text = out.read_text()
    assert "check that this is the controller's joint order" in text
    doc = yaml.safe_load(text)
    data = doc["data"]
    assert data["camera_topics"] == [CAMERA]
    assert data["joint_state_topic"] == JOINT_TOPIC
    assert sorted(data["joint_names"]) == sorted([*JOINTS, EXTRA_JOINT])
    groups = {g["name"]: g for g in data["action_groups"]}
    assert set(groups) == {"arm", "gripper"}
    assert groups["arm"]["topic"] == JT_TOPIC and groups["arm"]["type"] == "JointTrajectory"
    assert groups["arm"]["joints"] == list(reversed(JOINTS))  # the trajectory's own order
    assert groups["gripper"] == {
        "name": "gripper",
        "joints": [EXTRA_JOINT],
        "topic": GRIPPER_TOPIC,
        "type": "Float64MultiArray",
        "source": "command",
    }
    assert data["dt"] == pytest.approx(0.1)  # the 10 Hz arm commands (faster than 5 Hz)
    # it trains as is: dp-train's config and the bag reader accept it
    run = run_config_from_dict(doc)
    assert run.policy.action_dim == 5
    (ep,) = read_bag(bags[0].path, run.data).episodes
    assert ep.action.shape[1] == 5 and np.all(np.isfinite(ep.action))
    assert "wrote" in capsys.readouterr().err


def test_an_observed_joint_nothing_commands_stays_in_the_state_and_trains(tmp_path: Path):
    # A JTC arm and an extra joint in the JointState that no recorded topic commands.
    write_bag(tmp_path / "bag", BagSpec())
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bag"), "--out", str(out), *FAST]) == 0
    data = yaml.safe_load(out.read_text())["data"]
    assert [g["name"] for g in data["action_groups"]] == ["arm"]
    assert EXTRA_JOINT in data["joint_names"]
    assert "no recorded topic commands them: state only" in out.read_text()
    run = load_run_config(out)  # dp-train accepts it as written
    assert run.policy.state_dim == 5 and run.policy.action_dim == 4


def test_without_command_topics_every_joint_is_a_next_state_action(tmp_path: Path):
    write_bag(tmp_path / "bag", BagSpec(command_type=None))
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bag"), "--out", str(out), *FAST]) == 0
    (group,) = yaml.safe_load(out.read_text())["data"]["action_groups"]
    assert group["source"] == "next_state" and EXTRA_JOINT in group["joints"]
    assert load_run_config(out).policy.action_dim == 5


def test_bags_without_a_camera_are_refused_naming_what_they_have(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_bag(tmp_path / "bag", BagSpec(cameras=()))
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "x.yaml"), *FAST]) == 1
    err = capsys.readouterr().err
    assert "no sensor_msgs/Image or CompressedImage topic" in err and JOINT_TOPIC in err
    assert not (tmp_path / "x.yaml").exists()


def test_an_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", BagSpec())
    out = tmp_path / "robot.yaml"
    out.write_text("mine\n")
    assert main([str(tmp_path / "bag"), "--out", str(out)]) == 2
    assert out.read_text() == "mine\n"


# Every kind of bag the fixtures write: dp-config's file trains as written.
FIXTURES = {
    "jtc_arm_extra_joint": BagSpec(),
    "jtc_arm_gripper_array": BagSpec(gripper_hz=5.0),
    "array_commands_two_bgr_cameras": BagSpec(
        command_type="Float64MultiArray", encoding="bgr8", cameras=("/cam/a", "/cam/b")
    ),
    "no_commands": BagSpec(command_type=None),
    "compressed_camera": BagSpec(encoding="jpeg"),
    "sqlite3": BagSpec(storage="sqlite3"),
    "marker_topic": BagSpec(marker_times_s=(1.0,)),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_every_generated_config_trains_without_edits(tmp_path: Path, name: str) -> None:
    spec = FIXTURES[name]
    spec.duration_s = 3.0
    write_bag(tmp_path / "bags" / "a", spec)
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bags"), "--out", str(out), *FAST]) == 0
    run = load_run_config(out)
    result = Trainer(run, [tmp_path / "bags"], tmp_path / "run", progress=False).fit(stop_after=1)
    assert result.step == 1 and np.isfinite(result.losses[-1][1])


def test_presets_come_from_config_policy_only(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", BagSpec())
    for preset in sorted(policy_presets()):
        out = tmp_path / f"{preset}.yaml"
        assert main([str(tmp_path / "bag"), "--out", str(out), "--preset", preset, *FAST]) == 0
        policy = yaml.safe_load(out.read_text())["policy"]
        assert policy == {"preset": preset}
        fields = load_run_config(out).policy.to_dict()
        for key, value in policy_preset(preset).items():
            assert fields[key] == (list(value) if isinstance(value, tuple) else value), key
    # The training recipes name a preset instead of repeating its fields.
    for recipe in sorted((REPO / "config" / "robots").glob("*/train*.yaml")):
        policy = yaml.safe_load(recipe.read_text())["policy"]
        assert set(policy) == {"preset"} and policy["preset"] in policy_presets(), recipe


def test_train_section_fits_the_budget_on_this_machine(tmp_path: Path, capsys) -> None:
    write_bag(tmp_path / "bag", BagSpec())
    out = tmp_path / "robot.yaml"
    args = [str(tmp_path / "bag"), "--out", str(out), "--steps-per-s", "5", "--minutes", "30"]
    assert main(args) == 0
    train = yaml.safe_load(out.read_text())["train"]
    plan = machine_plan()
    assert train["steps"] == steps_for_budget(5.0, 30) == 9000
    assert train["torch_threads"] == plan.torch_threads == max(1, min(plan.cores // 2, 8))
    assert train["batch_size"] == plan.batch_size and train["device"] == plan.device
    err = capsys.readouterr().err
    assert "expected 5.00 training steps/s" in err and "9000 steps, about 30 min" in err
    assert machine_plan(cores=2, cuda=False).torch_threads == 1  # never 2 on 2 shared cores


def _bunch_record_times(src: Path, dst: Path, period_ns: int) -> None:
    """Rewrite `src` with every record time moved up to the next multiple of `period_ns` (a
    recorder that writes in bursts); header stamps unchanged."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    with Reader(src) as reader, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as out:
        conns = {
            c.id: out.add_connection(c.topic, c.msgtype, typestore=TYPESTORE)
            for c in reader.connections
        }
        for conn, record_ns, raw in reader.messages():
            out.write(conns[conn.id], -(-record_ns // period_ns) * period_ns, raw)


def test_rates_are_message_counts_over_header_time(tmp_path: Path) -> None:
    write_bag(tmp_path / "src", BagSpec(joint_hz=100.0, duration_s=3.0))
    _bunch_record_times(tmp_path / "src", tmp_path / "bag", 60_000_000)
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bag"), "--out", str(out), *FAST]) == 0
    text = out.read_text()
    assert "joint_state_topic: /joint_states   # 100.0 Hz" in text
    assert "Image rgb8 32x32, 30.0 Hz" in text
    assert yaml.safe_load(text)["data"]["dt"] == pytest.approx(0.1)


def test_cdr_stamp_is_read_without_deserializing() -> None:
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=12, nanosec=345)
    msg = T["sensor_msgs/msg/JointState"](
        header=T["std_msgs/msg/Header"](stamp=stamp, frame_id="base"),
        name=["a"], position=np.zeros(1), velocity=np.zeros(0), effort=np.zeros(0),
    )  # fmt: skip
    raw = bytes(TYPESTORE.serialize_cdr(msg, "sensor_msgs/msg/JointState"))
    assert cdr_stamp_ns(raw) == 12_000_000_345
    assert cdr_stamp_ns(raw[:6]) == 0


def test_a_duplicated_joint_name_is_refused(tmp_path: Path, capsys) -> None:
    order = [JOINTS[0], *JOINTS, EXTRA_JOINT]  # the first joint twice in every message
    write_bag(tmp_path / "bag", BagSpec(joint_order=order))
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bag"), "--out", str(out), *FAST]) == 1
    err = capsys.readouterr().err
    assert f"joint(s) ['{JOINTS[0]}'] appear more than once" in err and JOINT_TOPIC in err
    assert not out.exists()
