"""Training config (sections, derivation, named errors), LR schedule, data order, resume state."""

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from diffusion_policy_node.train.config import (
    TrainConfig,
    apply_overrides,
    load_run_config,
    run_config_from_dict,
)
from diffusion_policy_node.train.data_order import StepBatchSampler, split_episodes
from diffusion_policy_node.train.state import (
    get_rng_state,
    load_train_state,
    optimizer_from_flat,
    optimizer_to_flat,
    save_train_state,
    set_rng_state,
)
from diffusion_policy_node.train.trainer import lr_lambda

REPO = Path(__file__).resolve().parents[2]
DATA = {
    "camera_topics": ["/cam/a", "/cam/b"],
    "image_size": [40, 48],
    "joint_names": ["j1", "j2", "j3", "j4"],
    "dt": 0.05,
    "n_obs_steps": 3,
    "horizon": 16,
    "n_action_steps": 6,
}
CROP = {"crop_shape": [36, 40]}


def test_presets_load_and_derive_from_data():
    for name in ("small", "paper"):
        run = load_run_config(REPO / "config" / "robots" / "sim_arm" / f"train_{name}.yaml")
        assert run.policy.camera_topics == run.data.camera_topics
        assert run.policy.joint_names == run.data.joint_names
        assert run.policy.state_dim == run.policy.action_dim == len(run.data.joint_names)
        assert run.train.lr == 1e-4 and run.train.betas == (0.95, 0.999)


def test_policy_fields_come_from_the_data_section():
    run = run_config_from_dict({"policy": {"crop_shape": [36, 40]}, "data": DATA})
    p = run.policy
    assert p.camera_topics == ["/cam/a", "/cam/b"] and p.image_size == (40, 48)
    assert (p.dt, p.n_obs_steps, p.horizon, p.n_action_steps) == (0.05, 3, 16, 6)
    assert p.state_dim == p.action_dim == 4 and p.joint_names == ["j1", "j2", "j3", "j4"]
    assert run.train == TrainConfig()
    # The action-time convention follows the action source (docs/design.md#action-time-convention).
    assert p.action_lead == 0.05  # the default: JointTrajectory commands, read at t + dt
    stream = {**DATA, "command_type": "Float64MultiArray"}
    assert run_config_from_dict({"policy": CROP, "data": stream}).policy.action_lead == 0.0
    nxt = {**DATA, "action_source": "next_state"}
    assert run_config_from_dict({"policy": CROP, "data": nxt}).policy.action_lead == 0.0
    # Given and equal is fine (tuple vs list, int vs float dt).
    run_config_from_dict({"policy": {**CROP, "image_size": (40, 48), "dt": 0.05}, "data": DATA})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", [96, 96]),
        ("camera_topics", ["/cam/a"]),
        ("joint_names", ["j1", "j2", "j4", "j3"]),
        ("dt", 0.1),
        ("n_obs_steps", 2),
        ("horizon", 8),
        ("n_action_steps", 4),
        ("state_dim", 3),
        ("action_dim", 5),
        ("action_lead", 0.0),
    ],
)
def test_disagreeing_policy_field_is_named(field, value):
    with pytest.raises(ValueError, match=rf"policy\.{field}="):
        run_config_from_dict({"policy": {**CROP, field: value}, "data": DATA})


@pytest.mark.parametrize(
    ("train", "field"),
    [
        ({"lr": -1.0}, "lr"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"betas": [1.2, 0.9]}, "betas"),
        ({"device": "gpu"}, "device"),
        ({"mixed_precision": "fp8"}, "mixed_precision"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"ema_max_decay": 1.0}, "ema_max_decay"),
        ({"num_workers": -1}, "num_workers"),
        ({"num_workers": 1.5}, "num_workers"),
        ({"warmup_steps": True}, "warmup_steps"),
    ],
)
def test_bad_train_values_are_named(train, field):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field}="):
        run_config_from_dict({"policy": CROP, "data": DATA, "train": train})


def test_structural_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['stepz'\]"):
        run_config_from_dict({"policy": CROP, "data": DATA, "train": {"stepz": 3}})
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['model'\]"):
        run_config_from_dict({"data": DATA, "model": {}})
    with pytest.raises(ValueError, match="missing the data: section"):
        run_config_from_dict({"policy": {}})
    with pytest.raises(ValueError, match=r"DataConfig\.dt="):
        run_config_from_dict({"data": {**DATA, "dt": -1}})
    with pytest.raises(ValueError, match=r"PolicyConfig\.down_dims="):
        run_config_from_dict({"data": DATA, "policy": {**CROP, "down_dims": [0]}})
    path = tmp_path / "bad.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ValueError, match=f"train config {path}: not valid YAML"):
        load_run_config(path)
    with pytest.raises(ValueError, match="cannot be read"):
        load_run_config(tmp_path / "missing.yaml")


