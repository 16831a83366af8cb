"""The U-Net's inference layout (acceleration `jit`): every convolution as one matrix product,
the FiLM linears stacked into one.

`pack_for_inference(network)` swaps each block of `policy/unet1d.py` that has a packed form
(`BLOCK_PACKERS`, per block type) for that form, in place in the module tree, and
`pack_for_inference(network, False)` puts the original blocks back. A packed form is a subclass
of its block that holds the block's own submodules under the same names (the state_dict keys
and the parameters are the block's; nothing is copied), plus a `PackedLinear` over a view of
the convolution's weight, and overrides only the inference forward. In training mode (and for
the residual blocks, with autograd on) it runs the block's own forward, so training a packed
network trains the real convolutions. Same math as the network; the tests compare every packed
block and the packed network with the plain ones.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..unet1d import (
    ConditionalResidualBlock1D,
    ConditionalUnet1D,
    Conv1dBlock,
    Downsample1d,
    Film,
    Upsample1d,
)
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


def _adopt(packed: nn.Module, source: nn.Module) -> None:
    """Start `packed` as an empty module in `source`'s mode that remembers `source` (outside
    the module tree, so its parameters are not listed twice) for `pack_for_inference(...,
    False)`. The block's own `__init__` is not run: the packed form adopts its submodules."""
    nn.Module.__init__(packed)
    packed.training = source.training
    packed.__dict__["source"] = source


