"""Chunk latency of DiffusionPolicy next to LeRobot's, measured in the same run, interleaved.

A chunk is observation encoding + all denoising steps at batch 1. Per config (small | paper) and
case (default DDIM 10) the bench starts one child process per implementation, builds the policy
there with random weights and the same input shapes, and then asks the children for one timed
chunk each in turn, `--reps` rounds (the order rotates per round), so every implementation sees
the same machine load. Before each request the machine idles `--settle-ms` (default 50), so the
previous child's OpenMP threads have stopped spin-waiting (bench/_common.interleave); 0 gives
back-to-back requests. Implementations:

  ours-default   what policy_node runs out of the box: acceleration `jit` (PolicyNodeParams'
                 default) and precision `auto` (policy/accel/precision.py: on a CPU with
                 AVX-512-BF16 or AMX, bf16 camera encoders, and a bf16 ε-network when it is
                 beyond the caches, e.g. paper; else fp32)
  ours-default-stream  ours-default with the streaming encoder (node parameter
                 `stream_encoder`): the window's frames were encoded as they arrived (untimed),
                 the request looks them up and runs the denoising trunk
  ours-default-spin  ours-default with libgomp's own wait policy (idle threads spin, as torch
                 runs out of the box; not in the default --impls)
  ours-default-mkl  the same without the oneDNN matrix products the trace picks per layer
                 (policy/accel/kernels.py: budget 0, every product on PyTorch's default kernel)
  ours-fp32      eager fp32 (acceleration none, precision fp32)
  ours-fp32-jit  fp32 with `jit`
  ours-bf16-jit  bf16 encoders and ε-network with `jit`
  peer           LeRobot 0.3.2's DiffusionPolicy in its own venv (bench/peer_lerobot.py, fp32,
                 its default `select_action` path); `make bench-peer` creates that venv.

Busy machine: `--busy N` measures every case idle and then with N CPU-bound neighbour processes
running (bench/_common.Neighbours), in one run; every row says `busy`. `--threads 1,2` runs each
implementation at each thread count and adds a row with each at its best (`threads: best`).

Output (JSON lines): the machine (CPU model, flags, date, load averages), one line per
implementation (p50/p90/p99 ms, reps, params, peak RSS of its process, busy), one line per
config, case, busy and thread setting with the peer's p50 over each of ours from this run —
or "peer not measured" when there is no peer venv. No figure is stored in this file.

Memory floor (ours): every denoising step reads all of the U-Net's weights, so `floor_ms` =
steps x U-Net bytes / streaming-read bandwidth (sum of a 256 MiB tensor) bounds the loop.

    .venv/bin/python bench/inference_latency.py                       # small + paper, DDIM 10
    .venv/bin/python bench/inference_latency.py --configs small --cases ddim10,ddpm100 --reps 20
    .venv/bin/python bench/inference_latency.py --impls ours-default,ours-default-stream,peer \
        --threads 1,2 --busy 1                    # idle and beside one busy process
    .venv/bin/python bench/inference_latency.py --lerobot-checkpoint PRETRAINED_MODEL \
        --impls ours-default,ours-fp32,peer     # the same weights in LeRobot and in ours
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

try:  # run as a script: bench/ is on sys.path
    import _common as common
except ImportError:  # imported as bench.inference_latency
    from bench import _common as common

from diffusion_policy_node.cpu_threads import added_to_environ, inference_threads

REPO = Path(__file__).resolve().parents[1]
# name -> (acceleration, precision, oneDNN budget MiB: None = kernels.ONEDNN_BUDGET_BYTES)
OURS = {
    "ours-default": ("jit", "auto", None),
    "ours-default-spin": ("jit", "auto", None),
    "ours-default-spin10k": ("jit", "auto", None),
    "ours-default-stream": ("jit", "auto", None),
    "ours-default-mkl": ("jit", "auto", 0),
    "ours-fp32": ("none", "fp32", None),
    "ours-fp32-jit": ("jit", "fp32", None),
    "ours-bf16-jit": ("jit", "bf16", None),
}
# OpenMP variants of ours-default (bench only): libgomp's own default wait (spin ~300000
# iterations after a parallel region, as torch runs out of the box) and a short spin.
SPIN = {"ours-default-spin": "300000", "ours-default-spin10k": "10000"}


DEFAULT_IMPLS = [n for n in OURS if n not in SPIN] + ["peer"]


def child_env(name: str) -> dict[str, str | None]:
    """The OpenMP environment of an implementation's child: ours as the package sets it
    (diffusion_policy_node/cpu_threads.py: passive wait), the peer with the OpenMP runtime's
    own defaults (idle threads spin), as torch runs out of the box."""
    if name.startswith("ours") and name not in SPIN:
        return {}
    env: dict[str, str | None] = {key: None for key in added_to_environ()}
    if name in SPIN:  # GOMP_SPINCOUNT wins over the wait policy our package adds
        env["GOMP_SPINCOUNT"] = SPIN[name]
    return env


def parse_threads(text: str) -> list[int]:
    """--threads: comma list of ints >= 1 or `default` (0 here): ours' rule, the peer's torch
    default."""
    out = []
    for token in text.split(","):
        if token == "default":
            out.append(0)
        elif token.isdigit() and int(token) >= 1:
            out.append(int(token))
        else:
            raise SystemExit(f"--threads {text!r}: expected ints >= 1 or 'default'")
    return out


def _policy_config(name: str):
    import yaml

    from diffusion_policy_node.policy.config import PolicyConfig

    data = yaml.safe_load((REPO / "config" / "policy" / f"{name}.yaml").read_text())
    data.update(state_dim=2, action_dim=2)  # the peer's PushT shapes, both configs
    return PolicyConfig.from_dict(data, where=name)


def child_ours(args: argparse.Namespace) -> None:
    """Benchmark child: our policy for one config, sampler and (acceleration, precision)."""
    import numpy as np
    import torch

    from diffusion_policy_node.policy.accel import kernels
    from diffusion_policy_node.policy.accel.packing import packed_kernels
    from diffusion_policy_node.policy.accel.precision import apply_precision
    from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
    from diffusion_policy_node.policy.modeling import DiffusionPolicy

    torch.set_num_threads(inference_threads(args.threads or None))
    if args.onednn_budget_mib is not None:
        kernels.ONEDNN_BUDGET_BYTES = int(args.onednn_budget_mib * 2**20)
    device = torch.device(args.device)
    if args.checkpoint:  # --lerobot-checkpoint: the imported weights, as policy_node loads them
        from diffusion_policy_node.policy.checkpoint import load_checkpoint

        policy = load_checkpoint(
            args.checkpoint, device, args.scheduler, args.steps, None, args.accel, args.precision
        )
        config = policy.config
        dtype_name = str(policy.network.dtype).removeprefix("torch.")
    else:
        config = _policy_config(args.config)
        torch.manual_seed(0)
        policy = DiffusionPolicy(config).to(device).eval()
        policy.set_inference(args.scheduler, args.steps)
        dtype_name = apply_precision(policy, args.precision, device).name
        policy.enable_acceleration(args.accel)
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

    frames = None
    if args.stream:  # the streaming encoder: the window's frames were encoded as they came
        from diffusion_policy_node.runtime.frame_features import FrameFeatureCache

        frames = FrameFeatureCache(policy, config.n_cameras)

    def run(n: int) -> dict:
        times, cpu = [], []
        for _ in range(n):
            request = obs
            if frames is not None:
                frames.clear()
                frames.features(obs[OBS_IMAGES])  # encoded ahead, not timed
            t0, c0 = time.perf_counter(), time.process_time()
            if frames is not None:
                request = frames.replace_images(obs)  # looks the frames up
            policy.predict_action_chunk(request)
            sync()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return {"times": times, "cpu": cpu}

    for _ in range(2):  # warm-up (allocator, one-time kernels, graph capture)
        run(1)
    unet_bytes = sum(p.numel() * p.element_size() for p in policy.network.parameters())
    buffer = torch.ones(64 * 2**20, device=device)  # 256 MiB, larger than any cache
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
    info = {
        "impl": "ours",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "accel": args.accel,
        "precision": args.precision,
        "dtype": dtype_name,
        "onednn_layers": sum(k.kernel == "onednn" for k in packed_kernels(policy.network)),
        "params": sum(p.numel() for p in policy.parameters()),
        "unet_mib": round(unet_bytes / 2**20, 1),
        "read_gbs": round(read_gbs, 1),
        "floor_ms": round(args.steps * unet_read_s * 1e3, 1),
    }
    common.serve(info, {"run": run})


def start_children(config: str, scheduler: str, steps: int, args) -> list[common.Child]:
    """One child per (implementation, thread setting); `child.impl`, `child.threads` (0: the
    implementation's default) say which."""
    children = []
    several = len(args.threads) > 1
    for threads in args.threads:
        suffix = f"@{threads or 'default'}" if several else ""
        for name, (accel, precision, budget_mib) in OURS.items():
            if name not in args.impls:
                continue
            cmd = [sys.executable, __file__, "--child", "--config", config]
            cmd += ["--scheduler", scheduler, "--steps", str(steps), "--accel", accel]
            cmd += ["--precision", precision, "--threads", str(threads)]
            if budget_mib is not None:
                cmd += ["--onednn-budget-mib", str(budget_mib)]
            if name == "ours-default-stream":
                cmd += ["--stream"]
            cmd += ["--device", args.device]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            child = common.Child(name + suffix, cmd, env=child_env(name))
            child.impl, child.threads = name, threads
            children.append(child)
        peer = common.peer_python()
        if peer is not None and "peer" in args.impls:
            cmd = [
                str(peer),
                str(common.PEER_SCRIPT),
                "--mode",
                "infer",
                "--threads",
                str(threads),
            ]
            if args.lerobot_checkpoint:  # the checkpoint's own config, sampler and steps
                cmd += ["--checkpoint", args.lerobot_checkpoint]
            else:
                data = _policy_config(config)
                cmd += ["--down-dims", ",".join(map(str, data.down_dims))]
                cmd += ["--scheduler", scheduler, "--steps", str(steps)]
                cmd += ["--state-dim", str(data.state_dim), "--action-dim", str(data.action_dim)]
            child = common.Child("peer" + suffix, cmd, env=child_env("peer"))
            child.impl, child.threads = "peer", threads
            children.append(child)
    return children


def ratio_row(base: dict, p50: dict, cpu50: dict) -> dict:
    """The summary of one (config, case, busy, threads): peer p50 over each of ours."""
    ratio = dict(base)
    if "peer" in p50:
        ratio["peer_p50_ms"] = p50["peer"]
        for name in OURS:
            if name in p50:
                ratio[f"speedup_{name}"] = round(p50["peer"] / p50[name], 2)
        # Process CPU seconds per chunk: the work, less sensitive to time slicing when
        # other processes load the cores (all threads' CPU time, spin-waits included).
        for name in OURS:
            if name in cpu50 and "peer" in cpu50:
                ratio[f"cpu_speedup_{name}"] = round(cpu50["peer"] / cpu50[name], 2)
    else:
        ratio["peer"] = common.PEER_MISSING
    return ratio


def _use_lerobot_checkpoint(args: argparse.Namespace) -> None:
    """Import --lerobot-checkpoint once (a temporary folder, removed at exit); every child of
    ours loads that, the peer the LeRobot folder; the case is the checkpoint's own sampler."""
    import atexit
    import shutil
    import tempfile

    from diffusion_policy_node.interop.lerobot_checkpoint import import_lerobot
    from diffusion_policy_node.policy.checkpoint import read_config

    tmp = tempfile.mkdtemp(prefix="lerobot_import_")
    atexit.register(shutil.rmtree, tmp, True)
    folder = import_lerobot(args.lerobot_checkpoint, Path(tmp) / "imported")
    config, _ = read_config(folder)
    args.checkpoint = str(folder)
    args.configs = "lerobot"
    args.cases = f"{config.noise_scheduler}{config.num_inference_steps}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,paper")
    parser.add_argument("--cases", default="ddim10", help="e.g. ddim10,ddpm100")
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--threads",
        default=str(min(2, os.cpu_count() or 1)),
        help="torch threads per child, a comma list (e.g. 1,2: every implementation at each, "
        "plus a best-of row); 'default': ours' rule (runtime/cpu_threads.py), the peer's torch "
        "default",
    )
    parser.add_argument(
        "--busy",
        default="0",
        help="N: measure idle and then with N CPU-bound neighbour processes running, in one "
        "run; or a comma list of neighbour counts",
    )
    parser.add_argument("--reps", type=int, default=12)
    parser.add_argument("--settle-ms", type=float, default=50.0)
    parser.add_argument(
        "--lerobot-checkpoint",
        help="a LeRobot DP pretrained_model: LeRobot runs it (select_action) and ours runs it "
        "imported by dp-import lerobot (its own sampler and step count; config 'lerobot')",
    )
    # child mode
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler", default="ddim", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--accel", default="jit", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--onednn-budget-mib", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.impls = args.impls.split(",")
    if args.child:
        args.threads = int(args.threads)
        child_ours(args)
        return
    args.threads = parse_threads(args.threads)
    levels = common.busy_levels(args.busy)
    if args.lerobot_checkpoint:
        _use_lerobot_checkpoint(args)
    print(json.dumps(common.machine_line()), flush=True)
    if common.peer_python() is None:
        print(
            json.dumps({"peer": common.PEER_MISSING, "why": "no peer venv; run make bench-peer"})
        )
    for config in args.configs.split(","):
        for case in args.cases.split(","):
            scheduler, steps = case[:4], int(case[4:])
            children = start_children(config, scheduler, steps, args)
            lines: list[dict] = []
            try:
                for busy in levels:
                    lines += measure(children, config, case, busy, args)
            finally:
                finals = {c.name: c.close() for c in children}
            for line in lines:  # the children's peak RSS is known once they are closed
                line.update(finals.get(line.pop("_child", None), {}))
                print(json.dumps(line), flush=True)


