"""A closed-loop floor for the bundled checkpoint (models/sim_arm_diffusion): `dp-eval` drives the
MuJoCo arm over ROS 2 (sim_node + policy_node + episode driver, on this test run's own
ROS_DOMAIN_ID, LOCALHOST only) on 5 fixed held-out seeds, and at least 4 must succeed.

The model card reports 18-19/20 on seeds 1000-1019 (`make demo`), the failures always the marginal
time-outs of seeds 1004 and 1009; seeds 1010-1014 avoid both, so the one failure allowed is slack
for the real-time loop on a busy machine, and a regression in the policy, the checkpoint loader,
the node's timing or the sim shows up as failed episodes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_policy_node.train.evaluate import bundled_checkpoint

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SEED, EPISODES, MIN_SUCCESSES = 1010, 5, 4


def test_bundled_checkpoint_reaches_the_target_on_held_out_seeds(tmp_path: Path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable, "-m", "diffusion_policy_node.train.evaluate",
            "--episodes", str(EPISODES), "--seed", str(SEED),
            "--video-episodes", "0", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["checkpoint"] == str(bundled_checkpoint())
    assert summary["episodes"] == EPISODES
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in records] == list(range(SEED, SEED + EPISODES))
    assert summary["nonfinite_commands"] == 0
    assert all(r["inference_errors"] == 0 for r in records), records
    outcomes = [(r["seed"], r["success"], r.get("side")) for r in records]
    assert summary["successes"] >= MIN_SUCCESSES, (outcomes, proc.stderr[-2000:])