def test_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"policy": CROP, "data": DATA, "train": {"steps": 5}}))
    run = load_run_config(path, ["train.steps=300", "train.betas=[0.9, 0.99]", "policy.eta=0.5"])
    assert run.train.steps == 300 and run.train.betas == (0.9, 0.99) and run.policy.eta == 0.5
    doc = {"data": {}}
    assert apply_overrides(doc, ["train.seed=3"]) == {"data": {}, "train": {"seed": 3}}
    assert doc == {"data": {}}  # not modified in place
    for bad in ("steps=3", "optim.lr=1", "train.=1", "train.lr"):
        with pytest.raises(ValueError, match=r"SECTION\.FIELD=VALUE"):
            apply_overrides({}, [bad])


def test_lr_schedule_golden_values():
    # Linear warm-up from 0, then a half cosine from 1 to 0 (diffusers' schedule).
    assert [lr_lambda(s, 10, 110, "cosine") for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert lr_lambda(60, 10, 110, "cosine") == pytest.approx(0.5)
    assert lr_lambda(35, 10, 110, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_lambda(110, 10, 110, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert lr_lambda(500, 10, 110, "constant") == 1.0
    assert lr_lambda(0, 0, 100, "cosine") == 1.0


def test_episode_split_is_deterministic_and_disjoint():
    train, val = split_episodes(10, 0.2, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(10))
    assert split_episodes(10, 0.2, seed=3) == (train, val)
    assert any(split_episodes(10, 0.2, seed=s)[1] != val for s in range(4, 10))
    assert split_episodes(2, 0.01, seed=0)[1] != []  # at least one when there are >= 2
    assert split_episodes(2, 0.9, seed=0)[0] != []  # always one left for training
    assert split_episodes(1, 0.5, seed=0) == ([0], [])
    assert split_episodes(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])


def test_data_order_is_a_function_of_seed_and_step():
    sampler = StepBatchSampler(n=23, batch_size=4, seed=7, start_step=0, stop_step=30)
    batches = list(sampler)
    assert sampler.batches_per_epoch == 5 and len(batches) == 30
    for epoch in range(6):  # each epoch: distinct windows, a permutation's first 20
        seen = [i for b in batches[epoch * 5 : epoch * 5 + 5] for i in b]
        assert len(seen) == len(set(seen)) == 20 and set(seen) <= set(range(23))
    assert batches[0:5] != batches[5:10]
    # Starting mid-epoch gives exactly the remaining batches.
    resumed = StepBatchSampler(n=23, batch_size=4, seed=7, start_step=13, stop_step=30)
    assert list(resumed) == batches[13:] and len(resumed) == 17
    assert [sampler.batch(s) for s in (0, 13, 29)] == [batches[0], batches[13], batches[29]]
    assert list(StepBatchSampler(23, 4, seed=8, stop_step=30)) != batches
    # Fewer windows than a batch: one (short) batch per epoch.
    assert [len(b) for b in StepBatchSampler(3, 8, seed=0, stop_step=2)] == [3, 3]


def test_ranks_shard_each_epoch_like_distributed_sampler():
    shards = [
        list(StepBatchSampler(11, 2, seed=1, rank=r, world_size=3, stop_step=2)) for r in (0, 1, 2)
    ]
    # 11 windows padded to 12, 4 per rank, 2 batches of 2: together one full epoch.
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == 12 and set(flat) == set(range(11))
    perm = np.random.default_rng([1, 0]).permutation(11)
    assert shards[1][0] == [int(perm[1]), int(perm[4])]


def test_rng_state_round_trip_through_json():
    import json

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = json.loads(json.dumps(get_rng_state()))
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == want[0] and got[1] == want[1] and torch.equal(got[2], want[2])


def test_optimizer_state_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randn(8, 3)

    def step(m, o):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    tensors, meta = optimizer_to_flat(opt)
    tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
    save_train_state(tmp_path / "state", tensors, {"optimizer": meta, "step": 3})
    loaded, doc = load_train_state(tmp_path / "state")
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model2.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model.")})
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    optimizer_from_flat(opt2, loaded, doc["optimizer"])
    assert opt2.param_groups[0]["lr"] == 1e-2 and opt2.param_groups[0]["betas"] == (0.9, 0.99)
    step(model, opt), step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    (tmp_path / "state" / "state.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="format is 'other'"):
        load_train_state(tmp_path / "state")
    with pytest.raises(ValueError, match="no resume state"):
        load_train_state(tmp_path / "nothing")
