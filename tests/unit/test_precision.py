"""Inference precision: what `auto` picks per part (camera encoders, ε-network), that the
checkpoint loader and the node's loader honour it, and that bf16 (everything, or the encoders
only) keeps the bundled checkpoint's chunks within 1 % of the action range of fp32 (same
observations, same noise) with and without the `jit` path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from diffusion_policy_node.policy.accel.packing import packed_kernels
from diffusion_policy_node.policy.accel.precision import (
    BF16_MIN_WEIGHT_BYTES,
    FP32,
    NAMED,
    Precision,
    cpu_has_native_bf16,
    network_weight_bytes,
    precision_of,
    resolve_precision,
)
from diffusion_policy_node.policy.checkpoint import CheckpointError, load_checkpoint
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.runtime import settings
from diffusion_policy_node.runtime.process_worker import load_policy
from diffusion_policy_node.runtime.settings import InferenceSettings
from diffusion_policy_node.sim.arm_task import ArmTask

XEON_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
EPYC_ZEN3 = "flags\t\t: fpu sse avx avx2 fma\n"
BF16, F32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(XEON_BF16, True), (SAPPHIRE, True), (EPYC_ZEN3, False)]
)
def test_cpu_features_are_read_from_the_flags(cpuinfo, native):
    assert cpu_has_native_bf16(cpuinfo) is native


@pytest.mark.parametrize(
    ("cpuinfo", "small_network", "large_network"),
    [
        # Native bf16 (AMX, or AVX-512-BF16 alone): the encoders in bf16 whatever the
        # ε-network's size; the network by its size.
        (SAPPHIRE, Precision(BF16, F32), Precision(BF16, BF16)),
        (XEON_BF16, Precision(BF16, F32), Precision(BF16, BF16)),
        # No native bf16: fp32 throughout.
        (EPYC_ZEN3, FP32, FP32),
    ],
)
def test_auto_picks_bf16_per_part_where_the_cpu_runs_it(cpuinfo, small_network, large_network):
    small, large = BF16_MIN_WEIGHT_BYTES - 1, BF16_MIN_WEIGHT_BYTES
    assert resolve_precision("auto", "cpu", cpuinfo, weight_bytes=small) == small_network
    assert resolve_precision("auto", "cpu", cpuinfo, weight_bytes=large) == large_network
    # Unknown size counts as large.
    assert resolve_precision("auto", "cpu", cpuinfo) == large_network


def test_explicit_precisions_cuda_and_names():
    assert resolve_precision("fp32", "cpu", SAPPHIRE) == FP32
    assert resolve_precision("bf16", "cpu", EPYC_ZEN3) == Precision(BF16, BF16)
    assert resolve_precision("bf16-encoder", "cpu", EPYC_ZEN3) == Precision(BF16, F32)
    small = BF16_MIN_WEIGHT_BYTES - 1
    assert resolve_precision("auto", "cuda", EPYC_ZEN3, weight_bytes=small) == NAMED["bf16"]
    assert {name: NAMED[name].name for name in NAMED} == {name: name for name in NAMED}
    assert Precision(F32, BF16).name == "encoder fp32, network bf16"
    # The ROS-free settings accept exactly the names the resolver knows.
    assert set(settings.PRECISIONS) == {"auto", *NAMED}
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16x", "cpu")


def test_load_checkpoint_rejects_an_unknown_precision():
    with pytest.raises(CheckpointError, match="precision"):
        load_checkpoint(bundled_checkpoint(), precision="int4")


def test_load_policy_honours_the_precision_setting():
    folder = str(bundled_checkpoint())
    for name, chosen in NAMED.items():
        policy, info = load_policy(InferenceSettings(folder, device="cpu", precision=name))
        assert {p.dtype for p in policy.obs_encoder.parameters()} == {chosen.encoder}
        assert {p.dtype for p in policy.network.parameters()} == {chosen.network}
        assert info.device == "cpu"
        assert info.precision == name  # what ~/status and the parameter report
    assert info.matmul_kernels == ""  # acceleration none: nothing packed
    auto = InferenceSettings(folder, device="cpu", precision="auto", acceleration="jit")
    policy, info = load_policy(auto)
    expected = resolve_precision("auto", "cpu", weight_bytes=network_weight_bytes(policy))
    assert precision_of(policy) == expected
    assert info.precision == expected.name
    # acceleration jit: the trunk's products, how many of them on oneDNN
    kernels = packed_kernels(policy.network)
    assert kernels
    onednn = sum(k.kernel == "onednn" for k in kernels)
    assert info.matmul_kernels == f"onednn {onednn}/{len(kernels)}"


def test_a_bf16_encoder_trace_leaves_the_weights_in_the_default_layout_afterwards():
    policy = load_checkpoint(bundled_checkpoint(), acceleration="jit", precision="bf16-encoder")
    conv = policy.obs_encoder.encoders[0].backbone.conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)  # the traced layout
    policy.enable_acceleration("none")
    assert all(p.is_contiguous() for p in policy.obs_encoder.parameters())


def _rendered_observations(n_obs_steps: int) -> list[dict[str, torch.Tensor]]:
    """The first observation of held-out episodes (dp-eval's seeds), as the node builds it."""
    out = []
    with ArmTask() as task:
        for seed in range(1000, 1004):
            task.reset(seed)
            image = task.render().transpose(2, 0, 1)
            state = task.joint_positions().astype(np.float32)
            out.append(
                {
                    OBS_IMAGES: torch.from_numpy(np.stack([image] * n_obs_steps)[None, :, None]),
                    OBS_STATE: torch.from_numpy(np.stack([state] * n_obs_steps)[None]),
                }
            )
    return out


@pytest.mark.parametrize("precision", ["bf16", "bf16-encoder"])
@pytest.mark.parametrize("acceleration", ["none", "jit"])
def test_bf16_chunks_stay_within_one_percent_of_the_action_range(acceleration, precision):
    folder = bundled_checkpoint()
    reference = load_checkpoint(folder, acceleration="none", precision="fp32")
    reduced = load_checkpoint(folder, acceleration=acceleration, precision=precision)
    assert precision_of(reduced) == NAMED[precision]
    action_range = (reference.action_normalizer.max - reference.action_normalizer.min).numpy()
    for obs in _rendered_observations(reference.config.n_obs_steps):
        chunks = []
        for policy in (reference, reduced):
            policy.seed(0)  # the same initial noise for both
            chunk = policy.predict_action_chunk(obs)
            assert chunk.dtype == torch.float32
            chunks.append(chunk.numpy()[0])
        diff = (chunks[1] - chunks[0]) / action_range  # (H, D) in fractions of the range
        rms = float(np.sqrt(np.mean(diff**2)))
        assert rms <= 0.01, f"{precision} vs fp32 chunk RMS {rms:.4f} of the action range"
        # bf16 is not a no-op: the numbers do change (the comparison can fail).
        assert not np.array_equal(chunks[0], chunks[1])
