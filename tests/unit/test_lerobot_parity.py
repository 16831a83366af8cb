"""Imported LeRobot DP checkpoints give LeRobot's actions (golden fixtures, no LeRobot needed).

tests/fixtures/lerobot/make_fixture.py (peer venv) wrote each fixture with LeRobot 0.3.2: its
checkpoint, the observations, the seed of the initial noise and LeRobot's actions for DDIM x10
and DDPM x100 (fp32, CPU).
"""

from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from diffusion_policy_node.interop.lerobot_checkpoint import LeRobotImportError, import_lerobot
from diffusion_policy_node.interop.lerobot_robot import RobotMapping
from diffusion_policy_node.policy.checkpoint import load_checkpoint, read_config
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lerobot"
CONFIGS = ["pusht", "two_cams_per_camera", "bn_h64_two_cams", "pusht_v04"]
TOLERANCE = 1e-4


def tolerance(expected: torch.Tensor) -> float:
    """1e-4, or 8 float32 ulps of the largest action where that is more (PushT-like pixel
    actions of ~500: 5e-4). On the CPU that wrote the fixture the chunks are bit-identical;
    another CPU's kernels may round differently in the last bits."""
    return max(TOLERANCE, 8 * torch.finfo(torch.float32).eps * expected.abs().max().item())


# The state of "two_cams_per_camera" has 4 joints, its action 3: an arm and a gripper group.
ROBOTS = {
    "two_cams_per_camera": RobotMapping(
        fps=15,
        state_joints=["shoulder", "elbow", "wrist", "finger"],
        action_groups=[
            {"name": "arm", "joints": ["shoulder", "elbow"], "topic": "/arm/joint_trajectory"},
            {
                "name": "gripper",
                "joints": ["finger"],
                "topic": "/gripper/commands",
                "type": "Float64MultiArray",
            },
        ],
    )
}


def unpack_fixture(name: str, dest: Path) -> Path:
    """The fixture's pretrained_model folder under `dest`, weights decompressed."""
    src = FIXTURES / name / "pretrained_model"
    folder = dest / name / "pretrained_model"
    shutil.copytree(src, folder)
    for packed in folder.glob("*.xz"):
        packed.with_suffix("").write_bytes(lzma.decompress(packed.read_bytes()))
        packed.unlink()
    return folder


