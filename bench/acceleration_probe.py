"""Where a chunk's time goes, and what the speed-ups not in the product would give.

For one config (random weights, batch 1, DDIM 10, the bench's PushT shapes) the probe times the
observation encoder and the denoising loop separately, medians of `--reps`, for:

  eager               acceleration none, fp32
  jit                 acceleration jit, fp32 (policy_node's default where auto resolves to fp32)
  jit-bf16-encoder    acceleration jit, precision bf16-encoder: the camera encoders traced in
                      bf16 and channels-last, the ε-network fp32 (policy_node's default where
                      auto resolves to it: CPUs with AMX, small ε-networks)
  compile             torch.compile (Inductor, freezing + weight prepacking on) of the packed
                      trunk and of each camera encoder, fp32: compile time printed too
  encoder-cl          jit, plus the fp32 camera encoder traced in channels-last memory format
  compile-bf16-encoder  compile, with the camera encoders in bf16, channels-last

and the largest |difference| of the chunk from eager's (same noise). `jit` and
`jit-bf16-encoder` are in the product; the others are not (figures: docs/benchmarks.md).

    .venv/bin/python bench/acceleration_probe.py --config small
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

try:  # run as a script: bench/ is on sys.path
    from _common import machine_line
    from inference_latency import _policy_config
except ImportError:  # imported as bench.acceleration_probe
    from bench._common import machine_line
    from bench.inference_latency import _policy_config

from diffusion_policy_node.policy.accel.kernels import median_s
from diffusion_policy_node.policy.accel.trace import TrunkModule, tracing_warnings_filtered
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.modeling import DiffusionPolicy


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    return round(median_s(fn, reps, warmup=3) * 1e3, 2)


def _trace_encoders(policy: DiffusionPolicy, convert: Callable[[torch.nn.Module], object]) -> None:
    """Camera runners traced after `convert(encoder)`, fed what `convert` expects."""
    c = policy.config
    h, w = c.crop_shape or c.image_size
    runners = []
    with torch.no_grad(), tracing_warnings_filtered():
        for enc in policy.obs_encoder.encoders:
            enc2, to_input = convert(copy.deepcopy(enc))
            traced = torch.jit.freeze(torch.jit.trace(enc2, (to_input(torch.rand(1, 3, h, w)),)))
            runners.append(lambda x, f=traced, g=to_input: f(g(x)).float())
    policy.obs_encoder.camera_runners = runners


def _compile(policy: DiffusionPolicy) -> None:
    import torch._inductor.config as inductor

    inductor.freezing = True
    inductor.cpp.weight_prepack = True
    policy.enable_acceleration("jit")  # the packed (matrix-product) trunk layout
    trunk = torch.compile(TrunkModule(policy.network).eval(), dynamic=False)

    def step(sample, cache, k):
        return trunk(sample, [t for pair in cache.per_step[k] for t in pair])

    policy._frozen_step = step
    runners = []
    for enc in policy.obs_encoder.encoders:
        if next(enc.parameters()).dtype == torch.bfloat16:
            enc.to(memory_format=torch.channels_last)
        compiled = torch.compile(enc, dynamic=False)
        runners.append(lambda x, f=compiled: f(x.contiguous(memory_format=_layout(f))))
    policy.obs_encoder.camera_runners = runners


def _layout(compiled) -> torch.memory_format:
    weight = next(compiled.parameters())
    return torch.channels_last if weight.dtype == torch.bfloat16 else torch.contiguous_format


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small", choices=("small", "paper"))
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", default="", help="comma-separated subset (default: all)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(machine_line()), flush=True)
    config = _policy_config(args.config)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config).eval()
    policy.set_inference("ddim", 10)
    rng = np.random.default_rng(0)
    h, w = config.image_size
    obs = {
        OBS_IMAGES: torch.from_numpy(
            rng.integers(0, 256, (1, config.n_obs_steps, config.n_cameras, 3, h, w)).astype(
                np.uint8
            )
        ),
        OBS_STATE: torch.from_numpy(
            rng.uniform(-1, 1, (1, config.n_obs_steps, config.state_dim)).astype(np.float32)
        ),
    }

    def chunk() -> torch.Tensor:
        policy.seed(0)
        with torch.inference_mode():
            return policy.predict_action_chunk(obs)

    reference = None
    fp32, bf16_encoder = (torch.float32, torch.float32), (torch.float32, torch.bfloat16)
    cases: list[tuple[str, tuple[torch.dtype, torch.dtype], Callable[[], None]]] = [
        ("eager", fp32, lambda: policy.enable_acceleration("none")),
        ("jit", fp32, lambda: policy.enable_acceleration("jit")),
        ("compile", fp32, lambda: _compile(policy)),
        ("encoder-cl", fp32, lambda: _trace_encoders(policy, _channels_last)),
        # Last: rounding the encoder to bf16 is not undone by converting it back.
        ("jit-bf16-encoder", bf16_encoder, lambda: policy.enable_acceleration("jit")),
        ("compile-bf16-encoder", bf16_encoder, lambda: _compile(policy)),
    ]
    wanted = set(filter(None, args.cases.split(",")))
    for name, (network_dtype, encoder_dtype), setup in cases:
        if wanted and name not in wanted and name != "eager":  # eager: the reference chunk
            continue
        policy.set_precision(network_dtype, encoder_dtype=encoder_dtype)
        if name.startswith("encoder"):
            policy.enable_acceleration("jit")
        t0 = time.perf_counter()
        setup()
        out = chunk()  # compiles, for `compile`
        setup_s = time.perf_counter() - t0
        reference = out if reference is None else reference
        with torch.inference_mode():
            cond = policy.encode_observations(obs)
            encode = _median_ms(lambda: policy.encode_observations(obs), args.reps)
            sample = _median_ms(lambda c=cond: policy.sample_actions(c), args.reps)
        total = _median_ms(chunk, args.reps)
        row = {
            "case": name,
            "config": args.config,
            "chunk_ms": total,
            "encode_ms": encode,
            "denoise_ms": sample,
            "setup_s": round(setup_s, 1),
            "max_abs_diff_vs_eager": float((out - reference).abs().max()),
        }
        print(json.dumps(row), flush=True)
    return 0


def _channels_last(enc: torch.nn.Module) -> tuple[torch.nn.Module, Callable]:
    return enc.to(memory_format=torch.channels_last), lambda x: x.contiguous(
        memory_format=torch.channels_last
    )


if __name__ == "__main__":
    sys.exit(main())
