"""dp-export lerobot-policy -> dp-import lerobot gives back the same policy (bundled reach)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffusion_policy_node.interop.lerobot_checkpoint import import_lerobot
from diffusion_policy_node.interop.lerobot_cli import export_main, import_main
from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "sim_arm_diffusion"


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    assert export_main(["lerobot-policy", str(BUNDLED), "--out", str(root / "lerobot")]) == 0
    assert import_main(["lerobot", str(root / "lerobot"), "--out", str(root / "back")]) == 0
    return root / "lerobot", root / "back"


def test_exported_folder_is_lerobots_layout(round_trip: tuple[Path, Path]) -> None:
    exported, _ = round_trip
    config = json.loads((exported / "config.json").read_text())
    assert config["type"] == "diffusion" and config["vision_backbone"] == "resnet18"
    assert config["normalization_mapping"] == {
        "VISUAL": "IDENTITY",
        "STATE": "MIN_MAX",
        "ACTION": "MIN_MAX",
    }
    weights = load_file(str(exported / "model.safetensors"))
    # torchvision's width-64 ResNet-18 (the bundled encoder is width 16, embedded in it).
    assert weights["diffusion.rgb_encoder.0.backbone.7.1.conv2.weight"].shape == (512, 512, 3, 3)
    assert "normalize_inputs.buffer_observation_state.min" in weights
    assert "unnormalize_outputs.buffer_action.max" in weights


def test_round_trip_keeps_the_robot_and_the_actions(round_trip: tuple[Path, Path]) -> None:
    _, back = round_trip
    ours, _ = read_config(BUNDLED)
    config, meta = read_config(back)
    assert config.camera_topics == ours.camera_topics and config.dt == ours.dt
    assert config.action_groups == ours.action_groups and config.action_lead == ours.action_lead
    assert meta["source"]["format"] == "lerobot"
    rng = np.random.default_rng(3)
    obs = {
        OBS_IMAGES: rng.integers(0, 256, (2, 2, 1, 3, 96, 96), dtype=np.uint8),
        OBS_STATE: rng.uniform(-1.5, 1.5, (2, 2, 3)).astype(np.float32),
    }
    chunks = []
    for folder in (BUNDLED, back):
        policy = load_checkpoint(folder)
        chunks.append(policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(5)))
    # Same math up to float32 rounding (the width-16 encoder inside the width-64 one is exact;
    # normalizer formula and FiLM summation order differ in the last bits).
    assert (chunks[0] - chunks[1]).abs().max().item() < 1e-4


def test_import_uses_the_exported_robot_file(
    round_trip: tuple[Path, Path], tmp_path: Path
) -> None:
    exported, _ = round_trip
    folder = import_lerobot(exported, tmp_path / "again")
    assert read_config(folder)[0].joint_names == ["joint1", "joint2", "joint3"]
