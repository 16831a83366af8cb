"""dp-replay: observation windows, per-joint errors against a step-by-step reference, errors."""

import json

import numpy as np
import pytest
import torch
import yaml

from diffusion_policy_node.data.bag_reader import read_bag
from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config, save_checkpoint
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import build_policy
from diffusion_policy_node.train.replay import main, observation_windows, replay
from tests.factories import tiny_checkpoint, tiny_config

from .data_fixtures import JOINTS, make_config


@pytest.fixture
def regression_checkpoint(make_bag, tmp_path):
    """A deterministic (regression) policy checkpoint whose meta says how to read the bag."""
    truth = make_bag("demo", storage="sqlite3", duration_s=2.5)
    data = make_config(truth.spec, image_size=(40, 40))
    config = tiny_config(
        JOINTS, data.camera_topics, policy_type="regression", horizon=8, n_action_steps=4,
        num_keypoints=4, num_inference_steps=10,
    )  # fmt: skip
    ranges = (-np.ones(4), np.full(4, 3.0))
    ckpt = tiny_checkpoint(
        tmp_path / "ckpt", config, state_range=ranges, action_range=ranges,
        meta={"data": data.to_dict()},
    )  # fmt: skip
    return ckpt, truth.path, data


def test_observation_windows_repeat_the_first_step(regression_checkpoint):
    _, bag, data = regression_checkpoint
    episode = read_bag(bag, data).episodes[0]
    obs = observation_windows(episode, np.array([0, 1, 5]), n_obs_steps=2)
    assert obs[OBS_IMAGES].shape == (3, 2, 1, 3, 40, 40) and obs[OBS_IMAGES].dtype == torch.uint8
    state = obs[OBS_STATE].numpy()
    np.testing.assert_array_equal(state[0], episode.state[[0, 0]])
    np.testing.assert_array_equal(state[2], episode.state[[4, 5]])
    np.testing.assert_array_equal(
        obs[OBS_IMAGES][1].numpy(), episode.images[[0, 1]].transpose(0, 1, 4, 2, 3)
    )


def test_errors_match_a_step_by_step_reference(regression_checkpoint, tmp_path):
    ckpt, bag, data = regression_checkpoint
    report = replay(ckpt, [bag], out=tmp_path / "out", device="cpu", batch_size=5)
    # Reference: one prediction per step from hand-built windows, compared where recorded.
    policy = load_checkpoint(ckpt)
    episode = read_bag(bag, data).episodes[0]
    T = len(episode)
    diffs = []
    for k in range(T):
        idx = [max(k - 1, 0), k]
        obs = {
            OBS_IMAGES: episode.images[idx].transpose(0, 1, 4, 2, 3)[None],
            OBS_STATE: episode.state[idx][None],
        }
        chunk = policy.predict_action_chunk(obs)[0].numpy()
        for j in range(4):
            if k + j < T:
                diffs.append(chunk[1 + j] - episode.action[k + j])
    diffs = np.array(diffs)
    assert report.compared == len(diffs) == 4 * T - 6 and report.steps == T
    for j, name in enumerate(JOINTS):
        assert report.per_joint[name]["mae"] == pytest.approx(np.abs(diffs[:, j]).mean(), 1e-4)
        rmse = np.sqrt(np.square(diffs[:, j]).mean())
        assert report.per_joint[name]["rmse"] == pytest.approx(rmse, 1e-4)
    assert report.mae == pytest.approx(np.abs(diffs).mean(), 1e-4)
    assert (tmp_path / "out" / "replay.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "out" / "replay.json").read_text())
    assert saved["per_joint"] == report.per_joint and saved["sampler"] == "ddim x10"


def test_missing_or_disagreeing_data_settings_are_named(regression_checkpoint, tmp_path, capsys):
    ckpt, bag, data = regression_checkpoint
    policy_only = save_checkpoint(build_policy(read_config(ckpt)[0]), tmp_path / "bare")
    with pytest.raises(ValueError, match=r"no meta\.data.*--data-config"):
        replay(policy_only, [bag], out=tmp_path / "o", device="cpu")
    other = tmp_path / "data.yaml"
    swapped = {**data.to_dict(), "joint_names": list(reversed(JOINTS))}
    other.write_text(yaml.safe_dump({"data": swapped}))
    with pytest.raises(
        ValueError, match=r"policy\.joint_names=.*disagrees with data\.joint_names"
    ):
        replay(ckpt, [bag], out=tmp_path / "o", device="cpu", data_config=other)
    assert main(["--checkpoint", str(tmp_path / "nope"), "--data", str(bag)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_node_targets_follow_the_trajectory_controller():
    from diffusion_policy_node.action_groups import ActionGroup
    from diffusion_policy_node.train.replay import NodeCommand, node_targets

    group = ActionGroup("arm", ("a", "b"), "/arm/joint_trajectory")
    s = 10**9
    cmds = [
        # received at 1.0 s, starts at 1.0 s: 0 -> (1, 2) at +1 s
        NodeCommand(s, s, np.array([1.0]), np.array([[1.0, 2.0]])),
        # received at 1.5 s, starts at 1.6 s: from the desired (0.5, 1.0) at receipt (as JTC)
        # to (3, 3) at 2.6 s
        NodeCommand(3 * s // 2, 16 * s // 10, np.array([1.0]), np.array([[3.0, 3.0]])),
    ]
    times = np.array([s // 2, s, 3 * s // 2, 21 * s // 10, 3 * s])
    out = node_targets(cmds, group, times, lambda t: np.zeros(2))
    assert np.all(np.isnan(out[0]))  # before the first command
    frac = 0.6 / 1.1  # 2.1 s on the 1.5 -> 2.6 s segment
    mid = [0.5 + frac * 2.5, 1.0 + frac * 2.0]
    np.testing.assert_allclose(out[1:], [[0, 0], [0.5, 1.0], mid, [3, 3]], atol=1e-9)


def test_node_targets_of_a_forward_controller_are_the_newest_command():
    from diffusion_policy_node.action_groups import ActionGroup
    from diffusion_policy_node.train.replay import NodeCommand, node_targets

    group = ActionGroup("g", ("f",), "/g/commands", "Float64MultiArray")
    cmds = [NodeCommand(t, None, np.zeros(0), np.array([[float(t)]])) for t in (10, 20)]
    out = node_targets(cmds, group, np.array([5, 10, 15, 25]), None)
    np.testing.assert_array_equal(out[:, 0], [np.nan, 10, 10, 20])


def test_action_errors_reject_an_empty_comparison():
    from diffusion_policy_node.train.replay import ActionErrors

    errors = ActionErrors(["a", "b"])
    with pytest.raises(ValueError, match="nothing was compared"):
        errors.per_joint()
    errors.add(np.array([[1.0, -2.0], [-1.0, 0.0]]))
    assert errors.per_joint() == {
        "a": {"mae": 1.0, "rmse": 1.0},
        "b": {"mae": 1.0, "rmse": 2**0.5},
    }
    assert errors.mae == 1.0 and errors.rmse == pytest.approx(np.sqrt(6 / 4))
