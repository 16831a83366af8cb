"""dp-config: a starter training config from the first bags of a new robot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.train.config import run_config_from_dict
from diffusion_policy_node.train.robot_config import main

from .data_fixtures import (
    CAMERA,
    EXTRA_JOINT,
    GRIPPER_TOPIC,
    JOINT_TOPIC,
    JOINTS,
    JT_TOPIC,
    BagSpec,
    write_bag,
)


def test_config_from_an_arm_trajectory_and_a_gripper_array(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bags = [write_bag(tmp_path / f"bag{i}", BagSpec(gripper_hz=5.0, seed=i)) for i in range(2)]
    out = tmp_path / "cfg" / "my_robot.yaml"
    assert main([str(tmp_path), "--out", str(out)]) == 0
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


def test_observed_joints_without_commands_get_a_next_state_group(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", BagSpec())  # the gripper joint is observed, never commanded
    out = tmp_path / "robot.yaml"
    assert main([str(tmp_path / "bag"), "--out", str(out)]) == 0
    groups = yaml.safe_load(out.read_text())["data"]["action_groups"]
    rest = [g for g in groups if g["source"] == "next_state"]
    assert len(rest) == 1 and rest[0]["joints"] == [EXTRA_JOINT]
    assert "no recorded topic commands them" in out.read_text()


def test_bags_without_a_camera_are_refused_naming_what_they_have(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_bag(tmp_path / "bag", BagSpec(cameras=()))
    assert main([str(tmp_path / "bag"), "--out", str(tmp_path / "x.yaml")]) == 1
    err = capsys.readouterr().err
    assert "no sensor_msgs/Image or CompressedImage topic" in err and JOINT_TOPIC in err
    assert not (tmp_path / "x.yaml").exists()


def test_an_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    write_bag(tmp_path / "bag", BagSpec())
    out = tmp_path / "robot.yaml"
    out.write_text("mine\n")
    assert main([str(tmp_path / "bag"), "--out", str(out)]) == 2
    assert out.read_text() == "mine\n"
