"""Closed-loop floors for the bundled checkpoints, on simulated time (`eval/rollout.py`).

The rollout runs the node's controller and the MuJoCo simulation in one loop with the inference
latency simulated and the sampling seeded per episode, so each episode's outcome depends on the
checkpoint, the seed and the latency, not on how fast or loaded the machine is: the same seeds
give the same outcomes. The floors leave one episode of slack because another CPU model may
round floats differently and move a marginal episode.

- models/sim_arm_diffusion (reach): held-out seeds 1000-1004 at 120 ms latency (the latency
  the checkpoint sees over DDS beside the sim on a 2-core CPU); 5/5 succeed (with DDIM 10 and
  with the config's 4 steps), the floor is 4.
- models/ur5e_pick_place (UR5e + gripper, two cameras, two action groups): seeds 1000-1003 at
  100 ms; 4/4 succeed (DDIM 10 and the config's 6 steps), the floor is 3. A broken action
  group, limit source or normalizer scores 0 here.

A regression in the policy, the checkpoint loader, the controller's timing or the sim shows up
as failed episodes. Repeatability itself: tests/unit/test_sim_rollout.py; the same loop over
DDS in real time: tests/e2e/test_closed_loop.py (commands flow, episodes complete).
"""

from __future__ import annotations

import pytest

from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from diffusion_policy_node.eval.rollout import Rollout

pytestmark = pytest.mark.slow


def _outcomes(model: str, task: str, latency_ms: float, seeds: range) -> list[dict]:
    rollout = Rollout(bundled_checkpoint(model), task, latency_ms=latency_ms)
    try:
        return [rollout.episode(seed) for seed in seeds]
    finally:
        rollout.close()


def _check(records: list[dict], seeds: range, minimum: int) -> None:
    assert [r["seed"] for r in records] == list(seeds)
    assert all(r["inference_timeouts"] == 0 for r in records), records
    outcomes = [(r["seed"], r["success"], r["collided"], r["time"]) for r in records]
    assert sum(r["success"] for r in records) >= minimum, outcomes


def test_bundled_checkpoint_reaches_the_target_on_held_out_seeds() -> None:
    seeds = range(1000, 1005)
    _check(_outcomes("sim_arm_diffusion", "reach", 120.0, seeds), seeds, minimum=4)


def test_bundled_pick_place_checkpoint_puts_the_cube_in_the_cued_bin() -> None:
    seeds = range(1000, 1004)
    _check(_outcomes("ur5e_pick_place", "pick_place", 100.0, seeds), seeds, minimum=3)
