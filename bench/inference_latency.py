"""Chunk latency of DiffusionPolicy: observation encoding + all denoising steps, batch 1.

One JSON line per case: config (small|paper), scheduler, steps, device, dtype, p50_ms, p90_ms,
params, peak_rss_mib (and peak_cuda_mib on CUDA), plus the reference figure and our speed-up
where the issue gives one. Each config runs in its own subprocess so peak memory is per config.

Memory floor: every denoising step reads all of the U-Net's weights, so `unet_read_ms` (U-Net
bytes over `read_gbs`, the streaming-read bandwidth of summing a 256 MiB tensor) times `steps`
is a lower bound for the denoising loop on this machine: `floor_ms`. Measured here, the paper
config runs at ~4x that floor: at batch 1 and 16/8/4 time steps its convolutions are skinny
matrix products (all of them run as unfold/fold + GEMM with `--accel jit`), which MKL executes
well below both the bandwidth and the arithmetic peak.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = [("ddim", 1), ("ddim", 4), ("ddim", 10), ("ddim", 16), ("ddpm", 100)]
# Seconds per chunk of a widely used open-source implementation of the same architecture, same
# configuration, on a 2-core machine of this kind with 2 torch threads (issue 3).
REFERENCE_S = {
    ("paper", "ddpm", 100): 19.1,
    ("paper", "ddim", 10): 1.90,
    ("small", "ddpm", 100): 0.68,
    ("small", "ddim", 10): 0.075,
}


def run_config(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    import yaml

    from diffusion_policy_node.policy.config import PolicyConfig
    from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
    from diffusion_policy_node.policy.modeling import DiffusionPolicy

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = yaml.safe_load((REPO / "config" / "policy" / f"{args.config}.yaml").read_text())
    if args.config == "paper":
        data.update(state_dim=2, action_dim=2)  # the benchmark setting
    config = PolicyConfig.from_dict(data, where=args.config)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).to(device).eval()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    policy.set_precision(dtype)
    params = sum(p.numel() for p in policy.parameters())
    rng = np.random.default_rng(0)
    h, w = config.image_size
    obs = {
        OBS_IMAGES: rng.integers(
            0, 256, (1, config.n_obs_steps, config.n_cameras, 3, h, w)
        ).astype(np.uint8),
        OBS_STATE: rng.uniform(-1, 1, (1, config.n_obs_steps, config.state_dim)).astype(
            np.float32
        ),
    }

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    unet_bytes = sum(p.numel() * p.element_size() for p in policy.network.parameters())
    # Streaming-read bandwidth: sum a 256 MiB buffer (larger than any cache) a few times.
    buffer = torch.ones(64 * 2**20, device=device)
    reads = []
    with torch.inference_mode():
        for _ in range(5):
            t0 = time.perf_counter()
            buffer.sum()
            sync()
            reads.append(time.perf_counter() - t0)
    read_gbs = buffer.numel() * buffer.element_size() / statistics.median(reads) / 1e9
    del buffer
    unet_read_s = unet_bytes / (read_gbs * 1e9)

    for scheduler, steps in CASES:
        if args.cases and f"{scheduler}{steps}" not in args.cases.split(","):
            continue
        policy.set_inference(scheduler, steps)
        if args.accel:
            policy.enable_acceleration(args.accel)  # re-capture for this sampler
        # Warm-up (allocator, one-time kernels, graph capture).
        for _ in range(2):
            policy.predict_action_chunk(obs)
        sync()
        times: list[float] = []
        budget_end = time.perf_counter() + args.budget_s
        while len(times) < args.reps and (len(times) < 3 or time.perf_counter() < budget_end):
            t0 = time.perf_counter()
            policy.predict_action_chunk(obs)
            sync()
            times.append(time.perf_counter() - t0)
        times.sort()
        p50 = statistics.median(times)
        p90 = times[min(len(times) - 1, round(0.9 * (len(times) - 1)))]
        row = {
            "config": args.config,
            "scheduler": scheduler,
            "steps": steps,
            "device": device.type,
            "dtype": args.dtype,
            "accel": args.accel or "none",
            "threads": torch.get_num_threads(),
            "reps": len(times),
            "p50_ms": round(p50 * 1e3, 2),
            "p90_ms": round(p90 * 1e3, 2),
            "params": params,
            "unet_mib": round(unet_bytes / 2**20, 1),
            "read_gbs": round(read_gbs, 1),
            "unet_read_ms": round(unet_read_s * 1e3, 2),
            "floor_ms": round(steps * unet_read_s * 1e3, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if device.type == "cuda":
            row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        ref = REFERENCE_S.get((args.config, scheduler, steps))
        if ref is not None:
            row["reference_ms"] = ref * 1e3
            row["speedup_vs_reference"] = round(ref / p50, 2)
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,paper")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--accel", default="", choices=["", "none", "jit", "cudagraph"])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--budget-s", type=float, default=20.0, help="per case, after 3 reps")
    parser.add_argument("--cases", default="", help="e.g. ddim10,ddpm100 (default: all)")
    args = parser.parse_args()
    if args.config:
        run_config(args)
        return
    for config in args.configs.split(","):
        cmd = [sys.executable, __file__, "--config", config]
        for flag in ("device", "dtype", "accel", "threads", "reps", "budget_s", "cases"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
