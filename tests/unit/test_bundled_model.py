"""The checkpoint shipped in models/ (what `make demo` runs): loads, fits the bundled sim, is small
enough for the repository, is documented, acts like the expert on rendered held-out observations
(which random weights do not), and keeps the numbers it had before the ε-network protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file

from diffusion_policy_node.eval.evaluate import BUNDLED_MODEL, bundled_checkpoint
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
from tests.golden.make_bundled_model import GOLDEN_FILE, golden_outputs

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
    # The model card describes this checkpoint's timing, not another one's.
    card = (folder / "MODEL_CARD.md").read_text()
    timing = f"horizon {config.horizon} at dt {config.dt:g} s; {config.n_action_steps} executed"
    assert timing in card, f"{folder}/MODEL_CARD.md does not say {timing!r}"


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


def test_bundled_checkpoint_from_before_the_network_protocol_keeps_its_numbers():
    # The bundled checkpoint has no `network` key and names its weights `unet.*`: it must keep
    # giving the golden numbers (tests/golden/make_bundled_model.py writes them).
    folder = bundled_checkpoint()
    doc = yaml.safe_load((folder / "config.yaml").read_text())
    assert "network" not in doc["policy"]  # written before the field existed
    assert all(k.startswith(("unet.", "obs_encoder.")) for k in load_file(folder / MODEL_FILE))
    policy = load_checkpoint(folder)
    assert policy.config.network == "unet"
    golden = json.loads(GOLDEN_FILE.read_text())
    outputs = golden_outputs(policy)
    torch.testing.assert_close(outputs["chunk"], torch.tensor(golden["chunk"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs["eps"], torch.tensor(golden["eps"]), atol=1e-5, rtol=0)
