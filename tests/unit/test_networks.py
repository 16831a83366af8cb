"""The policy's networks: conditional 1-D U-Net (ε-network) and the vision encoder."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from diffusion_policy_node.policy.accel.packing import pack_block, pack_for_inference
from diffusion_policy_node.policy.accel.trace import freeze_prepared_step
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.networks import NETWORKS, EpsilonNetwork, build_network
from diffusion_policy_node.policy.unet1d import ConditionalUnet1D
from diffusion_policy_node.policy.vision import (
    ObservationEncoder,
    SpatialSoftmax,
    crop_images,
    resnet18_gn,
)


@pytest.fixture(autouse=True)
def _few_threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_unet(global_cond_dim: int = 6, down_dims=(8, 16, 32)) -> ConditionalUnet1D:
    torch.manual_seed(0)
    return ConditionalUnet1D(
        input_dim=3,
        global_cond_dim=global_cond_dim,
        diffusion_step_embed_dim=8,
        down_dims=down_dims,
        kernel_size=3,
        n_groups=4,
    )


def randomize_final_layer(net: ConditionalUnet1D) -> None:
    """Default init leaves outputs small but nonzero; make sure they are clearly nonzero."""
    nn.init.normal_(net.final_conv[1].weight, std=0.5)


# ---------------------------------------------------------------- ε-network protocol


def test_build_network_gives_the_configured_unet_behind_the_protocol():
    config = PolicyConfig(
        action_dim=2, horizon=8, n_action_steps=4, down_dims=(8, 16), n_groups=4,
        kernel_size=3, diffusion_step_embed_dim=8,
    )  # fmt: skip
    assert config.network == "unet" and "unet" in NETWORKS
    net = build_network(config, global_cond_dim=5)
    assert isinstance(net, ConditionalUnet1D) and isinstance(net, EpsilonNetwork)
    assert (net.input_dim, net.global_cond_dim, net.down_dims) == (2, 5, (8, 16))
    assert net.horizon_multiple == 2 and net.dtype == torch.float32
    net.to(torch.float64)
    assert net.dtype == torch.float64


def test_build_network_names_an_unknown_network():
    config = PolicyConfig()
    config.network = "transformer"  # past __post_init__, as a caller could
    with pytest.raises(ValueError, match=r"PolicyConfig.network='transformer'.*\('unet',\)"):
        build_network(config, global_cond_dim=4)


@pytest.mark.parametrize("packed", [False, True])
def test_frozen_prepared_step_matches_forward_prepared(packed):
    net = tiny_unet()
    randomize_final_layer(net)
    net.eval()
    pack_for_inference(net, packed)
    x, g = torch.randn(2, 16, 3), torch.randn(2, 6)
    with torch.no_grad():
        cache = net.prepare_conditioning([50, 10], g)
        frozen = freeze_prepared_step(net)
        for k in range(2):
            torch.testing.assert_close(
                frozen(x, cache, k), net.forward_prepared(x, cache, k), atol=1e-5, rtol=0
            )
        with pytest.raises(ValueError, match="horizon T=6"):
            frozen(torch.randn(2, 6, 3), cache, 0)


# ---------------------------------------------------------------- U-Net


def test_unet_output_shape_and_timestep_forms():
    net = tiny_unet()
    x, g = torch.randn(2, 8, 3), torch.randn(2, 6)
    out = net(x, torch.tensor([5, 5]), g)
    assert out.shape == (2, 8, 3)
    # int, 0-d tensor and float tensor timesteps are the same step.
    torch.testing.assert_close(net(x, 5, g), out)
    torch.testing.assert_close(net(x, torch.tensor(5), g), out)
    torch.testing.assert_close(net(x, torch.tensor([5.0, 5.0]), g), out)
    # The in-place inference path (no autograd) computes the same numbers.
    with torch.no_grad():
        torch.testing.assert_close(net(x, 5, g), out)


def test_unet_state_dict_uses_chi_et_al_key_names():
    keys = tiny_unet().state_dict().keys()
    for key in (
        "diffusion_step_encoder.1.weight",
        "down_modules.0.0.blocks.0.block.0.weight",
        "down_modules.0.0.cond_encoder.1.weight",
        "down_modules.0.0.residual_conv.weight",
        "down_modules.0.2.conv.weight",
        "mid_modules.1.blocks.1.block.1.weight",
        "up_modules.1.2.conv.weight",
        "final_conv.1.weight",
    ):
        assert key in keys
    # Three levels: two downsamples, two up levels (each upsampling), like the reference.
    assert len(tiny_unet().up_modules) == 2


def test_unet_output_depends_on_global_cond_and_timestep():
    net = tiny_unet()
    randomize_final_layer(net)
    x, g = torch.randn(2, 8, 3), torch.randn(2, 6)
    base = net(x, 10, g)
    other_cond = net(x, 10, g + 1.0)
    other_step = net(x, 60, g)
    assert (base - other_cond).abs().max() > 1e-3
    assert (base - other_step).abs().max() > 1e-3
    # Each sample only sees its own condition: change sample 1's condition only.
    g2 = g.clone()
    g2[1] += 1.0
    mixed = net(x, 10, g2)
    torch.testing.assert_close(mixed[0], base[0])
    assert (mixed[1] - base[1]).abs().max() > 1e-3


def test_unet_film_actually_modulates():
    """Zeroing every FiLM linear (scale = bias = 0) changes the output: FiLM is on the path."""
    net = tiny_unet()
    randomize_final_layer(net)
    x, g = torch.randn(1, 8, 3), torch.randn(1, 6)
    before = net(x, 3, g)
    with torch.no_grad():
        for block in net.res_blocks():
            block.cond_encoder[1].weight.zero_()
            block.cond_encoder[1].bias.zero_()
    after_a = net(x, 3, g)
    after_b = net(x, 90, g * 3)
    assert (before - after_a).abs().max() > 1e-3
    # With FiLM zeroed, neither the timestep nor the condition can reach the output.
    torch.testing.assert_close(after_a, after_b)


@pytest.mark.parametrize("packed", [False, True])  # packed: the FiLM linears stacked in one
@pytest.mark.parametrize("grad", [False, True])
def test_forward_prepared_equals_forward_for_every_k(grad, packed):
    net = tiny_unet()
    randomize_final_layer(net)
    net.eval()
    pack_for_inference(net, packed)
    assert (net.packed_film is not None) is packed
    x, g = torch.randn(3, 16, 3), torch.randn(3, 6)
    timesteps = torch.tensor([99, 80, 61, 40, 20, 0])
    with torch.set_grad_enabled(grad):
        cache = net.prepare_conditioning(timesteps, g)
        assert len(cache) == 6
        for k, t in enumerate(timesteps):
            ref = net(x, t, g)
            got = net.forward_prepared(x, cache, k)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
            assert got.shape == (3, 16, 3)


def test_film_cache_shapes_and_batch_one_broadcast():
    net = tiny_unet()
    g = torch.randn(1, 6)
    cache = net.prepare_conditioning([10, 5], g)
    scale, bias = cache.per_step[0][0]
    assert scale.shape == bias.shape == (1, 8, 1)
    assert len(cache.per_step[0]) == len(net.res_blocks()) == 2 * 3 + 2 + 2 * 2
    x = torch.randn(4, 8, 3)
    torch.testing.assert_close(
        net.forward_prepared(x, cache, 1), net(x, 5, g.expand(4, 6)), atol=1e-5, rtol=0
    )
    with pytest.raises(IndexError, match="k=2"):
        net.forward_prepared(x, cache, 2)
    cache3 = net.prepare_conditioning([10], torch.randn(3, 6))
    with pytest.raises(ValueError, match="batch"):
        net.forward_prepared(x, cache3, 0)


def test_unet_horizon_not_divisible_raises():
    net = tiny_unet(down_dims=(8, 16, 32))  # needs T % 4 == 0
    with pytest.raises(ValueError, match=r"T=10.*down_dims=\(8, 16, 32\)"):
        net(torch.randn(1, 10, 3), 0, torch.randn(1, 6))
    with pytest.raises(ValueError, match="T=6"):
        cache = net.prepare_conditioning([0], torch.randn(1, 6))
        net.forward_prepared(torch.randn(1, 6, 3), cache, 0)
    # Two levels need only T % 2 == 0.
    out = tiny_unet(down_dims=(8, 16))(torch.randn(1, 10, 3), 0, torch.randn(1, 6))
    assert out.shape == (1, 10, 3)


def test_unet_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="n_groups"):
        ConditionalUnet1D(3, 6, 8, down_dims=(8, 12), n_groups=8)
    with pytest.raises(ValueError, match="kernel_size"):
        ConditionalUnet1D(3, 6, 8, down_dims=(8,), kernel_size=4)
    with pytest.raises(ValueError, match="diffusion_step_embed_dim"):
        ConditionalUnet1D(3, 6, 7)
    net = tiny_unet()
    with pytest.raises(ValueError, match=r"global_cond must have shape \(2, 6\)"):
        net(torch.randn(2, 8, 3), 0, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\(B, T, 3\)"):
        net(torch.randn(2, 8, 4), 0, torch.randn(2, 6))


def test_unet_without_global_cond():
    net = tiny_unet(global_cond_dim=0)
    x = torch.randn(2, 8, 3)
    out = net(x, 7, None)
    assert out.shape == (2, 8, 3)
    cache = net.prepare_conditioning([7], None)
    torch.testing.assert_close(net.forward_prepared(x, cache, 0), out, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- vision


def test_resnet18_gn_shape_param_count_and_no_batchnorm():
    net = resnet18_gn()
    assert net(torch.rand(1, 3, 70, 33)).shape == (1, 512, 3, 2)  # ceil(70/32), ceil(33/32)
    # Same parameter count as torchvision's resnet18 without fc (GroupNorm affine == BN affine).
    assert sum(p.numel() for p in net.parameters()) == 11_176_512
    norms = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 1 + 8 * 2 + 3  # stem + two per basic block + three downsample paths
    assert {(m.num_channels, m.num_groups) for m in norms} == {
        (64, 4),
        (128, 8),
        (256, 16),
        (512, 32),
    }


def test_narrow_resnet18_keeps_depth_and_strides_with_a_sixteenth_of_the_weights():
    net = resnet18_gn(width=16)
    assert net.out_channels == 128
    assert net(torch.rand(1, 3, 70, 33)).shape == (1, 128, 3, 2)
    n = sum(p.numel() for p in net.parameters())
    # Every 3x3/1x1 conv scales with width², the stem and the norms with width.
    assert 11_176_512 / 16.2 < n < 11_176_512 / 15.5
    assert len([m for m in net.modules() if isinstance(m, nn.Conv2d)]) == 20
    with pytest.raises(ValueError, match="num_groups_fn"):
        resnet18_gn(width=8)  # 8 // 16 = 0 groups


def test_encoder_has_no_batchnorm_and_has_groupnorm():
    enc = ObservationEncoder(2, (3, 40, 40), (36, 36), state_dim=3, num_keypoints=4)
    kinds = {type(m) for m in enc.modules()}
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    assert nn.GroupNorm in kinds
    assert sum(isinstance(m, nn.GroupNorm) for m in enc.modules()) == 2 * 20


def test_spatial_softmax_finds_the_peak():
    H, W, K = 5, 7, 2
    ss = SpatialSoftmax(K, H, W, num_keypoints=K)
    with torch.no_grad():  # identity 1x1 conv: keypoint maps = input maps
        ss.nets.weight.copy_(torch.eye(K)[:, :, None, None])
        ss.nets.bias.zero_()
    feats = torch.zeros(1, K, H, W)
    feats[0, 0, 1, 6] = 60.0  # row 1, column 6 -> x = 1.0, y = -1 + 2/4 = -0.5
    feats[0, 1, 4, 0] = 60.0  # row 4, column 0 -> x = -1.0, y = 1.0
    kp = ss.keypoints(feats)
    assert kp.shape == (1, K, 2)
    torch.testing.assert_close(kp[0], torch.tensor([[1.0, -0.5], [-1.0, 1.0]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        ss(feats), torch.tensor([[1.0, -0.5, -1.0, 1.0]]), atol=1e-5, rtol=0
    )
    # A uniform map gives the centre of the grid.
    torch.testing.assert_close(
        ss.keypoints(torch.zeros(1, K, H, W)), torch.zeros(1, K, 2), atol=1e-6, rtol=0
    )
    with pytest.raises(ValueError, match=r"\(B, 2, 5, 7\)"):
        ss(torch.zeros(1, K, H, W + 1))


def test_crop_eval_is_exact_centre_and_train_is_random():
    imgs = torch.arange(4 * 3 * 10 * 12, dtype=torch.float32).reshape(4, 3, 10, 12)
    centre = crop_images(imgs, (6, 8), random=False, generator=None)
    torch.testing.assert_close(centre, imgs[:, :, 2:8, 2:10], rtol=0, atol=0)

    a = crop_images(imgs, (6, 8), random=True, generator=torch.Generator().manual_seed(1))
    b = crop_images(imgs, (6, 8), random=True, generator=torch.Generator().manual_seed(1))
    c = crop_images(imgs, (6, 8), random=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # Every random crop is a true window of its own image (offset read from its top-left pixel).
    for i in range(4):
        top, left = divmod(int(a[i, 0, 0, 0].item()) - i * 360, 12)
        torch.testing.assert_close(
            a[i], imgs[i, :, top : top + 6, left : left + 8], rtol=0, atol=0
        )
    # Over many draws the offsets cover every position, independently per image.
    many = crop_images(
        imgs.repeat(50, 1, 1, 1), (6, 8), random=True, generator=torch.Generator().manual_seed(3)
    )
    offsets = {int(v) % 360 for v in many[:, 0, 0, 0]}
    assert offsets == {r * 12 + col for r in range(5) for col in range(5)}


def test_encoder_crop_mode_follows_train_eval():
    enc = ObservationEncoder(1, (3, 44, 40), (36, 36), state_dim=0, num_keypoints=2)
    imgs = torch.randint(0, 256, (2, 2, 1, 3, 44, 40), dtype=torch.uint8)
    enc.eval()
    e1, e2 = enc.preprocess(imgs), enc.preprocess(imgs)
    torch.testing.assert_close(
        e1, imgs.flatten(0, 2)[:, :, 4:40, 2:38].float() / 255, rtol=0, atol=0
    )
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    enc.train()
    torch.manual_seed(0)
    t1 = enc.preprocess(imgs)
    t2 = enc.preprocess(imgs)
    torch.manual_seed(0)
    t3 = enc.preprocess(imgs)
    assert t1.shape == (4, 3, 36, 36)
    assert not torch.equal(t1, t2)
    torch.testing.assert_close(t1, t3, rtol=0, atol=0)


def test_encoder_output_shape_uint8_vs_float_and_state_passthrough():
    torch.manual_seed(0)
    enc = ObservationEncoder(2, (3, 48, 72), (40, 64), state_dim=3, num_keypoints=4).eval()
    assert enc.feature_dim_per_step == 2 * 8 + 3
    assert enc.output_dim(2) == 38
    imgs = torch.randint(0, 256, (2, 2, 2, 3, 48, 72), dtype=torch.uint8)
    state = torch.randn(2, 2, 3)
    with torch.no_grad():
        out = enc(imgs, state)
        out_float = enc(imgs.float() / 255.0, state)
    assert out.shape == (2, 38)
    torch.testing.assert_close(out, out_float)
    per_step = out.reshape(2, 2, 19)
    torch.testing.assert_close(per_step[..., 16:], state)  # state last in each step, time order
    assert (per_step[..., :16] >= 0).all()  # ReLU features


def test_encoder_rejects_bad_shapes():
    enc = ObservationEncoder(2, (3, 48, 48), None, state_dim=3, num_keypoints=2)
    state = torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match=r"\(B, T, 2, 3, 48, 48\).*got \(1, 2, 1, 3, 48, 48\)"):
        enc(torch.zeros(1, 2, 1, 3, 48, 48), state)
    with pytest.raises(ValueError, match=r"got \(1, 2, 2, 3, 48, 52\)"):
        enc(torch.zeros(1, 2, 2, 3, 48, 52), state)
    with pytest.raises(ValueError, match=r"state must have shape \(1, 2, 3\)"):
        enc(torch.zeros(1, 2, 2, 3, 48, 48), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="crop_shape"):
        ObservationEncoder(1, (3, 48, 48), (50, 8), state_dim=3)
    with pytest.raises(ValueError, match="1x1 ResNet feature map"):
        ObservationEncoder(1, (3, 48, 48), (32, 32), state_dim=3)
    with pytest.raises(ValueError, match="image_shape"):
        ObservationEncoder(1, (1, 48, 48), None, state_dim=3)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shared_vs_per_camera_parameter_counts():
    kw = {"image_shape": (3, 48, 48), "crop_shape": None, "state_dim": 3, "num_keypoints": 4}
    one = count(ObservationEncoder(1, **kw))
    per_camera = count(ObservationEncoder(2, **kw))
    shared = count(ObservationEncoder(2, share_encoder=True, **kw))
    assert per_camera == 2 * one
    assert shared == one
    # One camera encoder = ResNet-18 trunk + 1x1 keypoint conv + Linear(2K, 2K).
    assert one == 11_176_512 + (512 * 4 + 4) + (8 * 8 + 8)


def test_end_to_end_gradient_reaches_encoder_and_unet():
    torch.manual_seed(0)
    enc = ObservationEncoder(2, (3, 40, 40), (36, 36), state_dim=3, num_keypoints=4)
    net = ConditionalUnet1D(3, enc.output_dim(2), 8, down_dims=(8, 16), kernel_size=3, n_groups=4)
    imgs = torch.randint(0, 256, (2, 2, 2, 3, 40, 40), dtype=torch.uint8)
    state, actions = torch.randn(2, 2, 3), torch.randn(2, 8, 3)
    noise = torch.randn_like(actions)
    pred = net(actions + noise, torch.tensor([3, 40]), enc(imgs, state))
    loss = nn.functional.mse_loss(pred, noise)
    loss.backward()
    for name, module in (
        ("stem conv", enc.encoders[0].backbone.conv1),
        ("camera 1 stem conv", enc.encoders[1].backbone.conv1),
        ("keypoint conv", enc.encoders[0].pool.nets),
        ("unet FiLM", net.down_modules[0][0].cond_encoder[1]),
        ("unet output conv", net.final_conv[1]),
    ):
        grad = module.weight.grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name


@pytest.mark.parametrize("length", [4, 7, 16])
def test_packed_down_up_sampling_and_residual_match_torch(length: int) -> None:
    from diffusion_policy_node.policy.unet1d import (
        ConditionalResidualBlock1D,
        Downsample1d,
        Upsample1d,
    )

    torch.manual_seed(0)
    x = torch.randn(2, 24, length)
    for module in (Downsample1d(24), Upsample1d(24)):
        module.eval()
        with torch.no_grad():
            reference = module(x)
            packed = pack_block(module)(x)
        assert packed.shape == reference.shape
        assert torch.allclose(packed, reference, atol=1e-5), type(module).__name__
    block = ConditionalResidualBlock1D(24, 16, cond_dim=6, n_groups=8).eval()
    cond = torch.randn(2, 6)
    with torch.no_grad():
        reference = block(x, cond)
        packed_block = pack_block(block)
        assert packed_block.packed_residual is not None
        assert torch.allclose(packed_block(x, cond), reference, atol=1e-5)


def test_packed_unet_matches_the_plain_unet() -> None:
    torch.manual_seed(0)
    net = ConditionalUnet1D(
        input_dim=3, global_cond_dim=10, down_dims=(16, 32, 64), diffusion_step_embed_dim=8
    ).eval()
    randomize_final_layer(net)  # else the output is zero whatever the trunk computes
    sample, t, g = torch.randn(2, 16, 3), torch.tensor([3, 70]), torch.randn(2, 10)
    with torch.no_grad():
        reference = net(sample, t, g)
        pack_for_inference(net, True)
        packed = net(sample, t, g)
        pack_for_inference(net, False)
        again = net(sample, t, g)
    assert reference.abs().mean() > 0.01
    assert torch.allclose(packed, reference, atol=1e-5)
    assert torch.equal(again, reference)


def test_packed_conv_block_matches_conv_and_training_ignores_it() -> None:
    from diffusion_policy_node.policy.unet1d import Conv1dBlock

    torch.manual_seed(0)
    block = Conv1dBlock(24, 16, 5, n_groups=8).eval()
    x = torch.randn(3, 24, 8)
    with torch.no_grad():
        reference = block(x)
        packed_block = pack_block(block)
        packed = packed_block(x)
    assert torch.allclose(packed, reference, atol=1e-5)
    packed_block.train()
    y = packed_block(x)
    y.sum().backward()
    assert block.block[0].weight.grad is not None  # training runs the real Conv1d
