"""Training throughput (samples/s) of the small and paper presets, data loading included.

Builds a cache from a generated demonstration bag (bench/ingest.py's writer: 640x480 rgb8 at
30 Hz, resized to 96x96), then per preset and run:
  - mode "loop": the real `Trainer` loop (DataLoader from the memory-mapped cache, uint8 images
    moved to the device and cropped there, DDPM loss, AdamW, LR schedule, EMA), timed from the
    metrics it logs after `--warmup` steps; checkpoint writing is left out;
  - mode "model": the same step on one batch held in memory (no data loading), comparable to
    the reference figure, which was measured that way.
The peer — LeRobot 0.3.2's DiffusionPolicy, same preset widths, same batch, in its own venv
(bench/peer_lerobot.py, `make bench-peer`) — runs in a child process and is timed between our
runs (ours run r, then the peer for as many steps, then ours run r+1, ...), so both see the same
machine load. The peer trains on one in-memory batch (forward, backward, grad-clip, Adam; no
data loading, its best case); ours is timed in both modes, so `ratio_to_peer` of mode "loop"
compares our training with data loading against the peer's without.
One JSON line for the machine (CPU model), then one per (preset, mode): samples/s as the median
over all timed steps of all runs (`--runs` x `--steps`), per-run medians, the peer's figure and
the ratio from this run (or "peer not measured" without the peer venv), the 1-minute load
average before/after (the machine may be shared), the CPU seconds per step and the samples/s
that CPU work allows on idle cores (`cpu_bound_samples_per_s`), and `busy`: the CPU-bound
neighbour processes running meanwhile (`--busy`).

    .venv/bin/python bench/train_throughput.py                        # small + paper, CPU
    .venv/bin/python bench/train_throughput.py --configs small --device cuda --runs 3
    .venv/bin/python bench/train_throughput.py --configs small --profile  # one step's op table
    .venv/bin/python bench/train_throughput.py --configs small --modes model --busy 1 --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

# The package sets OpenMP's passive wait (cpu_threads.py), which must be in the environment
# before torch loads the OpenMP runtime, as in dp-train.
import diffusion_policy_node  # noqa: F401

# isort: split
import torch
import yaml

from diffusion_policy_node.cpu_threads import added_to_environ, train_threads
from diffusion_policy_node.data.cache import ensure_cache, open_cache
from diffusion_policy_node.data.sampler import WindowDataset
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.train.config import RunConfig, TrainConfig
from diffusion_policy_node.train.device import resolve_device, tune_cpu_malloc
from diffusion_policy_node.train.plots import read_metrics
from diffusion_policy_node.train.trainer import Trainer

try:  # run as a script: bench/ is on sys.path
    import _common as common
    import ingest
except ImportError:  # imported as bench.train_throughput
    from bench import _common as common
    from bench import ingest

REPO = Path(__file__).resolve().parents[1]
DERIVED = ("camera_topics", "image_size", "dt", "n_obs_steps", "horizon", "n_action_steps")


class _NoCheckpointTrainer(Trainer):
    """The real loop without writing checkpoints or training states (GBs for the paper preset;
    not a training cost per step); metrics records carry the process CPU time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        files = self.files
        append = files.append_metrics
        files.save_state = lambda *a, **k: None  # type: ignore[method-assign]
        files.save_policy = lambda *a, **k: None  # type: ignore[method-assign]
        files.append_metrics = lambda record: append(  # type: ignore[method-assign]
            {**record, "cpu_time": time.process_time()}
        )


def run_config(preset: str, args: argparse.Namespace, steps: int) -> RunConfig:
    doc = yaml.safe_load((REPO / "config" / "policy" / f"{preset}.yaml").read_text())
    joints = ("joint1", "joint2") if preset == "paper" else ("joint1", "joint2", "joint3")
    data = ingest.data_config(joints)
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
) -> tuple[list[float], float]:
    """(wall seconds of each timed step, main-process CPU seconds per step) of the real
    training loop."""
    steps = args.warmup + args.steps
    cfg = run_config(preset, args, steps)
    out = args.work / f"run_{preset}_{run}"
    _NoCheckpointTrainer(cfg, [bag], out, progress=False).fit()
    records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    timed = records[args.warmup - 1 :]
    step_s = [b["time"] - a["time"] for a, b in itertools.pairwise(timed)]
    first, last = timed[0], timed[-1]
    return step_s, (last["cpu_time"] - first["cpu_time"]) / args.steps


