"""An imported LeRobot checkpoint drives the MuJoCo reach arm over ROS 2 like ours.

The bundled reach policy goes out to LeRobot's layout (`dp-export lerobot-policy`) and back
(`dp-import lerobot`), then `dp-eval` runs it through sim_node + policy_node over DDS (this test
run's own ROS_DOMAIN_ID) on held-out seeds 1010-1012, where the bundled policy succeeds (its
floor test, test_bundled_floor.py, uses 1010-1014). A broken mapping of the encoder, the
condition order, the normalizers or the robot side scores 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_policy_node.interop.lerobot_cli import export_main, import_main

pytestmark = [pytest.mark.ros, pytest.mark.slow]

BUNDLED = Path(__file__).resolve().parents[2] / "models" / "sim_arm_diffusion"
SEED, EPISODES, MIN_SUCCESSES = 1010, 3, 2


def test_imported_round_trip_reaches_the_target(tmp_path: Path) -> None:
    assert export_main(["lerobot-policy", str(BUNDLED), "--out", str(tmp_path / "lerobot")]) == 0
    assert (
        import_main(["lerobot", str(tmp_path / "lerobot"), "--out", str(tmp_path / "ours")]) == 0
    )
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable, "-m", "diffusion_policy_node.eval.evaluate",
            "--checkpoint", str(tmp_path / "ours"), "--episodes", str(EPISODES),
            "--seed", str(SEED), "--video-episodes", "0", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["episodes"] == EPISODES
    assert summary["nonfinite_commands"] == 0
    assert summary["successes"] >= MIN_SUCCESSES, proc.stderr[-2000:]
