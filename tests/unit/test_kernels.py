"""The matrix-product kernels of the packed trunk (policy/accel/kernels.py): oneDNN and the default
kernel compute the same product, the choice stays within its memory budget, and a trace that
uses oneDNN gives the numbers of the plain network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffusion_policy_node.policy.accel import kernels
from diffusion_policy_node.policy.accel.kernels import PackedLinear, allocate_onednn, tuning
from diffusion_policy_node.policy.accel.packing import pack_for_inference, packed_kernels
from diffusion_policy_node.policy.accel.trace import freeze_prepared_step
from diffusion_policy_node.policy.unet1d import ConditionalUnet1D

needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN"
)


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_and_default_kernels_compute_the_same_product(dtype, bias):
    torch.manual_seed(0)
    weight = torch.randn(96, 320, dtype=dtype)
    b = torch.randn(96, dtype=dtype) if bias else None
    kernel = PackedLinear(weight, b)
    x = torch.randn(13, 320, dtype=dtype)
    kernel.tune(x[:8], reps=2)
    assert kernel.timings_us is not None and min(kernel.timings_us) > 0
    assert kernel.kernel == "default"  # tune measures; it keeps nothing by itself
    expected = F.linear(x.float(), weight.float(), None if b is None else b.float())
    kernel.use_onednn()
    assert kernel.kernel == "onednn"
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 0.3}
    for rows in (8, 1, 13):  # tuned on 8 rows; other row counts give the same product
        torch.testing.assert_close(kernel(x[:rows]).float(), expected[:rows], **tol)


def _timed(nbytes: int, default_us: float, onednn_us: float) -> PackedLinear:
    kernel = PackedLinear(torch.zeros(nbytes // 4 // 16, 16), None)
    kernel.timings_us = (default_us, onednn_us)
    kernel._rows = 4
    return kernel


@needs_onednn
def test_budget_goes_to_the_largest_saving_per_byte_and_is_never_exceeded():
    kib = 1024
    big_win = _timed(64 * kib, 60.0, 20.0)  # saves 40 us, 0.6 us/KiB
    dense_win = _timed(16 * kib, 30.0, 15.0)  # saves 15 us, 0.9 us/KiB
    slower = _timed(4 * kib, 3.0, 12.0)  # oneDNN slower: never
    marginal = _timed(4 * kib, 10.0, 9.5)  # within TUNE_MARGIN: never
    every = [big_win, dense_win, slower, marginal]
    assert allocate_onednn(every, 70 * kib) == 16 * kib  # dense first; big no longer fits
    assert [k.kernel for k in every] == ["default", "onednn", "default", "default"]
    for kernel in every:
        kernel.onednn = None
    assert allocate_onednn(every, 80 * kib) == 80 * kib
    assert [k.kernel for k in every] == ["onednn", "onednn", "default", "default"]
    for kernel in every:
        kernel.onednn = None
    assert allocate_onednn(every, 0) == 0
    assert all(k.kernel == "default" for k in every)


def test_weights_beyond_the_per_layer_cap_or_off_the_cpu_formats_stay_on_the_default():
    too_big = torch.zeros(kernels.ONEDNN_MAX_WEIGHT_BYTES // 4 + 1, 1)
    assert not kernels.onednn_supported(too_big)
    assert not kernels.onednn_supported(torch.zeros(4, 4, dtype=torch.float64))
    kernel = PackedLinear(torch.zeros(4, 4, dtype=torch.float64), None)
    kernel.tune(torch.zeros(2, 4, dtype=torch.float64))
    assert kernel.timings_us is None and kernel.onednn_saving_s == 0.0
    with pytest.raises(ValueError, match=r"PackedLinear: weight must be \(N, K\)"):
        PackedLinear(torch.zeros(4, 4, 1), None)


@needs_onednn
def test_a_trace_with_every_product_on_onednn_matches_the_plain_network(monkeypatch):
    """Whatever the timing picks, the traced trunk's numbers are the plain network's: forced
    here to oneDNN for every product (every layer 'saves' 1 s, budget unlimited)."""
    monkeypatch.setattr(PackedLinear, "onednn_saving_s", property(lambda self: 1.0))
    monkeypatch.setattr(kernels, "ONEDNN_BUDGET_BYTES", 2**40)
    torch.manual_seed(0)
    unet = ConditionalUnet1D(3, 10, 16, down_dims=(16, 32, 64), n_groups=4).eval()
    for p in unet.final_conv.parameters():  # else the output is ~0 whatever the trunk does
        torch.nn.init.normal_(p)
    cond, sample = torch.randn(2, 10), torch.randn(2, 16, 3)
    with torch.inference_mode():
        cache = unet.prepare_conditioning(torch.tensor([7, 3]), cond)
        plain = unet.forward_prepared(sample, cache, 1)
        pack_for_inference(unet, True)
        step = freeze_prepared_step(unet, horizon=8)
        assert {k.kernel for k in packed_kernels(unet)} == {"onednn"}
        assert "mkldnn::_linear_pointwise" in str(step.module.inlined_graph)
        traced = step(sample, cache, 1)  # batch 2, horizon 16: not the tuned shape
    assert plain.abs().mean() > 0.1
    torch.testing.assert_close(traced, plain, rtol=1e-4, atol=1e-4)


def test_tuning_times_each_kernel_on_its_first_input_only():
    kernel = PackedLinear(torch.randn(8, 4), torch.randn(8))
    x = torch.randn(3, 4)
    with tuning([kernel], budget_bytes=0):
        kernel(x)
        first = kernel.timings_us
        kernel._rows = -1
        kernel(x)  # a second call in the block does not re-time
    assert kernel._rows == -1
    assert (first is not None) == kernels.onednn_supported(kernel.weight)
    assert kernel.kernel == "default"  # budget 0
    torch.testing.assert_close(kernel(x), F.linear(x, kernel.weight, kernel.bias))
