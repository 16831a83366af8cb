"""dp-train end to end on CPU: loss goes down, exact resume, 2-process DDP (gloo), CLI errors.

The bags are written with rosbags in both storage formats: a 30 Hz camera, 200 Hz joint states
in shuffled order with an extra joint, JointTrajectory commands at the 10 Hz control rate. The
actions are a deterministic function of the observed joint state, so the data are learnable. The
model is reduced (40x40 images, 36x36 crops, a 2-level U-Net (64, 128)) to keep the tests small.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config
from diffusion_policy_node.train import cli
from diffusion_policy_node.train.config import run_config_from_dict
from diffusion_policy_node.train.plots import read_metrics
from diffusion_policy_node.train.replay import main as replay_main
from diffusion_policy_node.train.trainer import Trainer
from tests.factories import tiny_run_doc

from .data_fixtures import CAMERA, JOINTS, JT_TOPIC, BagSpec, write_bag

STEPS = 300
REPO = Path(__file__).resolve().parents[2]


def config_doc(cache_dir: Path) -> dict:
    policy = {"down_dims": [64, 128], "diffusion_step_embed_dim": 64, "num_inference_steps": 4}
    train = {
        "steps": STEPS,
        "batch_size": 5,
        "lr": 1e-3,
        "warmup_steps": 10,
        "seed": 0,
        "torch_threads": 2,
        "val_fraction": 0.34,
        "val_every": 150,
        "val_max_batches": 4,
        "checkpoint_every": STEPS,
        "log_every": 10,
    }
    return tiny_run_doc([CAMERA], cache_dir, policy=policy, train=train)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Three bags (mcap, sqlite3, mcap; 3.0-4.0 s) and the run of STEPS steps in one go."""
    root = tmp_path_factory.mktemp("train")
    bags = []
    for i, (storage, seconds) in enumerate([("mcap", 3.0), ("sqlite3", 3.5), ("mcap", 4.0)]):
        write_bag(root / "bags" / f"demo{i}", BagSpec(storage=storage, duration_s=seconds, seed=i))
        bags.append(root / "bags" / f"demo{i}")
    doc = config_doc(root / "cache")
    config_path = root / "train.yaml"
    config_path.write_text(yaml.safe_dump(doc))
    out = root / "full"
    result = Trainer(run_config_from_dict(doc), bags, out, progress=False).fit()
    return {
        "root": root,
        "bags": bags,
        "doc": doc,
        "config": config_path,
        "out": out,
        "result": result,
    }


def state_tensors(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "train_state" / "tensors.safetensors"))


def test_training_lowers_the_loss_and_writes_a_node_ready_run(setup):
    out, result = setup["out"], setup["result"]
    assert result.step == STEPS
    records = read_metrics(out / "metrics.jsonl")
    losses = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in records if "loss" in r] == list(range(10, STEPS + 1, 10))
    first10, last50 = losses[0], sum(losses[-5:]) / 5
    assert last50 < 0.5 * first10, (first10, last50, losses)
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 2 and all(v == v for v in val) and val[-1] < val[0]
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_yaml = yaml.safe_load((out / "run.yaml").read_text())
    assert run_yaml["policy"]["joint_names"] == JOINTS and run_yaml["train"]["steps"] == STEPS

    # latest/ and best/ are node-ready checkpoints holding the EMA weights.
    config, meta = read_config(out / "latest")
    assert config.joint_names == JOINTS and config.state_dim == 4 and config.image_size == (40, 40)
    assert meta["step"] == STEPS and meta["weights"] == "ema"
    assert meta["data"]["command_topic"] == JT_TOPIC and len(meta["split"]["val_episodes"]) == 1
    policy = load_checkpoint(out / "latest")
    tensors = state_tensors(out)
    weights = policy.state_dict()
    for key in ("network.final_conv.1.weight", "obs_encoder.encoders.0.out.weight"):
        assert torch.equal(weights[key], tensors[f"ema.{key}"])
        assert not torch.equal(weights[key], tensors[f"model.{key}"])
    _, best_meta = read_config(out / "best")
    assert best_meta["val_loss"] == pytest.approx(min(val))
    load_checkpoint(out / "best")


