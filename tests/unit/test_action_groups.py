"""Action groups (arm + gripper on their own controllers): the type, the data path that
concatenates them, the checkpoint that records them, and the node settings that split them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diffusion_policy_node.action_groups import (
    ActionGroup,
    concat,
    parse_groups,
    split,
    trajectory_lead,
)
from diffusion_policy_node.data.bag_reader import BagReadError, read_bag
from diffusion_policy_node.data.config import DataConfig
from diffusion_policy_node.policy.checkpoint import read_config
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.runtime.settings import PolicyNodeParams, resolve_settings
from diffusion_policy_node.train.config import run_config_from_dict

from .data_fixtures import (
    EXTRA_JOINT,
    GRIPPER_TOPIC,
    JOINTS,
    JT_TOPIC,
    BagSpec,
    expected_jt_action,
    gripper_target,
    make_config,
    newest,
    write_bag,
)

REPO = Path(__file__).resolve().parents[2]
ARM = {"name": "arm", "joints": list(JOINTS), "topic": JT_TOPIC}
GRIPPER = {
    "name": "gripper",
    "joints": [EXTRA_JOINT],
    "topic": GRIPPER_TOPIC,
    "type": "Float64MultiArray",
}


# ------------------------------------------------------------------------------ the type
def test_split_and_concat_are_inverse_in_group_order() -> None:
    groups = parse_groups([ARM, GRIPPER])
    actions = np.arange(2 * 3 * 5, dtype=float).reshape(2, 3, 5)
    parts = split(actions, groups)
    assert parts["arm"].shape == (2, 3, 4) and parts["gripper"].shape == (2, 3, 1)
    np.testing.assert_array_equal(parts["gripper"][..., 0], actions[..., 4])
    np.testing.assert_array_equal(concat(parts, groups), actions)
    with pytest.raises(ValueError, match="5 joints"):
        split(actions[..., :4], groups)
    with pytest.raises(ValueError, match="gripper"):
        concat({"arm": parts["arm"]}, groups)


@pytest.mark.parametrize(
    ("groups", "match"),
    [
        ([], "at least one"),
        ([ARM, {**GRIPPER, "name": "arm"}], "duplicate group name"),
        ([ARM, {**GRIPPER, "topic": JT_TOPIC}], "several groups publish"),
        ([ARM, {**GRIPPER, "joints": [JOINTS[0]]}], f"joint '{JOINTS[0]}' is in group 'arm'"),
        ([{**ARM, "type": "GripperCommand"}], "type"),
        ([{**ARM, "source": "recorded"}], "source"),
        ([{**ARM, "topic": "arm/jt"}], "fully qualified"),
        ([{"name": "arm", "joints": ["a"]}], r"missing field\(s\) \['topic'\]"),
        ([{**ARM, "rate": 10}], "unknown field"),
    ],
)
def test_bad_groups_are_named(groups: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_groups(groups)


def test_trajectory_groups_must_agree_on_the_action_time() -> None:
    dt = 0.1
    recorded = ActionGroup("arm", ("a",), "/arm")
    from_state = ActionGroup("gripper", ("g",), "/grip", source="next_state")
    stream = ActionGroup("gripper", ("g",), "/grip", type="Float64MultiArray")
    assert trajectory_lead((recorded, stream), dt) == pytest.approx(dt)
    assert trajectory_lead((stream,), dt) == 0.0
    with pytest.raises(ValueError, match="different action times"):
        trajectory_lead((recorded, from_state), dt)


# ------------------------------------------------------------------------------ data path
def test_a_commanded_joint_must_be_observed() -> None:
    with pytest.raises(ValueError, match=r"commands joint\(s\) \['gripper_finger'\].*observed"):
        DataConfig(joint_names=list(JOINTS), action_groups=[ARM, GRIPPER])


def test_groups_and_single_controller_fields_are_exclusive() -> None:
    with pytest.raises(ValueError, match="remove the single-controller fields"):
        DataConfig(
            joint_names=[*JOINTS, EXTRA_JOINT],
            command_topic="/other/joint_trajectory",
            action_groups=[ARM, GRIPPER],
        )


def _grouped_config(spec: BagSpec, groups: list) -> DataConfig:
    return make_config(
        spec,
        joint_names=[*JOINTS, EXTRA_JOINT],
        action_groups=groups,
        command_topic=JT_TOPIC,
        action_source="command",
        command_type="JointTrajectory",
        timestamp_source="record",
    )


def test_arm_trajectory_and_gripper_array_are_concatenated(tmp_path: Path) -> None:
    spec = BagSpec(gripper_hz=5.0, camera_latency_ns=0, joint_latency_ns=0, command_latency_ns=0)
    truth = write_bag(tmp_path / "bag", spec)
    config = _grouped_config(spec, [ARM, GRIPPER])
    (ep,) = read_bag(truth.path, config).episodes
    assert ep.state.shape[1] == 5 and ep.action.shape[1] == 5
    grid = ep.times_ns
    arm = expected_jt_action(truth, grid, config.dt_ns, use_header=False)
    np.testing.assert_allclose(ep.action[:, :4], arm, atol=1e-5)
    idx = newest(truth.gripper_header_ns, grid)
    np.testing.assert_allclose(ep.action[:, 4], [gripper_target(int(m)) for m in idx], atol=1e-6)


def test_a_gripper_without_recorded_commands_uses_its_next_state(tmp_path: Path) -> None:
    spec = BagSpec()
    truth = write_bag(tmp_path / "bag", spec)
    config = _grouped_config(spec, [ARM, {**GRIPPER, "source": "next_state"}])
    (ep,) = read_bag(truth.path, config).episodes
    np.testing.assert_allclose(ep.action[:, 4], -1.0)  # the fixture's gripper joint stays -1
    np.testing.assert_allclose(ep.action[:-1, 4], ep.state[1:, 4])


def test_a_gripper_topic_missing_from_the_bag_is_named(tmp_path: Path) -> None:
    spec = BagSpec()  # no gripper commands recorded
    truth = write_bag(tmp_path / "bag", spec)
    with pytest.raises(
        BagReadError, match=r"/gripper_controller/commands.*action_groups\[gripper"
    ):
        read_bag(truth.path, _grouped_config(spec, [ARM, GRIPPER]))


def test_a_trajectory_without_the_gripper_joint_points_to_its_own_group(tmp_path: Path) -> None:
    spec = BagSpec()
    truth = write_bag(tmp_path / "bag", spec)
    arm_and_gripper = {**ARM, "joints": [*JOINTS, EXTRA_JOINT]}
    with pytest.raises(BagReadError, match=r"\['gripper_finger'\] missing.*its own action group"):
        read_bag(truth.path, _grouped_config(spec, [arm_and_gripper]))


# ------------------------------------------------------------------------------ checkpoint
def _train_doc(groups: list) -> dict:
    return {
        "policy": {"down_dims": [16, 32], "crop_shape": None, "encoder_width": 16},
        "data": {
            "camera_topics": ["/cam"],
            "image_size": [16, 16],
            "joint_names": [*JOINTS, EXTRA_JOINT],
            "horizon": 8,
            "n_action_steps": 4,
            "action_groups": groups,
        },
    }


def test_dp_train_records_the_groups_and_the_trajectory_lead() -> None:
    run = run_config_from_dict(_train_doc([ARM, GRIPPER]))
    policy = run.policy
    assert policy.state_dim == 5 and policy.action_dim == 5
    assert [g.name for g in policy.groups] == ["arm", "gripper"]
    assert policy.action_lead == pytest.approx(run.data.dt)  # the arm's recorded trajectory
    again = PolicyConfig.from_dict(policy.to_dict())
    assert again.groups == policy.groups
    with pytest.raises(ValueError, match="different action times"):
        run_config_from_dict(
            _train_doc([ARM, {**GRIPPER, "type": "JointTrajectory", "source": "next_state"}])
        )


def test_a_checkpoint_from_before_groups_gets_one_group_on_its_recorded_topic() -> None:
    config, meta = read_config(REPO / "models" / "sim_arm_diffusion")
    (group,) = config.groups
    assert group.joints == tuple(config.joint_names)
    assert group.topic == meta["data"]["command_topic"]
    assert group.type == meta["data"]["command_type"]


# ------------------------------------------------------------------------------ node settings
def _grouped_policy() -> PolicyConfig:
    return run_config_from_dict(_train_doc([ARM, GRIPPER])).policy


def test_the_node_publishes_each_group_on_its_recorded_topic_by_default() -> None:
    s = resolve_settings(PolicyNodeParams(checkpoint="/x"), _grouped_policy())
    assert s.output_topics == (JT_TOPIC, GRIPPER_TOPIC)
    assert s.output_mode == "mixed" and s.has_trajectory and s.has_stream
    assert s.action_joints == (*JOINTS, EXTRA_JOINT)
    over = resolve_settings(
        PolicyNodeParams(checkpoint="/x", output_topics=("/a/jt", "/g/cmd")), _grouped_policy()
    )
    assert over.output_topics == ("/a/jt", "/g/cmd")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(output_topics=("/only_one",)), "output_topics.*one topic per action group"),
        (dict(output_topic="/out"), "output_topic.*2 action groups"),
        (dict(output_mode="chunk"), "output_mode.*set output_topics"),
        (dict(output_topics=("/a", "relative")), "output_topics"),
        (dict(joint_upper_limits=(1.0,) * 4), "needs 5 values"),
    ],
)
def test_group_parameters_that_do_not_fit_are_named(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        resolve_settings(PolicyNodeParams(checkpoint="/x", **params), _grouped_policy())
