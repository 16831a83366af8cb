"""Inference precision: which dtype the encoder and ε-network run in.

`auto` picks bfloat16 where the hardware executes it natively — a CPU with AVX-512-BF16 or AMX
(bf16 dot products; half the weight bytes the memory-bound batch-1 U-Net has to read per step)
and CUDA — and float32 elsewhere (on AVX2-only CPUs bf16 is emulated and slower than fp32).
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
    precision: str, device: str | torch.device, cpuinfo: str | None = None
) -> torch.dtype:
    """The dtype for `precision` ("auto" | "fp32" | "bf16") on `device`.

    auto: bfloat16 on CUDA and on CPUs with native bf16 (`cpu_has_native_bf16`), else float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and cpu_has_native_bf16(cpuinfo):
        return torch.bfloat16
    return torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """ "fp32" / "bf16" for a dtype from `resolve_precision`."""
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    raise ValueError(f"no precision name for {dtype}")