def test_resume_reproduces_the_uninterrupted_run(setup, tmp_path):
    run = run_config_from_dict(setup["doc"])
    out = tmp_path / "resumed"
    half = Trainer(run, setup["bags"], out, progress=False).fit(stop_after=STEPS // 2)
    assert half.step == STEPS // 2
    state = json.loads((out / "train_state" / "state.json").read_text())
    order = state["data_order"]
    assert state["step"] == STEPS // 2 and order["batch_in_epoch"] != 0  # stopped mid-epoch
    assert read_config(out / "latest")[1]["step"] == STEPS // 2
    Trainer(run, setup["bags"], out, resume=True, progress=False).fit()
    want, got = state_tensors(setup["out"]), state_tensors(out)
    assert set(got) == set(want)
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert differ == [], differ[:5]
    assert any(k.startswith("optim.") for k in got) and any(k.startswith("ema.") for k in got)
    # The logged losses of the second half match too; the first half is kept in the log.
    a = [r for r in read_metrics(setup["out"] / "metrics.jsonl") if "loss" in r]
    b = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert [(r["step"], r["loss"]) for r in a] == [(r["step"], r["loss"]) for r in b]


def test_cli_errors_are_named(setup, tmp_path, capsys):
    base = ["--config", str(setup["config"]), "--data", *map(str, setup["bags"])]
    assert cli.main([*base, "--out", str(setup["out"]), "--quiet"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "new"), "--resume"]) == 2
    assert "holds no train_state" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "x"), "--set", "train.lr=-1"]) == 2
    assert "TrainConfig.lr=-1" in capsys.readouterr().err
    assert cli.main([*base, "--out", str(tmp_path / "x"), "--set", "policy.horizon=16"]) == 2
    assert "policy.horizon=16 disagrees with data.horizon=8" in capsys.readouterr().err
    missing = str(tmp_path / "no_such_bag")
    args = ["--config", str(setup["config"]), "--data", missing, "--out", str(tmp_path / "y")]
    assert cli.main(args) == 2
    assert f"bag {missing}: not found" in capsys.readouterr().err
    # A finished run cannot be resumed without raising train.steps.
    assert cli.main([*base, "--out", str(setup["out"]), "--resume", "--quiet"]) == 2
    assert "raise train.steps" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_cpu_processes_with_gloo(setup, tmp_path):
    out = tmp_path / "ddp"
    overrides = {
        "steps": 4,
        "batch_size": 2,
        "num_workers": 1,
        "torch_threads": 1,
        "log_every": 2,
        "val_every": 4,
        "checkpoint_every": 4,
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--nnodes=1",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        "-m",
        "diffusion_policy_node.train.cli",
        "--config",
        str(setup["config"]),
        "--data",
        *map(str, setup["bags"]),
        "--out",
        str(out),
        *[f"--set=train.{k}={v}" for k, v in overrides.items()],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])  # rank 0 only prints it
    assert summary["step"] == 4 and proc.stdout.count('"step"') == 1
    policy = load_checkpoint(out / "latest")
    assert policy.config.joint_names == JOINTS
    state = json.loads((out / "train_state" / "state.json").read_text())
    assert state["data_order"]["world_size"] == 2 and len(state["rng"]) == 2
    assert state["rng"][0]["torch"] != state["rng"][1]["torch"]  # per-rank noise streams
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if "loss" in r] == [2, 4]
    assert all(r["samples_per_s"] > 0 for r in records if "loss" in r)


def test_replay_reports_per_joint_errors(setup, tmp_path, capsys):
    out = tmp_path / "replay"
    code = replay_main(
        [
            *("--checkpoint", str(setup["out"] / "best"), "--data", str(setup["bags"][0])),
            *("--out", str(out), "--device", "cpu"),
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(report["per_joint"]) == JOINTS
    for err in report["per_joint"].values():
        assert 0 <= err["mae"] <= err["rmse"] < float("inf")
    assert report["episodes"] == 1 and report["compared"] > 0
    assert (out / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "replay.json").read_text())["per_joint"] == report["per_joint"]
