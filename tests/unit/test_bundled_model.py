"""The checkpoint shipped in models/ (what `make demo` runs): loads, fits the bundled sim, is small
enough for the repository, is documented, acts like the expert on rendered held-out observations
(which random weights do not), and keeps the numbers it had before the ε-network protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from diffusion_policy_node.policy.checkpoint import MODEL_FILE, load_checkpoint, read_config
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import DiffusionPolicy, build_policy
from diffusion_policy_node.sim.arm_task import (
    JOINT_NAMES,
    ArmTask,
    ArmTaskConfig,
    planar_forward_kinematics,
)
from diffusion_policy_node.sim.expert import SIDES, ScriptedExpert
from diffusion_policy_node.train.evaluate import BUNDLED_MODEL, bundled_checkpoint

REPO = Path(__file__).resolve().parents[2]


def test_bundled_checkpoint_is_found_in_the_source_tree():
    assert bundled_checkpoint() == REPO / "models" / BUNDLED_MODEL


def test_bundled_checkpoint_matches_the_sim_and_is_small():
    folder = bundled_checkpoint()
    config, _ = read_config(folder)
    task = ArmTaskConfig()
    assert config.policy_type == "diffusion"
    assert config.joint_names == list(JOINT_NAMES)
    assert config.image_size == (task.image_height, task.image_width)
    assert config.dt == task.control_dt
    assert config.camera_topics == ["/camera/image_raw"]
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert size < 20 * 2**20, f"{folder} is {size / 2**20:.1f} MiB"
    card = (folder / "MODEL_CARD.md").read_text()
    for must in ("dp-collect", "dp-train", "dp-eval", "success rate", "seed"):
        assert must in card


HELD_OUT_SEEDS = range(1000, 1005)  # dp-eval's seeds; the demonstrations used 0..199


def _first_chunk_errors(policy: DiffusionPolicy) -> list[tuple[float, float, float]]:
    """Per held-out seed, from the rendered first observation of the episode:
    (max |first executed action - joint positions| rad, distance m from the fingertip at the
    last executed action to where the scripted expert's fingertip is after as many steps, on
    the nearer of its two sides, fingertip progress m towards the target over the chunk)."""
    c = policy.config
    last = c.n_obs_steps - 2 + c.n_action_steps  # the last action executed from this chunk
    out = []
    with ArmTask() as task:
        for seed in HELD_OUT_SEEDS:
            task.reset(seed)
            image = task.render()  # (H, W, 3) uint8
            state = task.joint_positions().astype(np.float32)
            target, start = task.target_position()[:2], task.ee_position()[:2]
            expert_ends = []
            for side in SIDES:
                expert = ScriptedExpert(task)
                expert.reset(side)  # plans from the layout; act() does not step the task
                actions = [expert.act() for _ in range(c.n_action_steps)]
                expert_ends.append(planar_forward_kinematics(actions[-1])[-1])
            frames = np.stack([image.transpose(2, 0, 1)] * c.n_obs_steps)[None, :, None]
            obs = {
                OBS_IMAGES: torch.from_numpy(frames),
                OBS_STATE: torch.from_numpy(np.stack([state] * c.n_obs_steps)[None]),
            }
            policy.seed(0)
            chunk = policy.predict_action_chunk(obs).numpy()[0]
            end = planar_forward_kinematics(chunk[last])[-1]
            out.append(
                (
                    float(np.abs(chunk[c.n_obs_steps - 1] - state).max()),
                    min(float(np.linalg.norm(end - e)) for e in expert_ends),
                    float(np.linalg.norm(start - target) - np.linalg.norm(end - target)),
                )
            )
    return out


def _acts_like_the_expert(errors: list[tuple[float, float, float]]) -> list[bool]:
    # The expert's fingertip moves 0.1 m/s * 0.8 s = 8 cm over a chunk; the bundled policy lands
    # within ~5 mm of it and starts within ~0.1 rad of the joints (random weights: ~15 cm, ~0.45).
    return [jump < 0.15 and miss < 0.02 and gain > 0.03 for jump, miss, gain in errors]


def test_bundled_policy_starts_at_the_arm_and_heads_where_the_expert_goes():
    policy = load_checkpoint(bundled_checkpoint())
    errors = _first_chunk_errors(policy)
    assert all(_acts_like_the_expert(errors)), errors


def test_the_expert_check_fails_for_random_weights_of_the_same_config():
    # Same config and normalizer (so the same action range and clipping), untrained weights.
    trained = load_checkpoint(bundled_checkpoint())
    torch.manual_seed(0)
    policy = build_policy(trained.config).eval()
    policy.set_normalizer_stats(
        trained.state_normalizer.min,
        trained.state_normalizer.max,
        trained.action_normalizer.min,
        trained.action_normalizer.max,
    )
    errors = _first_chunk_errors(policy)
    assert not any(_acts_like_the_expert(errors)), errors


# Recorded on b214437 (before the ε-network protocol and the `network.*` weight names) with the
# inputs of `_golden_obs`: the bundled checkpoint (no `network` key, weights named `unet.*`) must
# keep giving these numbers.
GOLDEN_CHUNK = [
    [-0.2600287, 1.0541627, 1.0601211],
    [-0.2600287, 1.0742619, 1.0761894],
    [-0.2651721, 1.0117753, 1.0412186],
    [-0.2680244, 1.0247679, 1.0180061],
    [-0.2636463, 0.9910534, 0.9863493],
    [-0.2705172, 0.9419339, 0.9262854],
    [-0.2612331, 0.9394337, 0.9215448],
    [-0.2778155, 0.8956290, 0.9348417],
    [-0.2600287, 0.8722095, 0.8501133],
    [-0.2600287, 0.8658774, 0.8754224],
    [-0.2600287, 0.8193272, 0.8032674],
    [-0.2600287, 0.8194293, 0.8266346],
    [-0.2600287, 0.8035426, 0.7953555],
    [-0.2600287, 0.7933385, 0.8360540],
    [-0.3241280, 0.8010935, 0.7963625],
    [-0.2600287, 0.7506976, 0.7506976],
]
# ε̂ at t = 5 for a fixed x_t, rows 0-3 (not clipped, unlike the chunk).
GOLDEN_EPS = [
    [-2.7644160, 1.1148516, 1.5124711],
    [-3.6367884, 0.3565667, 0.9498094],
    [-2.8532436, -0.8309663, 2.2621138],
    [-2.8687704, -1.2866151, -0.0932673],
]


def _golden_obs(n_obs_steps: int) -> dict[str, torch.Tensor]:
    """A smooth random image (bilinear upsampling of 12x12 noise) and a fixed state."""
    low = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1234))
    image = (F.interpolate(low, size=(96, 96), mode="bilinear") * 255).to(torch.uint8)
    images = image[:, None, None].expand(1, n_obs_steps, 1, 3, 96, 96).contiguous()
    state = torch.tensor([[[0.1, -0.2, 0.3], [0.12, -0.18, 0.31]]])
    return {OBS_IMAGES: images, OBS_STATE: state}


def test_bundled_checkpoint_from_before_the_network_protocol_keeps_its_numbers():
    folder = bundled_checkpoint()
    doc = yaml.safe_load((folder / "config.yaml").read_text())
    assert "network" not in doc["policy"]  # written before the field existed
    assert all(k.startswith(("unet.", "obs_encoder.")) for k in load_file(folder / MODEL_FILE))
    policy = load_checkpoint(folder)
    assert policy.config.network == "unet"
    obs = _golden_obs(policy.config.n_obs_steps)
    policy.seed(0)
    chunk = policy.predict_action_chunk(obs)[0]
    torch.testing.assert_close(chunk, torch.tensor(GOLDEN_CHUNK), atol=1e-5, rtol=0)
    with torch.no_grad():
        cond = policy.encode_observations(obs)
        x_t = torch.randn(1, 16, 3, generator=torch.Generator().manual_seed(7))
        eps = policy.network(x_t, 5, cond)[0, :4]
    torch.testing.assert_close(eps, torch.tensor(GOLDEN_EPS), atol=1e-5, rtol=0)
