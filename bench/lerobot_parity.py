"""Max |ours - LeRobot| of imported LeRobot DP checkpoints, per config and scheduler.

Needs the peer venv (`make bench-peer`: LeRobot 0.3.2). Run with ours:

    .venv/bin/python bench/lerobot_parity.py [--configs pusht ...] [--no-round-trip]

1. LeRobot writes fresh checkpoints and cases (tests/fixtures/lerobot/make_fixture.py in the peer
   venv, into a temporary folder): PushT-like one camera, two cameras with per-camera encoders,
   0.6-style BatchNorm horizon 64, and the PushT one in the 0.4+ processor layout.
2. Round trip: the bundled models/sim_arm_diffusion exported to LeRobot's layout
   (`dp-export lerobot-policy`), loaded by LeRobot (`from_pretrained`), run by LeRobot, and
   imported back (`dp-import lerobot`).
Each is imported into our checkpoint format and run by our `predict_action_chunk` (fp32, CPU,
one intra-op thread on both sides) on the same observations and noise seed. One JSON line per
config x scheduler: config, scheduler, steps, lerobot_version, max_abs_diff, max_abs_action;
for the round trip also max_abs_diff_original (the bundled checkpoint itself vs LeRobot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".venv-peer" / "bin" / "python"
MAKE_FIXTURE = ROOT / "tests" / "fixtures" / "lerobot" / "make_fixture.py"
CONFIGS = ["pusht", "two_cams_per_camera", "bn_h64_two_cams", "pusht_v04"]


try:  # run as a script: bench/ is on sys.path
    from _common import cpu_model
except ImportError:  # imported as a module of bench
    from bench._common import cpu_model


def _peer(*args: str) -> None:
    if not PEER.exists():
        sys.exit(f"{PEER} missing: run `make bench-peer` first")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The child's progress lines go to stderr: stdout carries only this bench's JSON lines.
    subprocess.run(
        [str(PEER), str(MAKE_FIXTURE), *args], check=True, env=env, cwd=ROOT, stdout=sys.stderr
    )


def _case(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    return load_file(str(path)), meta


def _ours(checkpoint: Path, case: dict, meta: dict, scheduler: str) -> torch.Tensor:
    from diffusion_policy_node.policy.checkpoint import load_checkpoint
    from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE

    steps = int(meta[f"{scheduler}_steps"])
    policy = load_checkpoint(checkpoint, noise_scheduler=scheduler, num_inference_steps=steps)
    cameras = json.loads(meta["cameras"])
    obs = {
        OBS_IMAGES: torch.stack([case[f"input.{k}"] for k in cameras], dim=2),
        OBS_STATE: case["input.observation.state"],
    }
    generator = torch.Generator().manual_seed(int(meta["seed"]))
    return policy.predict_action_chunk(obs, generator=generator)


def _report(config: str, case: dict, meta: dict, runs: dict[str, Path]) -> None:
    for scheduler in ("ddim", "ddpm"):
        expected = case[f"expected.{scheduler}"]
        line = {
            "config": config,
            "scheduler": scheduler,
            "steps": int(meta[f"{scheduler}_steps"]),
            "lerobot_version": meta["lerobot_version"],
        }
        for label, checkpoint in runs.items():
            got = _ours(checkpoint, case, meta, scheduler)
            line[label] = float((got - expected).abs().max())
        line["max_abs_action"] = float(expected.abs().max())
        line["cpu"] = cpu_model()
        line["date"] = time.strftime("%Y-%m-%d")
        print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--no-round-trip", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from diffusion_policy_node.interop.lerobot_checkpoint import import_lerobot
    from diffusion_policy_node.interop.lerobot_export import export_lerobot
    from diffusion_policy_node.interop.lerobot_robot import RobotMapping

    robots = {
        "two_cams_per_camera": RobotMapping(
            fps=15,
            state_joints=["a", "b", "c", "d"],
            action_groups=[{"name": "arm", "joints": ["a", "b", "c"], "topic": "/arm/cmd"}],
        )
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        wanted = [c.removesuffix("_v04") for c in args.configs]
        if wanted:
            _peer("--out", str(tmp_path / "lerobot"), "--no-compress", "--only", *set(wanted))
        for config in args.configs:
            src = tmp_path / "lerobot" / config / "pretrained_model"
            ours = import_lerobot(
                src, tmp_path / "ours" / config, robots.get(config, RobotMapping(fps=10))
            )
            case, meta = _case(
                tmp_path / "lerobot" / config.removesuffix("_v04") / "case.safetensors"
            )
            _report(config, case, meta, {"max_abs_diff": ours})
        if not args.no_round_trip:
            bundled = ROOT / "models" / "sim_arm_diffusion"
            exported = tmp_path / "sim_arm_lerobot"
            export_lerobot(bundled, exported)
            _peer(
                "--checkpoint", str(exported), "--out", str(tmp_path / "sim_arm_case"),
                "--state-range=-1.9,1.8",
            )  # fmt: skip
            back = import_lerobot(exported, tmp_path / "sim_arm_back")
            case, meta = _case(tmp_path / "sim_arm_case" / "case.safetensors")
            runs = {"max_abs_diff": back, "max_abs_diff_original": bundled}
            _report("sim_arm_diffusion (exported, run by LeRobot)", case, meta, runs)


if __name__ == "__main__":
    main()
