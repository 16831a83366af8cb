"""The U-Net's packed inference forms (policy/accel/packing.py): every registered block type
gives the plain block's outputs, shares its parameters and state_dict keys, and
`pack_for_inference` swaps the whole network's blocks and puts the originals back."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from diffusion_policy_node.policy.accel.packing import (
    BLOCK_PACKERS,
    PACKED_FORMS,
    pack_block,
    pack_for_inference,
    packed_kernels,
)
from diffusion_policy_node.policy.accel.trace import freeze_prepared_step
from diffusion_policy_node.policy.unet1d import (
    ConditionalResidualBlock1D,
    ConditionalUnet1D,
    Conv1dBlock,
    Downsample1d,
    Upsample1d,
)

C_IN, COND = 12, 5


def _run_with_cond(block: nn.Module, x: Tensor) -> Tensor:
    return block(x, torch.linspace(-1.0, 1.0, 2 * COND).reshape(2, COND))


# One instance and one call per registered block type (channels change where a block allows it,
# so the 1x1 residual convolution is packed too).
CASES: dict[type[nn.Module], tuple[Callable[[], nn.Module], Callable[[nn.Module, Tensor], Tensor]]]
CASES = {
    Conv1dBlock: (lambda: Conv1dBlock(C_IN, 8, 5, n_groups=4), lambda b, x: b(x)),
    Downsample1d: (lambda: Downsample1d(C_IN), lambda b, x: b(x)),
    Upsample1d: (lambda: Upsample1d(C_IN), lambda b, x: b(x)),
    ConditionalResidualBlock1D: (
        lambda: ConditionalResidualBlock1D(C_IN, 8, COND, kernel_size=3, n_groups=4),
        _run_with_cond,
    ),
}


def test_every_registered_block_type_has_a_case_here() -> None:
    assert set(CASES) == set(BLOCK_PACKERS)


@pytest.mark.parametrize("block_type", list(CASES), ids=lambda t: t.__name__)
@pytest.mark.parametrize("length", [5, 8])
def test_each_packed_block_gives_the_plain_blocks_outputs(block_type, length) -> None:
    make, call = CASES[block_type]
    torch.manual_seed(0)
    block = make().eval()
    with torch.no_grad():
        for p in block.parameters():  # every weight and bias clearly nonzero
            p.copy_(torch.randn_like(p) * 0.5)
    x = torch.randn(2, C_IN, length)
    with torch.no_grad():
        reference = call(block, x)
        packed = pack_block(block)
        got = call(packed, x)
    assert type(packed) in PACKED_FORMS and isinstance(packed, block_type)
    assert packed_kernels(packed), "the packed form runs a matrix product"
    assert got.shape == reference.shape
    assert reference.abs().mean() > 0.1
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-5)
    # The same parameters under the same names: nothing copied, the checkpoint keys unchanged.
    plain_params, packed_params = dict(block.named_parameters()), dict(packed.named_parameters())
    assert plain_params.keys() == packed_params.keys()
    assert all(packed_params[name] is p for name, p in plain_params.items())
    assert block.state_dict().keys() == packed.state_dict().keys()


def test_pack_block_names_a_block_without_a_packed_form() -> None:
    with pytest.raises(ValueError, match=r"pack_block: no packed form for Linear; registered"):
        pack_block(nn.Linear(2, 2))


def _unet() -> ConditionalUnet1D:
    torch.manual_seed(0)
    net = ConditionalUnet1D(3, 6, 8, down_dims=(8, 16, 32), kernel_size=3, n_groups=4)
    nn.init.normal_(net.final_conv[1].weight, std=0.5)
    return net.eval()


def test_pack_for_inference_swaps_every_block_and_puts_the_originals_back() -> None:
    net = _unet()
    originals = list(net.modules())
    n_blocks = sum(type(m) in BLOCK_PACKERS for m in originals)
    keys = net.state_dict().keys()
    params = list(net.parameters())
    sample, t, g = torch.randn(2, 8, 3), torch.tensor([4, 60]), torch.randn(2, 6)
    with torch.no_grad():
        reference = net(sample, t, g)
        pack_for_inference(net)
        pack_for_inference(net)  # packing again re-packs, it does not wrap the packed forms
        packed = net(sample, t, g)
    modules = list(net.modules())
    assert sum(type(m) in PACKED_FORMS for m in modules) == n_blocks > 10
    assert not any(type(m) in BLOCK_PACKERS for m in modules)
    assert not any(isinstance(m.source, PACKED_FORMS) for m in modules if type(m) in PACKED_FORMS)
    assert net.packed_film is not None
    assert net.state_dict().keys() == keys
    assert all(a is b for a, b in zip(net.parameters(), params, strict=True))
    torch.testing.assert_close(packed, reference, atol=1e-5, rtol=1e-5)
    # train()/eval() while packed reach the originals when they come back.
    net.train()
    pack_for_inference(net, False)
    restored = list(net.modules())
    assert len(restored) == len(originals)
    assert all(a is b for a, b in zip(restored, originals, strict=True))
    assert all(m.training for m in restored) and net.packed_film is None
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(sample, t, g), reference)


def test_a_packed_network_trains_its_real_convolutions() -> None:
    """In training mode the packed forms run the blocks' own forward: the same output and the
    same gradients as the plain network."""
    sample, t, g = torch.randn(2, 8, 3), torch.tensor([4, 60]), torch.randn(2, 6)
    grads = []
    for packed in (False, True):
        net = _unet()
        pack_for_inference(net, packed)
        net.train()
        net(sample, t, g).square().sum().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for plain, got in zip(*grads, strict=True):
        assert torch.equal(plain, got)


def test_freeze_prepared_step_names_a_network_it_cannot_trace() -> None:
    with pytest.raises(ValueError, match=r"no trace for the ε-network Linear"):
        freeze_prepared_step(nn.Linear(2, 2))
