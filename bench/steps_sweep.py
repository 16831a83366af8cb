"""Success vs DDIM steps for the bundled checkpoints, on the seeded sim-time rollout.

For each task (reach: models/sim_arm_diffusion, pick_place: models/ur5e_pick_place) and each
step count, one `python -m diffusion_policy_node.eval.rollout` run on the same held-out layout
seeds (`--seed`, `--episodes`; the demonstrations used seeds 0-199), sampling seeded per episode,
the node's default parameters otherwise (`num_inference_steps` is the only change). The
simulated inference latency is fixed per task (`--latency-ms`, by default what the node measured
with DDIM 10 beside the simulation, see bench/results/rollout_default_*), the same for every
step count, so a change in success comes from the step count alone: fewer steps are also faster,
which can only help a real loop. The compute latency of each step count (the checkpoint's
`predict_action_chunk`, default acceleration and precision, `--threads`) is measured in this
process and printed beside it.

Output: bench/results/<out>/<task>_ddim<N>.jsonl (the rollout's episode records), then one JSON
line per cell on stdout (success, outcomes, latency p50/p99) after a machine line.

    nice -n 10 .venv/bin/python bench/steps_sweep.py --out steps_sweep_2026-12-07
    .venv/bin/python bench/steps_sweep.py --tasks reach --steps 10,4 --episodes 5
    .venv/bin/python bench/steps_sweep.py --latency-only --threads 2    # latency per step count
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:  # run as a script: bench/ is on sys.path
    from _common import machine_line, percentile
except ImportError:  # imported as bench.steps_sweep
    from bench._common import machine_line, percentile

REPO = Path(__file__).resolve().parents[1]
LATENCY_MS = {"reach": 120.0, "pick_place": 100.0}


def chunk_latency(task: str, steps: int, threads: int, reps: int) -> dict:
    """p50/p99 ms of one chunk of the task's bundled checkpoint with `steps` DDIM steps."""
    import numpy as np
    import torch

    from diffusion_policy_node.eval.evaluate import BUNDLED_MODELS, bundled_checkpoint
    from diffusion_policy_node.policy.checkpoint import load_checkpoint
    from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
    from diffusion_policy_node.runtime.settings import PolicyNodeParams

    torch.set_num_threads(threads)
    defaults = PolicyNodeParams(checkpoint="unused")
    policy = load_checkpoint(
        bundled_checkpoint(BUNDLED_MODELS[task]),
        device=torch.device("cpu"),
        num_inference_steps=steps,
        acceleration=defaults.acceleration,
        precision=defaults.precision,
    )
    c = policy.config
    rng = np.random.default_rng(0)
    h, w = c.image_size
    obs = {
        OBS_IMAGES: rng.integers(0, 256, (1, c.n_obs_steps, c.n_cameras, 3, h, w)).astype(
            np.uint8
        ),
        OBS_STATE: rng.uniform(-1, 1, (1, c.n_obs_steps, c.state_dim)).astype(np.float32),
    }
    times = []
    for i in range(reps + 2):
        t0 = time.perf_counter()
        policy.predict_action_chunk(obs)
        if i >= 2:  # two warm-up chunks
            times.append(time.perf_counter() - t0)
    return {
        "latency_p50_ms": round(statistics.median(times) * 1e3, 2),
        "latency_p99_ms": round(percentile(times, 0.99) * 1e3, 2),
        "latency_reps": reps,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="reach,pick_place")
    parser.add_argument("--steps", default="10,8,6,4,2")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=None, help="default: per task")
    parser.add_argument("--threads", type=int, default=1, help="for the latency figures")
    parser.add_argument("--latency-reps", type=int, default=30)
    parser.add_argument("--out", default=f"steps_sweep_{time.strftime('%Y-%m-%d')}")
    parser.add_argument(
        "--latency-only", action="store_true", help="only the chunk latency per step count"
    )
    args = parser.parse_args()
    out = REPO / "bench" / "results" / args.out
    out.mkdir(parents=True, exist_ok=True)
    print(
        json.dumps({**machine_line(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}),
        flush=True,
    )
    for task in args.tasks.split(","):
        latency_ms = args.latency_ms if args.latency_ms is not None else LATENCY_MS[task]
        for steps in (int(s) for s in args.steps.split(",")):
            if args.latency_only:
                load0 = os.getloadavg()[0]
                row = {"task": task, "steps": steps}
                row.update(chunk_latency(task, steps, args.threads, args.latency_reps))
                row["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                print(json.dumps(row), flush=True)
                continue
            jsonl = out / f"{task}_ddim{steps}.jsonl"
            cmd = [sys.executable, "-m", "diffusion_policy_node.eval.rollout", "--task", task]
            cmd += ["--episodes", str(args.episodes), "--seed", str(args.seed)]
            cmd += ["--latency-ms", str(latency_ms), "--param", f"num_inference_steps={steps}"]
            cmd += ["--jsonl", str(jsonl.relative_to(REPO))]
            load0 = os.getloadavg()[0]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
            summary = json.loads(proc.stdout.strip().splitlines()[-1])
            row = {
                "task": task,
                "steps": steps,
                "episodes": summary["episodes"],
                "successes": summary["successes"],
                "success_rate": summary["success_rate"],
                "collisions": summary["collisions"],
                "timeouts": summary["timeouts"],
                "seeds": summary["seeds"],
                "simulated_latency_ms": latency_ms,
                "jerk_ratio": summary.get("jerk_ratio"),
                "rollout_wall_s": summary["wall_s"],
                "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
                **chunk_latency(task, steps, args.threads, args.latency_reps),
                "command": " ".join(["python", *cmd[1:]]),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
