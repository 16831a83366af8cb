"""DiffusionPolicy: loss, sampling, reproducibility, inference settings, EMA, normalizer."""

import math

import numpy as np
import pytest
import torch

from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.constants import ACTION, ACTION_IS_PAD, OBS_STATE
from diffusion_policy_node.policy.ema import EMAModel
from diffusion_policy_node.policy.modeling import DiffusionPolicy
from diffusion_policy_node.policy.normalizer import MinMaxNormalizer
from tests.factories import tiny_config, tiny_observation
from tests.factories import tiny_policy as tiny_policy_of

# Two cameras, and an action narrower than the state (no joint names).
TINY = {
    "cameras": ["/cam_a", "/cam_b"],
    "joints": (),
    "state_dim": 3,
    "action_dim": 2,
    "horizon": 8,
    "n_action_steps": 4,
    "num_keypoints": 4,
    "num_train_timesteps": 20,
    "num_inference_steps": 5,
}
STATE_RANGE = ([-1, -2, -3], [1, 2, 3])
ACTION_RANGE = ([0.0, -5.0], [2.0, 5.0])


def tiny_policy(**overrides) -> DiffusionPolicy:
    config = tiny_config(**{**TINY, **overrides})
    return tiny_policy_of(config, state_range=STATE_RANGE, action_range=ACTION_RANGE)


def tiny_obs(batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    return tiny_observation(tiny_config(**TINY), batch=batch, seed=seed)


def test_compute_loss_is_finite_and_trains_every_part() -> None:
    policy = tiny_policy().train()
    batch = dict(tiny_obs(batch=4))
    batch[ACTION] = torch.rand(4, 8, 2)
    loss = policy.compute_loss(batch)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    loss.backward()
    for name in ("obs_encoder", "network"):
        grads = [p.grad for n, p in policy.named_parameters() if n.startswith(name)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_padded_actions_do_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = tiny_policy().eval()  # eval: centre crop, so the only random draws are ε and t
    # A zero ε-prediction makes the loss the masked mean of ε², which we can recompute.
    monkeypatch.setattr(
        policy.network, "forward", lambda sample, t, cond: torch.zeros_like(sample)
    )
    batch = dict(tiny_obs(batch=2))
    batch[ACTION] = torch.zeros(2, 8, 2)
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[0, 6:] = True
    pad[1, 3:] = True
    batch[ACTION_IS_PAD] = pad
    torch.manual_seed(3)
    loss = policy.compute_loss(batch)
    torch.manual_seed(3)
    noise = torch.randn(2, 8, 2)
    valid = (~pad).unsqueeze(-1).float()
    expected = (noise**2 * valid).sum() / (valid.sum() * 2)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert loss.item() != pytest.approx((noise**2).mean().item(), rel=1e-3)


@pytest.mark.parametrize(("scheduler", "steps"), [("ddim", 1), ("ddim", 5), ("ddpm", 20)])
def test_chunk_shape_and_range(scheduler: str, steps: int) -> None:
    policy = tiny_policy().eval()
    policy.set_inference(scheduler, steps)
    chunk = policy.predict_action_chunk(tiny_obs(batch=3))
    assert chunk.shape == (3, 8, 2)
    # clip_sample keeps x̂_0 in [-1, 1], so the final sample lies in the data's action range.
    assert torch.isfinite(chunk).all()
    assert (chunk[..., 0] >= -1e-4).all() and (chunk[..., 0] <= 2 + 1e-4).all()
    assert (chunk[..., 1] >= -5 - 1e-4).all() and (chunk[..., 1] <= 5 + 1e-4).all()


def test_seeded_sampling_is_reproducible_and_reset_restarts_it() -> None:
    policy = tiny_policy().eval()
    obs = tiny_obs()
    policy.seed(123)
    first = policy.predict_action_chunk(obs)
    second = policy.predict_action_chunk(obs)
    assert not torch.equal(first, second)  # the noise stream moves on within an episode
    policy.reset()
    assert torch.equal(policy.predict_action_chunk(obs), first)


def test_observation_conditions_the_chunk() -> None:
    policy = tiny_policy().eval()
    policy.seed(0)
    a = policy.predict_action_chunk(tiny_obs(seed=1))
    policy.reset()
    b = policy.predict_action_chunk(tiny_obs(seed=2))
    assert not torch.allclose(a, b)


def test_bad_inference_settings_are_named() -> None:
    policy = tiny_policy()
    with pytest.raises(ValueError, match="num_inference_steps"):
        policy.set_inference("ddim", 0)
    with pytest.raises(ValueError, match="num_inference_steps"):
        policy.set_inference("ddim", 21)
    with pytest.raises(ValueError, match="noise_scheduler"):
        policy.set_inference("euler", 5)


def test_wrong_observation_shape_is_named() -> None:
    policy = tiny_policy().eval()
    obs = tiny_obs()
    obs[OBS_STATE] = obs[OBS_STATE][..., :2]
    with pytest.raises(ValueError, match=r"observation.state: expected \(B, 2, 3\)"):
        policy.predict_action_chunk(obs)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("horizon", 7, "horizon=7"),
        ("n_action_steps", 8, "n_action_steps"),
        ("crop_shape", (48, 48), "crop_shape"),
        ("beta_schedule", "cosine", "beta_schedule"),
        ("joint_names", ["a"], "joint_names"),
        ("dt", 0.0, "dt"),
        ("encoder_width", 24, "encoder_width=24"),
        ("network", "transformer", r"network='transformer': expected one of \('unet',\)"),
        ("diffusion_step_embed_dim", 5, "diffusion_step_embed_dim=5"),
        ("n_groups", 0, "n_groups=0"),
    ],
)
def test_config_validation_names_the_field(field: str, value, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_config(**{**TINY, field: value})


def test_config_dict_round_trip() -> None:
    config = tiny_config(**TINY)
    assert PolicyConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"unknown PolicyConfig field\(s\) \['horizn'\]"):
        PolicyConfig.from_dict({**config.to_dict(), "horizn": 3})


