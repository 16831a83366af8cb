"""Inference precision: which dtype the camera encoders and the ε-network run in.

Named precisions (`PRECISIONS`): fp32; bf16 (encoders and ε-network); bf16-encoder (the camera
encoders in bf16, the ε-network in fp32); auto, which picks per part where bf16 pays:

- CUDA: bf16 for both.
- ε-network on a CPU that executes bf16 natively (AVX-512-BF16 or AMX): bf16 when the network
  is large enough for its batch-1 denoising step to be bound by reading the weights (bf16
  halves those bytes). Measured on an Intel Xeon with AVX-512-BF16 (no AMX), 2 threads,
  interleaved with LeRobot in one run (bench/inference_latency.py): the paper U-Net (960 MiB
  fp32) runs DDIM-10 ~1.6x faster in bf16 than in fp32, while the small preset (19 MiB; tiny
  GEMMs where oneDNN's bf16 path costs more per call than fp32's) runs ~1.2-1.3x slower. Hence
  the size rule, `BF16_MIN_WEIGHT_BYTES`.
- Camera encoders (ResNet-18-GN, 44 MiB fp32 each) on a CPU with native bf16: bf16, traced in
  channels-last memory format (DiffusionPolicy.enable_acceleration). Measured with 2 threads,
  batch 2 at 84x84 (bench/acceleration_probe.py): on an Intel Xeon with AMX 6-8 ms against
  9-19 ms for the fp32 trace, the larger gain on a cold call; on an AMD EPYC (Zen 5) with
  AVX-512-BF16 and no AMX 5.4-5.9 ms against 8.1-9.4 ms.
- Elsewhere (AVX2-only CPUs emulate bf16): fp32.

The scheduler arithmetic, the initial noise and the normalizers stay float32 whatever is
chosen (`DiffusionPolicy._denoise`), and the encoder's features are cast to the ε-network's
dtype, so reduced precision only rounds the networks' outputs; tests/unit/test_precision.py
bounds what that does to a chunk of the bundled checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

# Keep in step with runtime/settings.py PRECISIONS (that module stays importable without torch).
PRECISIONS = ("auto", "fp32", "bf16", "bf16-encoder")
# /proc/cpuinfo flags of CPUs with native bf16 arithmetic.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# On CPU, auto uses bf16 only for ε-networks with at least this many fp32 weight bytes: beyond
# the caches, where each denoising step streams the weights from memory.
BF16_MIN_WEIGHT_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Precision:
    """The dtypes inference runs in: the camera encoders' and the ε-network's."""

    encoder: torch.dtype
    network: torch.dtype

    @property
    def name(self) -> str:
        """ "fp32", "bf16", "bf16-encoder", or the two dtypes for other combinations."""
        for name, value in NAMED.items():
            if value == self:
                return name
        return f"encoder {_dtype_name(self.encoder)}, network {_dtype_name(self.network)}"

    @property
    def is_fp32(self) -> bool:
        return self.encoder == self.network == torch.float32


FP32 = Precision(torch.float32, torch.float32)
NAMED = {
    "fp32": FP32,
    "bf16": Precision(torch.bfloat16, torch.bfloat16),
    "bf16-encoder": Precision(torch.bfloat16, torch.float32),
}


def _cpu_flags(cpuinfo: str | None) -> set[str] | None:
    """The first flags line of /proc/cpuinfo (or of `cpuinfo`), None where there is none."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return None


def _torch_sees_amx() -> bool:
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU runs bf16 natively: AVX-512-BF16 or AMX in /proc/cpuinfo's flags, or
    (where /proc/cpuinfo is unavailable) torch reporting an AMX-capable CPU."""
    flags = _cpu_flags(cpuinfo)
    if flags is None:
        return _torch_sees_amx()
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_precision(
    precision: str,
    device: str | torch.device,
    cpuinfo: str | None = None,
    weight_bytes: int | None = None,
) -> Precision:
    """The dtypes for `precision` (one of `PRECISIONS`) on `device`.

    auto: bf16 for both on CUDA. On a CPU with native bf16 (`cpu_has_native_bf16`): the camera
    encoders in bf16, and the ε-network too when its fp32 weights (`weight_bytes`, None:
    unknown, taken as large) reach `BF16_MIN_WEIGHT_BYTES`; float32 otherwise.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return NAMED[precision]
    device = torch.device(device)
    if device.type == "cuda":
        return NAMED["bf16"]
    if device.type != "cpu":
        return FP32
    if not cpu_has_native_bf16(cpuinfo):
        return FP32
    large = weight_bytes is None or weight_bytes >= BF16_MIN_WEIGHT_BYTES
    return Precision(torch.bfloat16, torch.bfloat16 if large else torch.float32)


def network_weight_bytes(policy: torch.nn.Module) -> int:
    """Bytes of the policy's ε-network weights at float32 (what `auto` sizes on)."""
    network = policy.network  # type: ignore[attr-defined]
    return sum(p.numel() * 4 for p in network.parameters())


def apply_precision(
    policy: torch.nn.Module, precision: str, device: str | torch.device
) -> Precision:
    """Resolve `precision` for `policy` on `device` (sized on its ε-network) and convert the
    policy to it; returns what was chosen. fp32 leaves the policy as it is."""
    chosen = resolve_precision(precision, device, weight_bytes=network_weight_bytes(policy))
    if not chosen.is_fp32:
        policy.set_precision(chosen.network, encoder_dtype=chosen.encoder)  # type: ignore[operator]
    return chosen


def precision_of(policy: torch.nn.Module) -> Precision:
    """The dtypes a policy's camera encoders and ε-network hold their weights in."""
    encoder = next(policy.obs_encoder.parameters()).dtype  # type: ignore[attr-defined]
    network = next(policy.network.parameters()).dtype  # type: ignore[attr-defined]
    return Precision(encoder, network)


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype))