def model_samples_per_s(
    preset: str, args: argparse.Namespace, run: int
) -> tuple[list[float], float]:
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
    cpu = time.process_time()
    step_s = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_s.append(time.perf_counter() - start)
    return step_s, (time.process_time() - cpu) / args.steps


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
    parser.add_argument("--steps", type=int, default=None, help="timed steps (small 6, paper 4)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)  # x steps: >= 10 timed steps
    parser.add_argument("--num-workers", type=int, default=None, help="default: auto")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: dp-train's rule)"
    )
    parser.add_argument(
        "--busy",
        default="0",
        help="N: idle and then with N CPU-bound neighbour processes running, in one run; or a "
        "comma list of neighbour counts",
    )
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
    torch.set_num_threads(train_threads(args.threads))  # as dp-train does
    levels = common.busy_levels(args.busy)
    print(json.dumps(common.machine_line()), flush=True)
    steps_arg = args.steps
    with tempfile.TemporaryDirectory(prefix="dp_train_bench_") as tmp:
        args.work = Path(tmp)
        bag = args.work / "demo"
        ingest.write_demo_bag(bag, seconds=args.bag_seconds)
        for preset in args.configs:
            cfg = run_config(preset, args, 1)
            ensure_cache(bag, cfg.data, cfg.train.cache_dir)
            if args.profile:
                profile_step(preset, args)
                continue
            args.steps = steps_arg or (4 if preset == "paper" else 6)
            device_is_cpu = resolve_device(args.device).type == "cpu"
            peer = start_peer(cfg, args) if device_is_cpu else None
            try:
                for busy in levels:
                    for mode in args.modes:
                        with common.Neighbours(busy):
                            row = measure(preset, mode, args, bag, peer)
                        print(json.dumps({**row, "busy": busy}), flush=True)
            finally:
                if peer is not None:
                    peer.close()


def start_peer(cfg: RunConfig, args: argparse.Namespace) -> common.Child | None:
    exe = common.peer_python()
    if exe is None:
        return None
    p = cfg.policy
    cmd = [
        str(exe),
        str(common.PEER_SCRIPT),
        "--mode",
        "train",
        "--batch-size",
        str(args.batch_size),
    ]
    cmd += ["--down-dims", ",".join(map(str, p.down_dims)), "--state-dim", str(p.state_dim)]
    cmd += ["--action-dim", str(p.action_dim), "--threads", str(torch.get_num_threads())]
    # The peer runs as LeRobot does out of the box: without the OpenMP settings our package
    # adds to the environment (cpu_threads.py).
    return common.Child("peer", cmd, env={key: None for key in added_to_environ()})


def measure(
    preset: str, mode: str, args: argparse.Namespace, bag: Path, peer: common.Child | None
) -> dict[str, Any]:
    """`--runs` runs of ours in `mode`, each followed by as many peer steps: one JSON row."""
    runs: list[list[float]] = []
    peer_s: list[float] = []
    cpu_s = []
    load_before = os.getloadavg()[0]
    for run in range(args.runs):
        if mode == "loop":
            step_s, cpu = loop_samples_per_s(preset, args, bag, run)
        else:
            step_s, cpu = model_samples_per_s(preset, args, run)
        runs.append(step_s)
        cpu_s.append(cpu)
        if peer is not None:
            peer_s += peer.request(op="run", n=args.steps)["times"]
    all_s = [t for r in runs for t in r]
    sps = args.batch_size / statistics.median(all_s)
    # What the CPU work per step allows on otherwise idle cores (an estimate that is less
    # sensitive to other load than wall time; main process only).
    cpu_bound = args.batch_size * torch.get_num_threads() / statistics.median(cpu_s)
    row: dict[str, Any] = {
        "bench": "train_throughput",
        "config": preset,
        "mode": mode,
        "data_loading": mode == "loop",
        "device": str(resolve_device(args.device)),
        "batch_size": args.batch_size,
        "samples_per_s": round(sps, 2),
        "steps_timed": len(all_s),
        "runs": [round(args.batch_size / statistics.median(r), 2) for r in runs],
    }
    if peer is not None:
        peer_sps = args.batch_size / statistics.median(peer_s)
        row.update(
            peer_samples_per_s=round(peer_sps, 2),
            peer_steps_timed=len(peer_s),
            peer_data_loading=False,
            peer_torch=peer.info["torch"],
            ratio_to_peer=round(sps / peer_sps, 2),
        )
    else:
        row["peer"] = common.PEER_MISSING
    row.update(
        cpu_s_per_step=round(statistics.median(cpu_s), 3),
        cpu_bound_samples_per_s=round(cpu_bound, 2)
        if resolve_device(args.device).type == "cpu"
        else None,
        load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)],
        threads=torch.get_num_threads(),
        num_workers="auto" if args.num_workers is None else args.num_workers,
        channels_last=args.channels_last,
        mixed_precision=args.mixed_precision,
        malloc_tuned=not args.default_malloc,
    )
    return row


if __name__ == "__main__":
    main()
