"""Closed-loop floors for the bundled checkpoints.

models/sim_arm_diffusion (reach): `dp-eval` drives the MuJoCo arm over ROS 2 (sim_node +
policy_node + episode driver, on this test run's own ROS_DOMAIN_ID, LOCALHOST only) on 5 fixed
held-out seeds, and at least 4 must succeed.

The model card reports 18-19/20 on seeds 1000-1019 (`make demo`), the failures always the marginal
time-outs of seeds 1004 and 1009; seeds 1010-1014 avoid both, so the one failure allowed is slack
for the real-time loop on a busy machine, and a regression in the policy, the checkpoint loader,
the node's timing or the sim shows up as failed episodes.

models/ur5e_pick_place (pick-and-place, UR5e + gripper, two cameras, two action groups): the same
on seeds 1000-1003, at least 1 of 4. Its MODEL_CARD reports 43/50 on seeds 1000-1049 (1000-1012
all successes), but sampling is not seeded and single episodes vary: `make demo` on 1000-1009
got 7/10, with 1001 and 1003 timing out. At 70 % per episode, 4 failures in a row happen < 1 % of
the time, while a broken group, limit source or normalizer scores 0 (the normalizer bug: 0/50)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_policy_node.train.evaluate import bundled_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SEED, EPISODES, MIN_SUCCESSES = 1010, 5, 4
PP_SEED, PP_EPISODES, PP_MIN_SUCCESSES = 1000, 4, 1


def _floor(tmp_path: Path, seed: int, episodes: int, minimum: int, *extra: str) -> dict:
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable, "-m", "diffusion_policy_node.train.evaluate",
            "--episodes", str(episodes), "--seed", str(seed),
            "--video-episodes", "0", "--out", str(out), *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == episodes
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == list(range(seed, seed + episodes))
    assert summary["nonfinite_commands"] == 0
    assert all(r["inference_errors"] == 0 for r in records), records
    outcomes = [(r["seed"], r["success"], r.get("side")) for r in records]
    assert summary["successes"] >= minimum, (outcomes, proc.stderr[-2000:])
    return summary


def test_bundled_checkpoint_reaches_the_target_on_held_out_seeds(tmp_path: Path):
    summary = _floor(tmp_path, SEED, EPISODES, MIN_SUCCESSES)
    assert summary["checkpoint"] == str(bundled_checkpoint())


def test_bundled_pick_place_checkpoint_puts_the_cube_in_the_cued_bin(tmp_path: Path):
    checkpoint = bundled_checkpoint("ur5e_pick_place")
    summary = _floor(
        tmp_path, PP_SEED, PP_EPISODES, PP_MIN_SUCCESSES,
        "--task", "pick_place", "--checkpoint", str(checkpoint),
    )  # fmt: skip
    assert summary["checkpoint"] == str(checkpoint)
