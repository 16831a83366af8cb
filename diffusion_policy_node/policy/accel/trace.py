"""TorchScript traces of the U-Net trunk for inference (`acceleration: jit`).

`freeze_prepared_step(network, horizon)` gives the ε-network's denoising step as a trace: for
the U-Net, `TracedTrunk(unet, horizon)` traces one step of its trunk (packed or not) with the
signature of its `forward_prepared`; `trace_camera_encoder` traces and freezes one camera
encoder; `tracing_warnings_filtered()` silences exactly the warnings such traces raise.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ..networks import PreparedStep
from ..unet1d import ConditionalUnet1D
from .kernels import TORCHSCRIPT_DEPRECATED, tuning
from .packing import packed_kernels


class TrunkModule(nn.Module):
    """The U-Net trunk with FiLM parameters as a flat tensor list, so it can be traced. The
    oneDNN weight copies (kernels.PackedLinear.onednn) are registered as buffers: a trace
    reads module state through its attributes, and cannot hold such tensors as constants."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.unet = unet
        self.onednn_weights = nn.Module()
        for i, kernel in enumerate(packed_kernels(unet)):
            if kernel.onednn is not None:
                self.onednn_weights.register_buffer(f"w{i}", kernel.onednn, persistent=False)

    def forward(self, sample: Tensor, films: list[Tensor]) -> Tensor:
        pairs = [(films[i], films[i + 1]) for i in range(0, len(films), 2)]
        return self.unet._run(sample, pairs)


def freeze_prepared_step(network: nn.Module, horizon: int | None = None) -> PreparedStep:
    """A TorchScript equivalent of ``network.forward_prepared`` (same signature and numbers) for
    its current device, dtype and packing (`packing.pack_for_inference`), in eval mode; used by
    acceleration `jit`. `horizon`: the T it will mostly run at (the packed kernels are tuned
    for it; None: the shortest valid horizon x 2)."""
    if isinstance(network, ConditionalUnet1D):
        return TracedTrunk(network, horizon)
    raise ValueError(
        f"acceleration 'jit' has no trace for the ε-network {type(network).__name__}; "
        f"use acceleration 'none'"
    )


class TracedTrunk:
    """TorchScript-traced U-Net trunk with the signature of `forward_prepared`: one graph per
    step instead of ~30 Python module calls per res block. The trace holds the module's own
    weight tensors (packed views, no copies). Not frozen: freezing folds every linear's weight
    into a transposed constant copy (one more copy of the U-Net, +0.5-1 GB for the paper
    config) and measured no faster than the plain trace.

    When packed, each matrix product first picks its kernel (kernels.py) on a batch-1 sample
    of `horizon` steps (default: the shortest valid horizon x 2), the shape the node runs; any
    other batch or horizon gives the same numbers.
    """

    def __init__(self, unet: ConditionalUnet1D, horizon: int | None = None) -> None:
        self.unet = unet
        weight = unet.final_conv[1].weight
        device, dtype = weight.device, weight.dtype
        cache = unet.prepare_conditioning(
            torch.tensor([1], device=device),
            torch.zeros(1, unet.global_cond_dim, device=device, dtype=dtype),
        )
        horizon = unet.horizon_multiple * 2 if horizon is None else horizon
        sample = torch.randn(1, horizon, unet.input_dim, device=device, dtype=dtype)
        unet._check_sample(sample)
        flat = [t for pair in cache.per_step[0] for t in pair]
        with torch.no_grad(), tuning(packed_kernels(unet)):
            unet._run(sample, cache.per_step[0])
        # check_trace=False: the check re-traces and keeps a second graph whose constants copy
        # the packed weights (+600 MiB at the peak for the paper config); the trace's numbers
        # are checked against forward_prepared by the tests instead.
        with torch.no_grad(), tracing_warnings_filtered():
            trunk = TrunkModule(unet).eval()
            self.module = torch.jit.trace(trunk, (sample, flat), check_trace=False)

    def __call__(self, sample: Tensor, film_cache: Any, k: int) -> Tensor:
        self.unet._check_sample(sample)
        films = [t for pair in film_cache.per_step[k] for t in pair]
        return self.module(sample, films)


@contextlib.contextmanager
def tracing_warnings_filtered() -> Iterator[None]:
    """Silence exactly the warnings a trace of our inference modules raises, and only those:

    - DeprecationWarning "`torch.jit.trace` / `trace_method` / `freeze` is deprecated. Please
      switch to `torch.compile` or `torch.export`" (torch >= 2.10). TorchScript still works in
      the torch we pin and is what `jit` measures; the replacement is `torch.export` + AOT
      Inductor (compiled once per checkpoint, not at node start: torch.compile takes 17-30 s
      per start on a 2-core CPU and, in the interleaved bench, is no faster than the trace
      per chunk: bench/acceleration_probe.py).
    - TracerWarning "Converting a tensor to a Python boolean ...": GroupNorm's batch-size check
      (torch.nn.functional) and SpatialSoftmax's shape check are recorded as constants. The
      shapes are fixed at inference, and the callers check them before every traced call
      (`TracedTrunk.__call__`, `ObservationEncoder.forward`).
    Any other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=TORCHSCRIPT_DEPRECATED, category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message="Converting a tensor to a Python boolean",
            category=torch.jit.TracerWarning,
        )
        yield


def trace_camera_encoder(
    encoder: torch.nn.Module, crop_hw: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A camera encoder traced and frozen by TorchScript for inference, in its own dtype.

    A bf16 encoder on a CPU is traced in channels-last memory format (the module converted in
    place, the input converted per call): oneDNN's bf16 convolutions run on AMX in that layout,
    6-8 ms against 8-12 ms in the default layout for the ResNet-18 at batch 2, 84x84
    (bench/acceleration_probe.py). fp32 stays in the default layout, where channels-last
    measured slower. check_trace=False: the check keeps a second copy of the weights while it
    runs; tests/unit/test_policy.py compares the traced chunks with the eager ones instead.
    """
    weight = next(encoder.parameters())
    image = torch.rand(1, 3, *crop_hw, device=weight.device, dtype=weight.dtype)
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
        return torch.jit.freeze(torch.jit.trace(encoder, (image,), check_trace=False))
    channels_last = torch.channels_last
    encoder.to(memory_format=channels_last)
    image = image.contiguous(memory_format=channels_last)
    traced = torch.jit.freeze(torch.jit.trace(encoder, (image,), check_trace=False))
    return lambda x: traced(x.contiguous(memory_format=channels_last))