class PackedConv1dBlock(Conv1dBlock):
    """`Conv1dBlock` with its k-tap convolution as unfold + one matrix product."""

    def __init__(self, source: Conv1dBlock) -> None:
        _adopt(self, source)
        self.block = source.block
        conv: nn.Conv1d = source.block[0]
        self.packed_weight = PackedLinear(pack_conv1d(conv), conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.block(x)
        k = self.block[0].kernel_size[0]
        y = packed_conv1d(x, self.packed_weight, k, 1, k // 2)
        return self.block[2](self.block[1](y))


class PackedDownsample1d(Downsample1d):
    """`Downsample1d` (Conv1d k=3, s=2, p=1) as unfold + one matrix product."""

    def __init__(self, source: Downsample1d) -> None:
        _adopt(self, source)
        self.conv = source.conv
        self.packed_weight = PackedLinear(pack_conv1d(self.conv), self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.conv(x)
        return packed_conv1d(x, self.packed_weight, 3, 2, 1)


class PackedUpsample1d(Upsample1d):
    """`Upsample1d` (ConvTranspose1d k=4, s=2, p=1) as one matrix product + overlap-add
    (`fold`): every input step contributes k output taps; the weight (C_in, C_out, k) viewed as
    (C_in, C_out·k) and used transposed, no copy."""

    def __init__(self, source: Upsample1d) -> None:
        _adopt(self, source)
        self.conv = source.conv
        c_in = self.conv.weight.shape[0]
        self.packed_weight = PackedLinear(self.conv.weight.detach().view(c_in, -1).T, None)

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.conv(x)
        B, C, T = x.shape
        k, stride, pad = 4, 2, 1
        rows = x.transpose(1, 2).reshape(B * T, C)
        cols = self.packed_weight(rows).reshape(B, T, -1).transpose(1, 2)
        length = (T - 1) * stride - 2 * pad + k  # cols: (B, C_out·k, T)
        y = F.fold(
            cols, output_size=(1, length), kernel_size=(1, k), stride=(1, stride), padding=(0, pad)
        )  # (B, C_out, 1, length): the k taps of each step added into place
        return y.squeeze(2) + self.conv.bias[:, None]


class PackedResidualBlock1D(ConditionalResidualBlock1D):
    """`ConditionalResidualBlock1D` with its 1x1 residual convolution (where the channels
    change) as one matrix product; its two Conv1dBlocks are packed on their own."""

    def __init__(self, source: ConditionalResidualBlock1D) -> None:
        _adopt(self, source)
        self.blocks = source.blocks
        self.out_channels = source.out_channels
        self.cond_encoder = source.cond_encoder
        self.residual_conv = source.residual_conv
        self.packed_residual: PackedLinear | None = None
        if isinstance(self.residual_conv, nn.Conv1d):
            self.packed_residual = PackedLinear(
                pack_conv1d(self.residual_conv), self.residual_conv.bias
            )

    def forward_film(self, x: Tensor, film: Film) -> Tensor:
        if self.training or torch.is_grad_enabled() or self.packed_residual is None:
            return super().forward_film(x, film)
        scale, bias = film
        out = self.blocks[0](x)
        out.mul_(scale).add_(bias)  # in place, as the block's own inference path
        out = self.blocks[1](out)
        return out.add_(packed_conv1d(x, self.packed_residual, 1, 1, 0))


# Block type -> its packed inference form (a constructor taking the block).
BLOCK_PACKERS: dict[type[nn.Module], Callable[[nn.Module], nn.Module]] = {
    Conv1dBlock: PackedConv1dBlock,
    Downsample1d: PackedDownsample1d,
    Upsample1d: PackedUpsample1d,
    ConditionalResidualBlock1D: PackedResidualBlock1D,
}
PACKED_FORMS = (PackedConv1dBlock, PackedDownsample1d, PackedUpsample1d, PackedResidualBlock1D)


def pack_block(block: nn.Module) -> nn.Module:
    """The packed inference form of one block (`BLOCK_PACKERS`), sharing its parameters."""
    packer = BLOCK_PACKERS.get(type(block))
    if packer is None:
        raise ValueError(
            f"pack_block: no packed form for {type(block).__name__}; registered: "
            f"{sorted(t.__name__ for t in BLOCK_PACKERS)}"
        )
    return packer(block)


def _replace_children(module: nn.Module, swap: Callable[[nn.Module], nn.Module | None]) -> None:
    """Depth first: each child for which `swap` returns a module is replaced by it (same
    name); then the (new) child's own children."""
    for name, child in list(module.named_children()):
        new = swap(child)
        if new is not None:
            setattr(module, name, new)  # ModuleList / Sequential: their _modules entry
            child = new
        _replace_children(child, swap)


def _pack(block: nn.Module) -> nn.Module | None:
    return pack_block(block) if type(block) in BLOCK_PACKERS else None


def _unpack(block: nn.Module) -> nn.Module | None:
    if not isinstance(block, PACKED_FORMS):
        return None
    source: nn.Module = block.source
    source.training = block.training  # train()/eval() reached only the packed form
    return source


def stack_film(unet: ConditionalUnet1D) -> tuple[Tensor, Tensor]:
    """Every res block's FiLM linear stacked into one (Σ 2C, cond_dim) matrix and (Σ 2C,) bias,
    in block order (a copy of those weights: 3.5 MiB for the small preset, 28 MiB for the
    paper's), so `prepare_conditioning` runs 2 matrix products instead of 2 per block."""
    linears: list[nn.Linear] = [block.cond_encoder[1] for block in unet.res_blocks()]
    with torch.no_grad():
        return (
            torch.cat([linear.weight for linear in linears]).detach(),
            torch.cat([linear.bias for linear in linears]).detach(),
        )


def pack_for_inference(network: nn.Module, enabled: bool = True) -> None:
    """Switch `network`'s blocks to their packed inference forms (or back, `enabled=False`),
    in place: every convolution of the U-Net trunk (k-tap, 1x1 residual, down- and up-sampling)
    as a matrix product over a view of its weight, and the FiLM linears stacked
    (`stack_film`). Packing again re-packs from the current weights (after a change of dtype
    or device). A network without registered blocks is left as it is."""
    _replace_children(network, _unpack)
    if isinstance(network, ConditionalUnet1D):
        network.packed_film = None
    if not enabled:
        return
    _replace_children(network, _pack)
    if isinstance(network, ConditionalUnet1D):
        network.packed_film = stack_film(network)


def packed_kernels(network: nn.Module) -> list[PackedLinear]:
    """The matrix products of the packed blocks (empty when not packed), in module order."""
    kernels: list[PackedLinear | None] = []
    for module in network.modules():
        if isinstance(module, PackedResidualBlock1D):
            kernels.append(module.packed_residual)
        elif isinstance(module, PACKED_FORMS):
            kernels.append(module.packed_weight)
    return [kernel for kernel in kernels if kernel is not None]
