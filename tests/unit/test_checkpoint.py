"""Checkpoint folders: exact round trip, and a named error for every way a folder can be broken."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from diffusion_policy_node.policy.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    NORMALIZER_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from diffusion_policy_node.policy.modeling import RegressionPolicy

from .test_policy import tiny_obs, tiny_policy


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    policy = tiny_policy(joint_names=["j1", "j2", "j3"]).eval()
    folder = save_checkpoint(policy, tmp_path_factory.mktemp("ckpt") / "tiny", meta={"step": 7})
    policy.seed(5)
    return folder, policy.predict_action_chunk(tiny_obs())


def copy_of(folder: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    dst.mkdir()
    for f in folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_round_trip_gives_identical_chunks(saved) -> None:
    folder, expected = saved
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, MODEL_FILE, NORMALIZER_FILE]
    policy = load_checkpoint(folder)
    assert not policy.training
    policy.seed(5)
    assert torch.equal(policy.predict_action_chunk(tiny_obs()), expected)
    config, meta = read_config(folder)
    assert meta == {"step": 7}
    assert config.joint_names == ["j1", "j2", "j3"]
    assert torch.equal(policy.action_normalizer.max, torch.tensor([2.0, 5.0]))


def test_a_checkpoint_from_before_the_network_protocol_loads_with_the_same_numbers(
    saved, tmp_path: Path
) -> None:
    # Written before PolicyConfig.network existed: no `network` key, weights named `unet.*`.
    folder, expected = saved
    old = copy_of(folder, tmp_path)
    doc = yaml.safe_load((old / CONFIG_FILE).read_text())
    del doc["policy"]["network"]
    (old / CONFIG_FILE).write_text(yaml.safe_dump(doc, sort_keys=False))
    tensors = load_file(str(old / MODEL_FILE))
    assert any(k.startswith("network.") for k in tensors)
    save_file(
        {k.replace("network.", "unet.", 1): v for k, v in tensors.items()}, str(old / MODEL_FILE)
    )
    policy = load_checkpoint(old)
    assert policy.config.network == "unet"
    policy.seed(5)
    assert torch.equal(policy.predict_action_chunk(tiny_obs()), expected)
    # A training state (resume) of that time loads into the policy the same way.
    legacy = {k.replace("network.", "unet.", 1): v for k, v in policy.state_dict().items()}
    fresh = tiny_policy(joint_names=["j1", "j2", "j3"])
    fresh.load_state_dict(legacy, strict=True)
    assert torch.equal(fresh.network.final_conv[1].weight, policy.network.final_conv[1].weight)


def test_inference_overrides_are_validated(saved) -> None:
    folder, _ = saved
    assert (
        load_checkpoint(folder, num_inference_steps=3).inference_scheduler.timesteps.numel() == 3
    )
    with pytest.raises(CheckpointError, match="num_inference_steps"):
        load_checkpoint(folder, num_inference_steps=500)


def test_regression_policy_round_trips(tmp_path: Path) -> None:
    policy = tiny_policy(policy_type="regression").eval()
    folder = save_checkpoint(policy, tmp_path / "reg")
    loaded = load_checkpoint(folder)
    assert isinstance(loaded, RegressionPolicy)
    assert torch.equal(
        loaded.predict_action_chunk(tiny_obs()), policy.predict_action_chunk(tiny_obs())
    )


def test_save_replaces_an_existing_checkpoint_atomically(saved, tmp_path: Path) -> None:
    folder = copy_of(saved[0], tmp_path)
    policy = tiny_policy(joint_names=["a", "b", "c"])
    save_checkpoint(policy, folder)
    assert read_config(folder)[0].joint_names == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temp or old folders left


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize("name", [CONFIG_FILE, MODEL_FILE, NORMALIZER_FILE])
def test_missing_file_is_named(saved, tmp_path: Path, name: str) -> None:
    folder = copy_of(saved[0], tmp_path)
    (folder / name).unlink()
    with pytest.raises(CheckpointError, match=rf"{name}: missing"):
        load_checkpoint(folder)


def test_wrong_shape_is_named(saved, tmp_path: Path) -> None:
    folder = copy_of(saved[0], tmp_path)
    tensors = load_file(str(folder / MODEL_FILE))
    key = next(k for k in sorted(tensors) if k.endswith("final_conv.1.weight"))
    tensors[key] = torch.zeros(3, *tensors[key].shape[1:])
    save_file(tensors, str(folder / MODEL_FILE))
    with pytest.raises(CheckpointError, match=rf"{MODEL_FILE}: tensor '{key}' has shape \(3,"):
        load_checkpoint(folder)


def test_nan_weight_is_named(saved, tmp_path: Path) -> None:
    folder = copy_of(saved[0], tmp_path)
    tensors = load_file(str(folder / NORMALIZER_FILE))
    tensors["action_normalizer.scale"][1] = float("nan")
    save_file(tensors, str(folder / NORMALIZER_FILE))
    with pytest.raises(
        CheckpointError, match=rf"{NORMALIZER_FILE}: tensor 'action_normalizer.scale' has 1 non"
    ):
        load_checkpoint(folder)


def test_missing_and_extra_keys_are_named(saved, tmp_path: Path) -> None:
    folder = copy_of(saved[0], tmp_path)
    tensors = load_file(str(folder / MODEL_FILE))
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(folder / MODEL_FILE))
    with pytest.raises(CheckpointError, match=rf"missing \['{dropped}'\], unexpected \['extra"):
        load_checkpoint(folder)


def test_bad_config_field_is_named(saved, tmp_path: Path) -> None:
    folder = copy_of(saved[0], tmp_path)
    doc = yaml.safe_load((folder / CONFIG_FILE).read_text())
    doc["policy"]["horizon"] = 7
    (folder / CONFIG_FILE).write_text(yaml.safe_dump(doc))
    with pytest.raises(CheckpointError, match=r"config.yaml \[policy\].*horizon=7"):
        load_checkpoint(folder)


def test_pickle_is_never_loaded(saved, tmp_path: Path) -> None:
    # A torch.save pickle renamed to .safetensors must be rejected, not unpickled.
    folder = copy_of(saved[0], tmp_path)
    marker = tmp_path / "executed"
    payload = tmp_path / "evil.pt"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Evil()}, payload)
    (folder / MODEL_FILE).write_bytes(payload.read_bytes())
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(folder)
    assert not marker.exists()


def test_dp_info_reports_and_fails_cleanly(saved, tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.runtime.info", str(saved[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"joint_names": [' in ok.stdout and '"control_rate_hz": 10.0' in ok.stdout
    assert '"network": "unet"' in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.runtime.info", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_load_with_jit_acceleration_matches_eager(saved) -> None:
    folder, expected = saved
    policy = load_checkpoint(folder, acceleration="jit")
    policy.seed(5)
    assert torch.allclose(policy.predict_action_chunk(tiny_obs()), expected, atol=1e-5)
    with pytest.raises(CheckpointError, match="acceleration must be"):
        load_checkpoint(folder, acceleration="turbo")
