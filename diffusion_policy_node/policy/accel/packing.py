"""Convolutions as one matrix product each, for inference: the packed form of the U-Net's
Conv1d layers (`ConditionalUnet1D.pack_for_inference`). Same math as `nn.Conv1d`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import PackedLinear


def pack_conv1d(conv: nn.Conv1d) -> Tensor:
    """Conv1d weight (C_out, C_in, k) as the (C_out, C_in·k) matrix of `packed_conv1d`: a view
    of the weight (same storage, no copy), so packing costs no memory."""
    c_out = conv.weight.shape[0]
    return conv.weight.detach().view(c_out, -1)


def packed_conv1d(x: Tensor, packed: PackedLinear, k: int, stride: int, pad: int) -> Tensor:
    """Conv1d as unfold + one matrix product: (B, C_in, T) -> (B, C_out, T_out), same math.

    At batch 1 and a short horizon a Conv1d is a skinny matrix product dominated by reading the
    weights; PyTorch's CPU conv paths read them at a fraction of the speed of a plain GEMM
    (bench: 1.5-5x slower for the paper's 1024-4096 channel convolutions). The columns are
    laid out [channel][tap] to match the weight's own memory order (`pack_conv1d`); `packed`
    holds that matrix and the bias, and runs the product with the faster kernel (kernels.py).
    """
    B, C, _ = x.shape
    if pad:
        x = F.pad(x, (pad, pad))
    cols = x.unfold(2, k, stride)  # (B, C_in, T_out, k)
    T_out = cols.shape[2]
    cols = cols.transpose(1, 2).reshape(B * T_out, C * k)  # rows: [channel][tap]
    y = packed(cols)  # (B·T_out, C_out)
    return y.reshape(B, T_out, -1).transpose(1, 2)