def case_of(name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = FIXTURES / name.removesuffix("_v04") / "case.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def observation(case: dict[str, torch.Tensor], meta: dict[str, str]) -> dict[str, torch.Tensor]:
    cameras = json.loads(meta["cameras"])
    images = torch.stack([case[f"input.{k}"] for k in cameras], dim=2)  # (B, T, N, 3, H, W)
    return {OBS_IMAGES: images, OBS_STATE: case["input.observation.state"]}


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the 100-step DDPM runs take seconds instead of tens of seconds
    on a loaded 2-core machine (spinning OpenMP workers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lerobot")
    out = {}
    for name in CONFIGS:
        src = unpack_fixture(name, root / "src")
        out[name] = import_lerobot(
            src, root / "ours" / name, ROBOTS.get(name, RobotMapping(fps=10))
        )
    return out


def chunk(folder: Path, scheduler: str, case: dict, meta: dict, policy=None) -> torch.Tensor:
    if policy is None:
        steps = int(meta[f"{scheduler}_steps"])
        policy = load_checkpoint(folder, noise_scheduler=scheduler, num_inference_steps=steps)
    seed = int(meta["seed"])
    generator = torch.Generator().manual_seed(seed)
    # The same noise stream as LeRobot's (torch.manual_seed(seed), global CPU generator).
    assert torch.equal(
        torch.randn(case["initial_noise"].shape, generator=generator), case["initial_noise"]
    )
    generator.manual_seed(seed)
    return policy.predict_action_chunk(observation(case, meta), generator=generator)


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
@pytest.mark.parametrize("name", CONFIGS)
def test_actions_equal_lerobot(imported: dict[str, Path], name: str, scheduler: str) -> None:
    case, meta = case_of(name)
    expected = case[f"expected.{scheduler}"]
    got = chunk(imported[name], scheduler, case, meta)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= tolerance(expected)


def test_a_broken_mapping_fails_the_comparison(imported: dict[str, Path]) -> None:
    """Each of two mappings, broken on purpose, moves the actions far past the tolerance."""
    case, meta = case_of("two_cams_per_camera")
    expected = case["expected.ddim"]
    policy = load_checkpoint(
        imported["two_cams_per_camera"], noise_scheduler="ddim", num_inference_steps=10
    )
    policy.obs_encoder.state_first = False  # LeRobot's [state, cameras] order lost
    assert (
        chunk(None, "ddim", case, meta, policy) - expected
    ).abs().max().item() > 100 * TOLERANCE
    policy.obs_encoder.state_first = True
    assert (chunk(None, "ddim", case, meta, policy) - expected).abs().max().item() <= TOLERANCE
    block = policy.network.down_modules[0][0]  # bias-only FiLM: scale rows must give 1
    with torch.no_grad():
        block.cond_encoder[1].bias[: block.out_channels] = 0.0
    assert (
        chunk(None, "ddim", case, meta, policy) - expected
    ).abs().max().item() > 100 * TOLERANCE


def test_imported_config_records_the_mapping(imported: dict[str, Path]) -> None:
    config, meta = read_config(imported["bn_h64_two_cams"])
    assert config.backbone_norm == "batch" and not config.share_encoder
    assert config.camera_topics == ["/front/image_raw", "/side/image_raw"]
    assert config.horizon == 64 and config.n_action_steps == 32 and config.crop_shape is None
    assert config.normalization == {"images": "mean_std", "state": "min_max", "action": "mean_std"}
    assert meta["source"]["layout"] == "0.3"
    assert meta["action_range"].startswith("mean ± 3 std")
    v04, meta04 = read_config(imported["pusht_v04"])
    assert meta04["source"]["layout"] == "0.4" and v04.share_encoder
    two, _ = read_config(imported["two_cams_per_camera"])
    assert two.prediction_type == "sample" and two.beta_schedule == "linear"
    assert not two.clip_sample and two.normalization["images"] == "identity"


def test_unmappable_fields_are_named(tmp_path: Path) -> None:
    src = unpack_fixture("pusht", tmp_path)
    config = json.loads((src / "config.json").read_text())
    robot = RobotMapping(fps=10)
    for field, value in (
        ("vision_backbone", "resnet34"),
        ("noise_scheduler_type", "EulerDiscrete"),
        ("future_knob", 1),
    ):
        (src / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(LeRobotImportError, match=field):
            import_lerobot(src, tmp_path / "out", robot)
    env = dict(config["input_features"])
    env["observation.environment_state"] = {"type": "ENV", "shape": [4]}
    (src / "config.json").write_text(json.dumps({**config, "input_features": env}))
    with pytest.raises(LeRobotImportError, match=r"observation\.environment_state"):
        import_lerobot(src, tmp_path / "out", robot)
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="fps is required"):
        import_lerobot(src, tmp_path / "out", RobotMapping())
    with pytest.raises(ValueError, match="state_joints has 3 names"):
        import_lerobot(src, tmp_path / "out", RobotMapping(fps=10, state_joints=["a", "b", "c"]))


def test_streamed_frames_use_their_camera_statistics(imported: dict[str, Path]) -> None:
    """The streaming encoder's per-frame step normalizes with that camera's image statistics."""
    policy = load_checkpoint(imported["bn_h64_two_cams"])
    case, meta = case_of("bn_h64_two_cams")
    images = observation(case, meta)[OBS_IMAGES]
    width = 2 * policy.config.num_keypoints
    with torch.inference_mode():
        normalized = policy.image_normalizer.normalize(images.float() / 255.0)
        full = policy.obs_encoder.image_features(normalized)  # (B, T, N·2K)
        frame = policy.encode_frame(1, images[0, -1, 1])
    torch.testing.assert_close(frame, full[0, -1, width : 2 * width], atol=1e-5, rtol=1e-5)


def test_lerobot_06_fields_map(tmp_path: Path) -> None:
    """0.5/0.6 fields: resize_shape + crop_ratio give the crop (an image already at
    resize_shape is not resized by LeRobot either), and the runtime-only fields are ignored:
    the PushT fixture written that way still gives LeRobot's actions."""
    src = unpack_fixture("pusht", tmp_path)
    config = json.loads((src / "config.json").read_text())
    config.update(
        crop_shape=None,
        resize_shape=[96, 96],
        crop_ratio=0.875,
        gradient_checkpointing=False,
        compile_model=False,
        compile_mode="reduce-overhead",
    )
    (src / "config.json").write_text(json.dumps(config))
    folder = import_lerobot(src, tmp_path / "ours", RobotMapping(fps=10))
    imported, _ = read_config(folder)
    assert imported.image_size == (96, 96) and imported.crop_shape == (84, 84)
    case, meta = case_of("pusht")
    expected = case["expected.ddim"]
    got = chunk(folder, "ddim", case, meta)
    assert (got - expected).abs().max().item() <= tolerance(expected)
