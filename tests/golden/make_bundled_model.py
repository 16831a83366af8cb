"""Golden outputs of the bundled reach checkpoint (models/sim_arm_diffusion), and the script that
writes them to tests/golden/bundled_model.json.

tests/unit/test_bundled_model.py computes the same outputs and compares them with the file, so
any change to the sampler, the networks or the checkpoint loader that moves the numbers fails
it. Rewrite the file only when a change of numbers is intended:

    python -m tests.golden.make_bundled_model
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from diffusion_policy_node.policy.checkpoint import load_checkpoint
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import DiffusionPolicy

GOLDEN_FILE = Path(__file__).with_name("bundled_model.json")
EPS_TIMESTEP = 5  # the ε-network is evaluated at this timestep, for a fixed x_t
GOLDEN_DDIM_STEPS = 10  # the chunk's sampler: DDIM with this many steps


def golden_obs(n_obs_steps: int) -> dict[str, torch.Tensor]:
    """A smooth random image (bilinear upsampling of 12x12 noise) and a fixed state."""
    low = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1234))
    image = (F.interpolate(low, size=(96, 96), mode="bilinear") * 255).to(torch.uint8)
    images = image[:, None, None].expand(1, n_obs_steps, 1, 3, 96, 96).contiguous()
    state = torch.tensor([[[0.1, -0.2, 0.3], [0.12, -0.18, 0.31]]])
    return {OBS_IMAGES: images, OBS_STATE: state}


def golden_outputs(policy: DiffusionPolicy) -> dict[str, torch.Tensor]:
    """`chunk`: the action chunk (horizon, 3) for `golden_obs` with sampling seed 0 and DDIM 10
    (fixed here, whatever step count the checkpoint's config recommends); `eps`: the
    ε-network's output rows 0-3 at `EPS_TIMESTEP` for a fixed x_t (not clipped, unlike the
    chunk)."""
    obs = golden_obs(policy.config.n_obs_steps)
    policy.set_inference("ddim", GOLDEN_DDIM_STEPS)
    policy.seed(0)
    chunk = policy.predict_action_chunk(obs)[0]
    with torch.no_grad():
        cond = policy.encode_observations(obs)
        x_t = torch.randn(1, policy.config.horizon, 3, generator=torch.Generator().manual_seed(7))
        eps = policy.network(x_t, EPS_TIMESTEP, cond)[0, :4]
    return {"chunk": chunk, "eps": eps}


def main() -> None:
    outputs = golden_outputs(load_checkpoint(bundled_checkpoint()))
    doc = {key: [[round(float(v), 7) for v in row] for row in value.tolist()]
           for key, value in outputs.items()}  # fmt: skip
    GOLDEN_FILE.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {GOLDEN_FILE}")


if __name__ == "__main__":
    main()
