"""Inference precision: what `auto` picks, that the checkpoint loader and the node's loader honour
it, and that bf16 keeps the bundled checkpoint's chunks within 1 % of the action range of fp32
(same observations, same noise) with and without the `jit` path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_policy_node.policy.checkpoint import CheckpointError, load_checkpoint
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.policy.precision import (
    BF16_MIN_WEIGHT_BYTES,
    cpu_has_native_bf16,
    network_weight_bytes,
    precision_name,
    resolve_precision,
)
from diffusion_policy_node.runtime.process_worker import load_policy
from diffusion_policy_node.runtime.settings import InferenceSettings
from diffusion_policy_node.sim.arm_task import ArmTask
from diffusion_policy_node.train.evaluate import bundled_checkpoint

XEON_BF16 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
SAPPHIRE = "flags\t\t: fpu avx2 avx512f amx_tile amx_bf16 amx_int8\n"
EPYC_ZEN3 = "flags\t\t: fpu sse avx avx2 fma\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"), [(XEON_BF16, True), (SAPPHIRE, True), (EPYC_ZEN3, False)]
)
def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16(cpuinfo, native):
    assert cpu_has_native_bf16(cpuinfo) is native
    expected = torch.bfloat16 if native else torch.float32
    assert resolve_precision("auto", "cpu", cpuinfo) == expected


def test_auto_on_cpu_keeps_fp32_for_cache_resident_networks():
    small, large = BF16_MIN_WEIGHT_BYTES - 1, BF16_MIN_WEIGHT_BYTES
    assert resolve_precision("auto", "cpu", XEON_BF16, weight_bytes=small) == torch.float32
    assert resolve_precision("auto", "cpu", XEON_BF16, weight_bytes=large) == torch.bfloat16
    assert resolve_precision("auto", "cpu", EPYC_ZEN3, weight_bytes=large) == torch.float32
    assert resolve_precision("auto", "cuda", EPYC_ZEN3, weight_bytes=small) == torch.bfloat16
    assert resolve_precision("bf16", "cpu", XEON_BF16, weight_bytes=small) == torch.bfloat16


def test_explicit_precisions_and_cuda():
    assert resolve_precision("fp32", "cpu", XEON_BF16) == torch.float32
    assert resolve_precision("bf16", "cpu", EPYC_ZEN3) == torch.bfloat16
    assert resolve_precision("auto", "cuda", EPYC_ZEN3) == torch.bfloat16
    assert precision_name(torch.bfloat16) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp16x", "cpu")


def test_load_checkpoint_rejects_an_unknown_precision():
    with pytest.raises(CheckpointError, match="precision"):
        load_checkpoint(bundled_checkpoint(), precision="int4")


def _weight_dtypes(policy) -> set[torch.dtype]:
    return {p.dtype for p in [*policy.network.parameters(), *policy.obs_encoder.parameters()]}


def test_load_policy_honours_the_precision_setting():
    folder = str(bundled_checkpoint())
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        policy, info = load_policy(InferenceSettings(folder, device="cpu", precision=precision))
        assert _weight_dtypes(policy) == {dtype}
        assert info.device == "cpu"
        assert info.precision == precision  # what ~/status and the parameter report
    policy, info = load_policy(InferenceSettings(folder, device="cpu", precision="auto"))
    expected = resolve_precision("auto", "cpu", weight_bytes=network_weight_bytes(policy))
    assert _weight_dtypes(policy) == {expected}
    assert info.precision == precision_name(expected)


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


@pytest.mark.parametrize("acceleration", ["none", "jit"])
def test_bf16_chunks_stay_within_one_percent_of_the_action_range(acceleration):
    folder = bundled_checkpoint()
    reference = load_checkpoint(folder, acceleration="none", precision="fp32")
    reduced = load_checkpoint(folder, acceleration=acceleration, precision="bf16")
    assert _weight_dtypes(reduced) == {torch.bfloat16}
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
        assert rms <= 0.01, f"bf16 vs fp32 chunk RMS {rms:.4f} of the action range"
        # bf16 is not a no-op: the numbers do change (the comparison can fail).
        assert not np.array_equal(chunks[0], chunks[1])
