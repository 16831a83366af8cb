"""Matrix-product kernels of the U-Net's packed inference layout (acceleration `jit`).

Every packed convolution of the trunk is one matrix product ``y = x·Wᵀ + b`` with a fixed
weight (`packing.packed_conv1d`). On a CPU, PyTorch runs an fp32 ``F.linear`` through MKL, and
which library is fastest for these skinny shapes depends on the CPU. Measured on an AMD EPYC
(Zen 5, AVX-512, 2 threads), per call: MKL 52 µs for the small preset's (4 x 1280)·(1280 x 256)
product against 22 µs for oneDNN with the weight reordered once; but oneDNN costs ~12 µs even
for the tiniest products, where MKL takes 3 µs. So `PackedLinear` times both on the layer's
real input once (`tuning`, run by `trace.TracedTrunk` before it traces)
and keeps the faster. The oneDNN kernel needs its own copy of the weight in oneDNN's blocked
layout, so it is only considered for weights up to `ONEDNN_MAX_WEIGHT_BYTES`, and the copies of
one network share `ONEDNN_BUDGET_BYTES`, given to the layers that save the most time per byte;
the default kernel reads a view of the parameter (no copy).

Both kernels compute the same product in float32 accumulation; they differ by rounding only
(tests/unit/test_kernels.py).
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import List, Optional, Union  # noqa: UP035  (TorchScript reads these annotations)

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest weight (bytes, in its own dtype) given a oneDNN copy: the small preset's largest is
# 1.25 MiB fp32; the paper preset's 1024- and 2048-channel convolutions (10-80 MiB) stay on the
# default kernel, so the copies never approach the size of the network.
ONEDNN_MAX_WEIGHT_BYTES = 8 * 2**20
# All oneDNN copies of one network together (the small preset's winners on that EPYC: 11 MiB).
ONEDNN_BUDGET_BYTES = 32 * 2**20
# Timing per candidate: warm-up calls, then the median of TUNE_REPS calls; oneDNN is kept only
# when it is faster by TUNE_MARGIN (one layer's choice must not flip on noise).
TUNE_WARMUP = 3
TUNE_REPS = 15
TUNE_MARGIN = 0.9
# The DeprecationWarning torch >= 2.10 raises for torch.jit.script / trace / freeze; what it
# means for us: trace.tracing_warnings_filtered.
TORCHSCRIPT_DEPRECATED = r"`torch\.jit\.\w+` is deprecated"


def _onednn_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:  # noqa: UP045
    """``x·Wᵀ + b`` by oneDNN with ``weight`` from ``torch.ops.mkldnn._reorder_linear_weight``.
    Scripted: the op's empty scalar list has a type the tracer cannot record on its own."""
    scalars: List[Optional[Union[int, float, complex]]] = []  # noqa: UP006, UP007, UP045
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", scalars, "")


# None in a PyTorch build without this oneDNN op (then every product stays on F.linear).
onednn_linear: Callable[[Tensor, Tensor, Tensor | None], Tensor] | None
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=TORCHSCRIPT_DEPRECATED, category=DeprecationWarning)
    try:
        onednn_linear = torch.jit.script(_onednn_linear)
    except (RuntimeError, AttributeError):
        onednn_linear = None


def onednn_supported(weight: Tensor) -> bool:
    """True when oneDNN can run `weight`'s product here: a CPU tensor in float32 or bfloat16,
    PyTorch built with oneDNN, and the weight within `ONEDNN_MAX_WEIGHT_BYTES`."""
    return (
        onednn_linear is not None
        and weight.device.type == "cpu"
        and weight.dtype in (torch.float32, torch.bfloat16)
        and torch.backends.mkldnn.is_available()
        and weight.numel() * weight.element_size() <= ONEDNN_MAX_WEIGHT_BYTES
    )


