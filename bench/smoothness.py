"""Smoothness and success of the closed loop for each chunk blend mode under inference delay.

For every (trajectory points, blend mode, injected delay) the bench runs `dp-eval` on the same
held-out seeds (the bundled checkpoint unless --checkpoint) with
`trajectory_derivatives:=POINTS`, `blend_mode:=MODE` and `inference_delay_ms:=D` (an artificial
delay added to every inference, on top of the real latency), and reads from its summary what
the simulated joint_trajectory_controller actually executed (runtime/trajectory_follower.py,
sampled at 100 Hz, eval/smoothness.py): the mean |jerk| at chunk boundaries and within chunks,
their ratio, the largest joint acceleration, and the success rate, plus the policy node's
overruns and dry ticks. POINTS: accelerations (quintic splines in the controller), velocities
(cubic) or none (positions only: linear). One JSON line per case, then a Markdown table and a
PNG (`--out`/smoothness.png).

    .venv/bin/python bench/smoothness.py                                # 3 modes x 4 delays
    .venv/bin/python bench/smoothness.py --modes inpaint --delays 0,300 --episodes 5
    .venv/bin/python bench/smoothness.py --sim-time --latency-ms 120 --episodes 20
    .venv/bin/python bench/smoothness.py --points accelerations,none --modes inpaint --delays 0

With --sim-time every case runs on simulated time instead (eval/rollout.py: the node's
controller and the simulation in one loop, each inference taking --latency-ms + the delay):
seeded and repeatable whatever the CPU's speed, without DDS or CPU contention.

The first line names the CPU (inference latency, and so the effective delay, depends on it).
Runs are in real time over DDS: expect episode-to-episode variation; quote several seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

try:  # run as a script: bench/ is on sys.path
    from _common import cpu_model
except ImportError:  # imported as bench.smoothness
    from bench._common import cpu_model

KEYS = (
    "success_rate",
    "jerk_ratio",
    "jerk_boundary_mean",
    "jerk_within_mean",
    "max_acc",
    "overruns",
    "dry_ticks",
    "inference_latency_p50_ms",
    "collisions",
    "timeouts",
)


def _rollout_command(
    args: argparse.Namespace, mode: str, delay: int, out: Path, points: str
) -> list[str]:
    """The same case on simulated time (eval/rollout.py): no DDS, latency simulated."""
    out.mkdir(parents=True, exist_ok=True)
    return [
        sys.executable, "-m", "diffusion_policy_node.eval.rollout",
        "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--inference-delay-ms", str(delay), "--jsonl", str(out / "episodes.jsonl"),
        "--param", f"blend_mode={mode}", "--task", args.task,
        "--param", f"trajectory_derivatives={points}",
        *(["--latency-ms", str(args.latency_ms)] if args.latency_ms is not None else []),
        *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
        *(a for p in args.param for a in ("--param", p)),
    ]  # fmt: skip


def run_case(
    args: argparse.Namespace, mode: str, delay: int, out: Path, points: str
) -> dict[str, Any]:
    if args.sim_time:
        cmd = _rollout_command(args, mode, delay, out, points)
    else:
        cmd = _dp_eval_command(args, mode, delay, out, points)
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", "88")
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    summary = json.loads(lines[-1])
    row = {"points": points, "mode": mode, "delay_ms": delay, "episodes": summary["episodes"]}
    row.update({k: summary.get(k) for k in KEYS})
    row["wall_s"] = round(time.monotonic() - t0, 1)
    return row


def _dp_eval_command(
    args: argparse.Namespace, mode: str, delay: int, out: Path, points: str
) -> list[str]:
    return [
        str(Path(sys.executable).with_name("dp-eval")),
        "--episodes", str(args.episodes), "--seed", str(args.seed),
        "--video-episodes", "0", "--out", str(out), "--task", args.task,
        "--policy-param", f"blend_mode:={mode}",
        "--policy-param", f"inference_delay_ms:={delay}",
        "--policy-param", f"trajectory_derivatives:={points}",
        *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
        *(a for p in args.param for a in ("--policy-param", p)),
    ]  # fmt: skip


def table(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, nd: int = 2) -> str:
        return "—" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v))

    lines = [
        "| points | blend | delay ms | success | jerk boundary/within | boundary | within "
        "| max acc | overruns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['points']} | {r['mode']} | {r['delay_ms']} | {f(r['success_rate'])} "
            f"| {f(r['jerk_ratio'])} "
            f"| {f(r['jerk_boundary_mean'], 1)} | {f(r['jerk_within_mean'], 1)} "
            f"| {f(r['max_acc'], 1)} | {f(r['overruns'])} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    from diffusion_policy_node.train.plots import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for key in dict.fromkeys((r["points"], r["mode"]) for r in rows):
        mine = [r for r in rows if (r["points"], r["mode"]) == key]
        delays = [r["delay_ms"] for r in mine]
        label = f"{key[1]}, points: {key[0]}"
        axes[0].plot(delays, [r["jerk_ratio"] or float("nan") for r in mine], "o-", label=label)
        axes[1].plot(delays, [r["success_rate"] for r in mine], "o-", label=label)
    axes[0].axhline(1.0, color="grey", lw=0.5)
    axes[0].set(xlabel="injected inference delay (ms)", ylabel="jerk at boundaries / within")
    axes[1].set(xlabel="injected inference delay (ms)", ylabel="success rate", ylim=(0, 1.05))
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the bundled one)")
    parser.add_argument("--task", choices=("reach", "pick_place"), default="reach")
    parser.add_argument("--modes", default="replace,ensemble,inpaint")
    parser.add_argument(
        "--points",
        default="accelerations",
        help="what the JointTrajectory points carry (policy_node trajectory_derivatives), "
        "comma-separated: accelerations,velocities,none",
    )
    parser.add_argument("--delays", default="0,100,300,600", help="injected delays, ms")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--out", default="runs/bench-smoothness")
    parser.add_argument(
        "--param", action="append", default=[], help="extra policy_node NAME:=VALUE"
    )
    parser.add_argument(
        "--sim-time",
        action="store_true",
        help="run each case with eval/rollout.py (controller + sim on simulated time, the "
        "latency simulated: seeded, repeatable, no DDS) instead of dp-eval",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=None,
        help="--sim-time: the simulated inference latency before the injected delay "
        "(default: each inference's measured compute time)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    backend = "sim-time rollout" if args.sim_time else "dp-eval over DDS, real time"
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "backend": backend}))
    rows = []
    points_list = args.points.split(",")
    for points in points_list:
        for delay in (int(d) for d in args.delays.split(",")):
            for mode in args.modes.split(","):
                row = run_case(args, mode, delay, out / f"{points}_{mode}_{delay}ms", points)
                rows.append(row)
                print(json.dumps(row), flush=True)
    rows.sort(
        key=lambda r: (
            points_list.index(r["points"]),
            args.modes.split(",").index(r["mode"]),
            r["delay_ms"],
        )
    )
    print(table(rows))
    plot(rows, out / "smoothness.png")
    print(json.dumps({"png": str(out / "smoothness.png")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