def test_normalizer_maps_range_to_unit_interval_and_back() -> None:
    norm = MinMaxNormalizer(3)
    norm.fit(torch.tensor([0.0, -2.0, 5.0]), torch.tensor([4.0, 2.0, 5.0]))
    x = torch.tensor([[0.0, -2.0, 5.0], [4.0, 2.0, 5.0], [1.0, 0.0, 5.0]])
    y = norm.normalize(x)
    expected = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [-0.5, 0.0, -1.0]])
    assert torch.allclose(y, expected)
    assert torch.allclose(norm.unnormalize(y), x)
    with pytest.raises(ValueError, match="max < min"):
        norm.fit(torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 1]))


def test_a_dimension_that_never_moved_is_commanded_at_its_recorded_value() -> None:
    # e.g. a wrist joint every demonstration held at -pi/2: whatever the model outputs there
    # (noise, nothing was learnt), the command is the recorded value, never min + [0, 2]
    norm = MinMaxNormalizer(2)
    norm.fit(torch.tensor([0.0, -1.5708]), torch.tensor([4.0, -1.5708]))
    y = torch.tensor([[-1.0, -1.0], [0.0, 0.37], [1.0, 1.0], [0.5, -0.8]])
    x = norm.unnormalize(y)
    assert torch.allclose(x[:, 1], torch.full((4,), -1.5708))
    assert torch.allclose(x[:, 0], torch.tensor([0.0, 2.0, 4.0, 3.0]))
    assert norm.unnormalize(y.to(torch.float64)).dtype == torch.float64


def test_ema_decay_schedule_and_average() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.0)
    ema = EMAModel(model, power=0.75, max_decay=0.9999)
    # Chi et al.'s warm-up: 0 for the first steps, then 1 - (1 + step)^-0.75, capped.
    assert ema.get_decay(0) == 0.0 and ema.get_decay(1) == 0.0
    assert ema.get_decay(2) == pytest.approx(1 - 2**-0.75)
    assert ema.get_decay(10**9) == 0.9999
    for step in range(5):
        with torch.no_grad():
            model.weight.fill_(float(step + 1))
        decay = ema.step(model)
        assert decay == ema.get_decay(step)
    # Hand-rolled recursion of the same average.
    avg = 0.0
    for step in range(5):
        d = ema.get_decay(step)
        avg = d * avg + (1 - d) * (step + 1)
    assert ema.averaged_model.weight.item() == pytest.approx(avg)


@pytest.mark.parametrize("batch", [1, 3])
def test_jit_acceleration_keeps_the_numbers(batch: int) -> None:
    policy = tiny_policy().eval()
    obs = tiny_obs(batch=batch, seed=4)
    policy.seed(9)
    eager = policy.predict_action_chunk(obs)
    policy.enable_acceleration("jit")
    assert policy.obs_encoder.camera_runners is not None
    policy.seed(9)
    fast = policy.predict_action_chunk(obs)
    assert torch.allclose(fast, eager, atol=1e-5), (fast - eager).abs().max()
    # Training never uses the frozen copies: they would not receive gradients.
    policy.train()
    batch_ = dict(tiny_obs(batch=2))
    batch_[ACTION] = torch.rand(2, 8, 2)
    policy.compute_loss(batch_).backward()
    assert policy.obs_encoder.encoders[0].backbone.conv1.weight.grad is not None
    policy.enable_acceleration("none")
    assert policy.obs_encoder.camera_runners is None


def test_reduced_precision_stays_close_and_bad_modes_are_named() -> None:
    policy = tiny_policy().eval()
    obs = tiny_obs(seed=4)
    policy.seed(9)
    ref = policy.predict_action_chunk(obs)
    policy.set_precision(torch.bfloat16)
    policy.seed(9)
    low = policy.predict_action_chunk(obs)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    # Same noise, same network up to bf16 rounding: close relative to the action range (10).
    assert (low - ref).abs().max() < 0.5
    with pytest.raises(ValueError, match="acceleration must be"):
        policy.enable_acceleration("tensorrt")
    with pytest.raises(ValueError, match="needs the policy on a CUDA device"):
        policy.enable_acceleration("cudagraph")
    with pytest.raises(ValueError, match="precision must be"):
        policy.set_precision(torch.int8)


def test_ddpm_with_fewer_steps_uses_the_respaced_chain() -> None:
    policy = tiny_policy().eval()
    policy.set_inference("ddpm", 5)
    assert policy.inference_scheduler.timesteps.tolist() == [16, 12, 8, 4, 0]
    policy.seed(0)
    chunk = policy.predict_action_chunk(tiny_obs())
    assert torch.isfinite(chunk).all()