def median_s(fn: Callable[[], object], reps: int, warmup: int = TUNE_WARMUP) -> float:
    """Median wall seconds of `reps` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class PackedLinear:
    """``y = x·Wᵀ + b`` for a fixed (N, K) weight and optional (N,) bias.

    Default kernel: ``F.linear`` on `weight` (a view of the parameter: no copy). Where
    `tuning` measured oneDNN faster on the layer's input and gave it a share of the budget,
    `onednn` holds the weight reordered for oneDNN and the product runs there.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        if weight.ndim != 2:
            raise ValueError(f"PackedLinear: weight must be (N, K), got {tuple(weight.shape)}")
        self.weight = weight
        self.bias = bias
        self.onednn: Tensor | None = None
        self.timings_us: tuple[float, float] | None = None  # (default, oneDNN) from tune
        self._rows = 0  # the input rows tune measured on
        self._tune_next = False

    @property
    def kernel(self) -> str:
        """'onednn' or 'default'."""
        return "default" if self.onednn is None else "onednn"

    @property
    def weight_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()

    @property
    def onednn_saving_s(self) -> float:
        """Seconds per call oneDNN saved in `tune`; 0 when it was not faster by TUNE_MARGIN."""
        if self.timings_us is None:
            return 0.0
        default_us, onednn_us = self.timings_us
        return (default_us - onednn_us) * 1e-6 if onednn_us < TUNE_MARGIN * default_us else 0.0

    def __call__(self, x: Tensor) -> Tensor:
        if self._tune_next:
            self._tune_next = False
            self.tune(x)
        if self.onednn is not None and onednn_linear is not None:
            return onednn_linear(x, self.onednn, self.bias)
        return F.linear(x, self.weight, self.bias)

    def _reordered(self, rows: int) -> Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(self.weight.contiguous(), rows)

    def tune(self, x: Tensor, reps: int = TUNE_REPS) -> None:
        """Time both kernels on `x` (rows, K) into `timings_us` (None where oneDNN cannot run
        this product). Keeps nothing: `use_onednn` makes the copy."""
        self.onednn, self.timings_us = None, None
        if not onednn_supported(self.weight) or x.dtype != self.weight.dtype or x.ndim != 2:
            return
        try:
            packed = self._reordered(x.shape[0])
            candidate = onednn_linear(x, packed, self.bias)
        except (RuntimeError, AttributeError):  # no such oneDNN op here: keep the default
            return
        if candidate.shape != (x.shape[0], self.weight.shape[0]):
            return
        with torch.no_grad():
            default_s = median_s(lambda: F.linear(x, self.weight, self.bias), reps)
            onednn_s = median_s(lambda: onednn_linear(x, packed, self.bias), reps)
        self.timings_us = (round(default_s * 1e6, 1), round(onednn_s * 1e6, 1))
        self._rows = x.shape[0]

    def use_onednn(self) -> None:
        """Run on oneDNN from now on (a reordered copy of the weight)."""
        self.onednn = self._reordered(max(self._rows, 1))


@contextlib.contextmanager
def tuning(kernels: Iterable[PackedLinear], budget_bytes: int | None = None) -> Iterator[None]:
    """Within the block, each kernel times itself on the next input it gets (so one forward
    pass of the network measures every layer on its real shape); when the block ends, the
    layers where oneDNN won get oneDNN copies, most time saved per byte first, within
    `budget_bytes` in all (None: `ONEDNN_BUDGET_BYTES`). The copies are made after the
    timing, one at a time: the peak memory is the final copies plus one layer's."""
    kernels = list(kernels)
    budget_bytes = ONEDNN_BUDGET_BYTES if budget_bytes is None else budget_bytes
    for kernel in kernels:
        kernel.onednn, kernel.timings_us = None, None
        kernel._tune_next = True
    try:
        yield
    finally:
        for kernel in kernels:
            kernel._tune_next = False
    allocate_onednn(kernels, budget_bytes)


def allocate_onednn(kernels: Iterable[PackedLinear], budget_bytes: int) -> int:
    """Give oneDNN copies to the kernels whose `tune` measured oneDNN faster, most time saved
    per weight byte first, while the copies fit in `budget_bytes`; returns the bytes spent."""
    winners = [kernel for kernel in kernels if kernel.onednn_saving_s > 0]
    winners.sort(key=lambda k: k.onednn_saving_s / k.weight_bytes, reverse=True)
    spent = 0
    for kernel in winners:
        if spent + kernel.weight_bytes <= budget_bytes:
            kernel.use_onednn()
            spent += kernel.weight_bytes
    return spent
