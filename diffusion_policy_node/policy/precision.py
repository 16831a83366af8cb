"""Inference precision: which dtype the encoder and ε-network run in.

`auto` picks bfloat16 where it pays: on CUDA, and on a CPU that executes bf16 natively (AVX-512-
BF16 or AMX) when the ε-network is large enough for its batch-1 denoising step to be bound by
reading the weights (bf16 halves those bytes). Measured on an Intel Xeon with AVX-512-BF16 (no
AMX), 2 threads, interleaved with LeRobot in one run (bench/inference_latency.py): the paper
U-Net (960 MiB fp32) runs DDIM-10 ~1.6x faster in bf16 than in fp32, while the small preset
(19 MiB, cache-resident; tiny GEMMs where oneDNN's bf16 path costs ~3x fp32's per call) runs
~1.3x slower. Hence the size rule: `BF16_MIN_WEIGHT_BYTES`. Elsewhere (AVX2-only CPUs emulate
bf16) auto is float32.
The scheduler arithmetic, the initial noise and the normalizers stay float32 whatever is
chosen (`DiffusionPolicy._denoise`), so reduced precision only rounds the network's output;
tests/unit/test_precision.py bounds what that does to a chunk of the bundled checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# /proc/cpuinfo flags of CPUs with native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# On CPU, auto uses bf16 only for ε-networks with at least this many fp32 weight bytes: beyond
# the caches, where each denoising step streams the weights from memory.
BF16_MIN_WEIGHT_BYTES = 64 * 2**20


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU runs bf16 natively: AVX-512-BF16 or AMX in /proc/cpuinfo's flags, or
    (where /proc/cpuinfo is unavailable) torch reporting an AMX-capable CPU."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            return any(flag in flags for flag in BF16_CPU_FLAGS)
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def resolve_precision(
    precision: str,
    device: str | torch.device,
    cpuinfo: str | None = None,
    weight_bytes: int | None = None,
) -> torch.dtype:
    """The dtype for `precision` ("auto" | "fp32" | "bf16") on `device`.

    auto: bfloat16 on CUDA; on a CPU with native bf16 (`cpu_has_native_bf16`) bfloat16 when the
    ε-network's fp32 weights (`weight_bytes`, None: unknown, taken as large) reach
    `BF16_MIN_WEIGHT_BYTES`; float32 otherwise.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_native_bf16(cpuinfo):
        large = weight_bytes is None or weight_bytes >= BF16_MIN_WEIGHT_BYTES
        return torch.bfloat16 if large else torch.float32
    return torch.float32


def network_weight_bytes(policy: torch.nn.Module) -> int:
    """Bytes of the policy's ε-network weights at float32 (what `auto` sizes on)."""
    network = policy.network  # type: ignore[attr-defined]
    return sum(p.numel() * 4 for p in network.parameters())


def precision_name(dtype: torch.dtype) -> str:
    """ "fp32" / "bf16" for a dtype from `resolve_precision`."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"no precision name for {dtype}")