def measure(children: list[common.Child], config: str, case: str, busy: int, args) -> list[dict]:
    """Interleaved chunks of every child with `busy` neighbours running: the JSON lines (one
    per child, then the summaries)."""
    out: list[dict] = []
    with common.Neighbours(busy):
        load0 = os.getloadavg()[0]
        times, cpu = common.interleave(children, args.reps, settle_s=args.settle_ms / 1e3)
        load1 = os.getloadavg()[0]
    rows = {}
    for child in children:
        row = {"config": config, "case": case, "name": child.impl, "busy": busy, **child.info}
        row["threads_setting"] = child.threads or "default"
        row.update(common.summary_ms(times[child.name]))
        row["cpu_p50_ms"] = round(statistics.median(cpu[child.name]) * 1e3, 2)
        row["load_avg_1min"] = [round(load0, 2), round(load1, 2)]
        rows[child.name] = row
        out.append({**row, "_child": child.name})
    base = {"config": config, "case": case, "busy": busy}
    base.update(settle_ms=args.settle_ms, load_avg_1min=[round(load0, 2), round(load1, 2)])
    for threads in args.threads:
        mine = [r for c, r in zip(children, rows.values(), strict=True) if c.threads == threads]
        p50 = {r["name"]: r["p50_ms"] for r in mine}
        cpu50 = {r["name"]: r["cpu_p50_ms"] for r in mine}
        ratio = ratio_row({**base, "threads": threads or "default"}, p50, cpu50)
        for r in mine:
            if r["name"] in ("ours-default", "peer"):
                ratio[f"p99_ms_{r['name']}"] = r["p99_ms"]
        out.append(ratio)
    if len(args.threads) > 1:  # each implementation at its best thread setting
        best: dict[str, dict] = {}
        for r in rows.values():
            if r["name"] not in best or r["p50_ms"] < best[r["name"]]["p50_ms"]:
                best[r["name"]] = r
        p50 = {n: r["p50_ms"] for n, r in best.items()}
        cpu50 = {n: r["cpu_p50_ms"] for n, r in best.items()}
        ratio = ratio_row({**base, "threads": "best"}, p50, cpu50)
        ratio["best_threads"] = {n: r["threads_setting"] for n, r in best.items()}
        out.append(ratio)
    return out


if __name__ == "__main__":
    main()
