"""Training throughput (samples/s) of the small and paper presets, data loading included.

Builds a cache from a generated demonstration bag (bench/ingest.py's writer: 640x480 rgb8 at
30 Hz, resized to 96x96), then per preset and run:
  - mode "loop": the real `Trainer` loop (DataLoader from the memory-mapped cache, uint8 images
    moved to the device and cropped there, DDPM loss, AdamW, LR schedule, EMA), timed from the
    metrics it logs after `--warmup` steps; checkpoint writing is left out;
  - mode "model": the same step on one batch held in memory (no data loading), comparable to
    the reference figure, which was measured that way.
One JSON line per (preset, mode): median samples/s over --runs runs, the runs, the 1-minute
load average before/after (the machine may be shared), the CPU seconds per step and the
samples/s that CPU work allows on idle cores (`cpu_bound_samples_per_s`), and the ratio to
the reference (a widely used open-source implementation, same configs, this kind of 2-core
machine, without data loading: paper 4.6, small ~38 samples/s).

    .venv/bin/python bench/train_throughput.py                        # small + paper, CPU
    .venv/bin/python bench/train_throughput.py --configs small --device cuda --runs 3
    .venv/bin/python bench/train_throughput.py --configs small --profile  # one step's op table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from diffusion_policy_node.data.cache import ensure_cache, open_cache
from diffusion_policy_node.data.sampler import WindowDataset
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.train.config import RunConfig, TrainConfig
from diffusion_policy_node.train.device import resolve_device, tune_cpu_malloc
from diffusion_policy_node.train.plots import read_metrics
from diffusion_policy_node.train.trainer import Trainer

try:  # run as a script: bench/ is on sys.path
    from ingest import data_config, write_demo_bag
except ImportError:  # imported as bench.train_throughput
    from bench.ingest import data_config, write_demo_bag

REPO = Path(__file__).resolve().parents[1]
REFERENCE = {"paper": 4.6, "small": 38.0}
DERIVED = ("camera_topics", "image_size", "dt", "n_obs_steps", "horizon", "n_action_steps")


class _NoCheckpointTrainer(Trainer):
    """The real loop without writing checkpoints (GBs for the paper preset; not a training cost
    per step)."""

    def _checkpoint(self, step, ctx, last_loss) -> None:  # type: ignore[override]
        return None

    def _append_metrics(self, record: dict) -> None:
        super()._append_metrics({**record, "cpu_time": time.process_time()})


def run_config(preset: str, args: argparse.Namespace, steps: int) -> RunConfig:
    doc = yaml.safe_load((REPO / "config" / "policy" / f"{preset}.yaml").read_text())
    joints = ("joint1", "joint2") if preset == "paper" else ("joint1", "joint2", "joint3")
    data = data_config(joints)
    for key in (*DERIVED, "state_dim", "action_dim"):
        doc.pop(key, None)
    policy = PolicyConfig.from_dict(
        {
            **doc,
            **{k: getattr(data, k) for k in DERIVED},
            "joint_names": list(joints),
            "state_dim": len(joints),
            "action_dim": len(joints),
        }
    )
    train = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        warmup_steps=0,
        device=args.device,
        mixed_precision=args.mixed_precision,
        torch_threads=args.threads,
        channels_last=args.channels_last,
        num_workers=args.num_workers,
        val_fraction=0.0,
        checkpoint_every=10**9,
        log_every=1,
        cache_dir=str(args.work / f"cache_{preset}"),
    )
    return RunConfig(policy=policy, data=data, train=train)


def loop_samples_per_s(
    preset: str, args: argparse.Namespace, bag: Path, run: int
) -> tuple[float, float]:
    """(wall samples/s, main-process CPU seconds per step) of the real training loop."""
    steps = args.warmup + args.steps
    cfg = run_config(preset, args, steps)
    out = args.work / f"run_{preset}_{run}"
    _NoCheckpointTrainer(cfg, [bag], out, progress=False).fit()
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    first, last = records[args.warmup - 1], records[-1]
    wall = last["time"] - first["time"]
    return args.steps * args.batch_size / wall, (last["cpu_time"] - first["cpu_time"]) / args.steps


def model_samples_per_s(preset: str, args: argparse.Namespace, run: int) -> tuple[float, float]:
    """fwd + bwd + AdamW + EMA on one batch held on the device (no data loading)."""
    from diffusion_policy_node.policy.ema import EMAModel
    from diffusion_policy_node.policy.modeling import build_policy

    cfg = run_config(preset, args, 1)
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = open_cache(cfg.train.cache_dir)
    p = cfg.policy
    ds = WindowDataset(cache, p.n_obs_steps, p.horizon, p.n_action_steps)
    batch = torch.utils.data.default_collate([ds[i % len(ds)] for i in range(args.batch_size)])
    batch = {k: v.to(device) for k, v in batch.items()}
    torch.manual_seed(run)
    policy = build_policy(p).to(device).train()
    if args.channels_last:
        policy.obs_encoder.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4, fused=True)
    ema = EMAModel(policy)
    amp = args.mixed_precision == "bf16" or (
        args.mixed_precision == "auto" and device.type == "cuda"
    )

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = policy.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.step(policy)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return args.steps * args.batch_size / wall, (time.process_time() - cpu) / args.steps


def profile_step(preset: str, args: argparse.Namespace) -> None:
    """Print the op table of one training step (after a warm-up step)."""
    from torch.profiler import profile

    args.steps, args.warmup = 1, 1
    with profile() as prof:
        model_samples_per_s(preset, args, 0)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "paper"])
    parser.add_argument("--modes", nargs="+", default=["loop", "model"], choices=["loop", "model"])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (small 6, paper 3)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=None, help="default: auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16"])
    parser.add_argument("--bag-seconds", type=float, default=30.0)
    parser.add_argument("--profile", action="store_true", help="print one step's op table")
    parser.add_argument(
        "--default-malloc", action="store_true", help="skip dp-train's CPU allocator tuning"
    )
    args = parser.parse_args()
    if resolve_device(args.device).type == "cpu" and not args.default_malloc:
        tune_cpu_malloc()  # as dp-train does on CPU
    steps_arg = args.steps
    with tempfile.TemporaryDirectory(prefix="dp_train_bench_") as tmp:
        args.work = Path(tmp)
        bag = args.work / "demo"
        write_demo_bag(bag, seconds=args.bag_seconds)
        for preset in args.configs:
            cfg = run_config(preset, args, 1)
            ensure_cache(bag, cfg.data, cfg.train.cache_dir)
            if args.profile:
                profile_step(preset, args)
                continue
            args.steps = steps_arg or (3 if preset == "paper" else 6)
            device_is_cpu = resolve_device(args.device).type == "cpu"
            for mode in args.modes:
                runs, cpu_s = [], []
                load_before = os.getloadavg()[0]
                for run in range(args.runs):
                    if mode == "loop":
                        sps, cpu = loop_samples_per_s(preset, args, bag, run)
                    else:
                        sps, cpu = model_samples_per_s(preset, args, run)
                    runs.append(sps)
                    cpu_s.append(cpu)
                median = statistics.median(runs)
                # What the CPU work per step allows on otherwise idle cores (an estimate that
                # is less sensitive to other load than wall time; main process only).
                cpu_bound = args.batch_size * torch.get_num_threads() / statistics.median(cpu_s)
                print(
                    json.dumps(
                        {
                            "bench": "train_throughput",
                            "config": preset,
                            "mode": mode,
                            "data_loading": mode == "loop",
                            "device": str(resolve_device(args.device)),
                            "batch_size": args.batch_size,
                            "samples_per_s": round(median, 2),
                            "runs": [round(r, 2) for r in runs],
                            "reference_samples_per_s": REFERENCE.get(preset),
                            "ratio_to_reference": round(median / REFERENCE[preset], 2),
                            "cpu_s_per_step": round(statistics.median(cpu_s), 3),
                            "cpu_bound_samples_per_s": round(cpu_bound, 2)
                            if device_is_cpu
                            else None,
                            "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                            "threads": torch.get_num_threads(),
                            "num_workers": "auto"
                            if args.num_workers is None
                            else args.num_workers,
                            "channels_last": args.channels_last,
                            "mixed_precision": args.mixed_precision,
                            "malloc_tuned": not args.default_malloc,
                            "timed_steps": args.steps,
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
