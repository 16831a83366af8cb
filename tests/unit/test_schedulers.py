"""DDPM / DDIM schedulers: schedule tables, forward-process statistics, posterior algebra,
number-for-number parity with diffusers, DDIM exactness with an oracle ε, and input errors."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler as RefDDIM
from diffusers import DDPMScheduler as RefDDPM

from diffusion_policy_node.policy.schedulers import (
    BETA_SCHEDULES,
    DDIMScheduler,
    DDPMScheduler,
    SchedulerOutput,
    make_betas,
    make_scheduler,
)

# diffusers implements the sigmoid schedule for DDPM only.
DDIM_SCHEDULES = tuple(s for s in BETA_SCHEDULES if s != "sigmoid")
T = 100  # Diffusion Policy's num_train_timesteps
PARITY_TOL = {"rtol": 1e-5, "atol": 1e-5}


def dummy_eps_model(x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
    """A fixed, deterministic, nonlinear stand-in for ε_θ(x, t)."""
    tf = float(t)
    return 0.8 * torch.sin(1.3 * x + 0.05 * tf) + 0.2 * torch.cos(0.7 * x) * math.cos(0.1 * tf)


def x_start(shape=(2, 8, 3), seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- schedule tables


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_alphas_cumprod_is_running_product_of_alphas(schedule):
    s = DDPMScheduler(T, beta_schedule=schedule)
    assert s.betas.shape == s.alphas.shape == s.alphas_cumprod.shape == (T,)
    torch.testing.assert_close(s.alphas, 1.0 - s.betas, rtol=0, atol=0)
    running, expected = 1.0, []
    for a in s.alphas.double().tolist():
        running *= a
        expected.append(running)
    torch.testing.assert_close(
        s.alphas_cumprod.double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-7,
    )
    assert bool((s.betas > 0).all()) and bool((s.betas <= 0.999).all())


def test_linear_betas_endpoints_and_spacing():
    betas = make_betas("linear", 1000)
    assert betas.dtype == torch.float32 and betas.shape == (1000,)
    assert betas[0].item() == pytest.approx(1e-4, rel=1e-6)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-6)
    diffs = betas.double().diff()
    torch.testing.assert_close(
        diffs, torch.full_like(diffs, (0.02 - 1e-4) / 999), rtol=1e-3, atol=0
    )


def test_cosine_betas_follow_alpha_bar_and_are_capped():
    betas = make_betas("squaredcos_cap_v2", T, dtype=torch.float64)

    def alpha_bar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    # ᾱ_t of the discrete chain equals the continuous ᾱ((t+1)/T) / ᾱ(0) until the cap bites.
    acp = torch.cumprod(1 - betas, 0)
    for t in (0, 10, 50, 90):
        assert acp[t].item() == pytest.approx(alpha_bar((t + 1) / T) / alpha_bar(0), rel=1e-9)
    assert betas[-1].item() == pytest.approx(0.999)  # 1 - ᾱ(1)/ᾱ(0.99) = 1 is capped


# --------------------------------------------------------------------------- forward process


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_add_noise_matches_q_xt_given_x0_statistically(schedule):
    """Empirical mean/variance of add_noise(x_0, ε, t) vs √ᾱ_t x_0 and 1 - ᾱ_t (Ho et al. 2020,
    eq. 4)."""
    s = DDPMScheduler(T, beta_schedule=schedule)
    n = 40_000
    x0 = torch.tensor([1.5, -0.5, 0.0, 2.0], dtype=torch.float64)
    gen = torch.Generator().manual_seed(123)
    for t in (5, 30, 60, 95):
        noise = torch.randn(n, 4, generator=gen, dtype=torch.float64)
        xt = s.add_noise(x0.expand(n, 4), noise, torch.full((n,), t, dtype=torch.long))
        abar = s.alphas_cumprod[t].double()
        var = 1 - abar
        mean_se = math.sqrt(var / n)
        var_se = var * math.sqrt(2 / (n - 1))
        assert torch.allclose(xt.mean(0), abar.sqrt() * x0, atol=5 * mean_se, rtol=0), t
        assert torch.allclose(xt.var(0), var.expand(4), atol=5 * var_se, rtol=0), t
        # The bounds can tell the right moments from the usual slips (ᾱ for √ᾱ, ᾱ for 1-ᾱ).
        assert abs(abar.sqrt() - abar).item() * 2.0 > 5 * mean_se
        assert abs(var - abar).item() > 5 * var_se


def test_add_noise_per_sample_timesteps_int_timestep_and_shapes():
    s = DDPMScheduler(T, beta_schedule="linear")
    x0, noise = x_start((3, 16, 7), 1), x_start((3, 16, 7), 2)
    ts = torch.tensor([0, 42, 99])
    xt = s.add_noise(x0, noise, ts)
    assert xt.shape == x0.shape and xt.dtype == x0.dtype
    for i, t in enumerate(ts.tolist()):
        abar = s.alphas_cumprod[t]
        torch.testing.assert_close(xt[i], abar.sqrt() * x0[i] + (1 - abar).sqrt() * noise[i])
        torch.testing.assert_close(s.add_noise(x0[i : i + 1], noise[i : i + 1], t), xt[i : i + 1])
    xt64 = s.add_noise(x0.double(), noise.double(), ts)
    assert xt64.dtype == torch.float64
    torch.testing.assert_close(xt64.float(), xt)


# --------------------------------------------------------------------------- posterior algebra


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
def test_posterior_mean_from_x0_equals_mean_from_eps(schedule):
    """Ho et al. 2020, eq. 7 (μ̃ from x_t, x_0) equals (x_t - β_t/√(1-ᾱ_t) ε)/√α_t for x_t =
    q-sample."""
    s = DDPMScheduler(T, beta_schedule=schedule)
    x0 = x_start((4, 10, 3), 3, torch.float64)
    eps = x_start((4, 10, 3), 4, torch.float64)
    for t in (0, 1, 17, 50, 98):
        xt = s.add_noise(x0, eps, t)
        mu_x0 = s.posterior_mean(xt, x0, t)
        mu_eps = s.posterior_mean_from_eps(xt, eps, t)
        torch.testing.assert_close(mu_x0, mu_eps, rtol=1e-6, atol=1e-6)
    # Per-sample tensor timesteps give the same per-row results.
    ts = torch.tensor([0, 17, 50, 98])
    xt = s.add_noise(x0, eps, ts)
    torch.testing.assert_close(
        s.posterior_mean(xt, x0, ts), s.posterior_mean_from_eps(xt, eps, ts), rtol=1e-6, atol=1e-6
    )
    # At t = 0 the posterior mean is x_0 itself.
    torch.testing.assert_close(s.posterior_mean(s.add_noise(x0, eps, 0), x0, 0), x0)


@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
def test_ddpm_step_is_posterior_mean_plus_sigma_z(variance_type):
    """Algorithm 2 line 4: x_{t-1} = μ_θ(x_t, t) + σ_t z, σ_t² = β̃_t or β_t, z = 0 at t = 0.

    The reference is float64; ``step`` uses diffusers' float32 coefficient arithmetic, whose
    ratio ᾱ_t/ᾱ_{t-1} leaves β_t with ~1e-4 relative error at the first linear steps, hence
    the looser tolerance at t = 1.
    """
    s = DDPMScheduler(T, beta_schedule="linear", variance_type=variance_type, clip_sample=False)
    acp = s.alphas_cumprod.double()
    acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
    betas = 1 - acp / acp_prev
    x0 = x_start((2, 8, 3), 5, torch.float64)
    eps = x_start((2, 8, 3), 6, torch.float64)
    for t, tol in ((1, 5e-4), (10, 1e-5), (40, 1e-5), (99, 1e-5)):
        xt = s.add_noise(x0, eps, t)
        out = s.step(eps, t, xt, generator=torch.Generator().manual_seed(t))
        z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(t), dtype=xt.dtype)
        if variance_type == "fixed_small":
            var = (1 - acp_prev[t]) / (1 - acp[t]) * betas[t]  # β̃_t, Ho et al. 2020, eq. 7
        else:
            var = betas[t]
        expected = s.posterior_mean_from_eps(xt, eps, t) + var.sqrt() * z
        torch.testing.assert_close(out.prev_sample, expected, rtol=tol, atol=tol)
        torch.testing.assert_close(out.pred_original_sample, x0, rtol=1e-5, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    xt = s.add_noise(x0, eps, 0)
    out = s.step(eps, 0, xt, generator=gen)
    torch.testing.assert_close(out.prev_sample, s.posterior_mean_from_eps(xt, eps, 0))
    assert torch.equal(gen.get_state(), state)  # no noise drawn at t = 0


# --------------------------------------------------------------------------- diffusers parity


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("num_train_timesteps", [T, 1000])
def test_tables_and_add_noise_match_diffusers(schedule, num_train_timesteps):
    ours = DDPMScheduler(num_train_timesteps, beta_schedule=schedule)
    ref = RefDDPM(num_train_timesteps, beta_schedule=schedule)
    torch.testing.assert_close(ours.betas, ref.betas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=1e-5, atol=1e-7)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x0, noise = x_start((5, 16, 4), 7), x_start((5, 16, 4), 8)
    ts = torch.tensor(
        [0, 1, num_train_timesteps // 2, num_train_timesteps - 2, num_train_timesteps - 1]
    )
    torch.testing.assert_close(
        ours.add_noise(x0, noise, ts), ref.add_noise(x0, noise, ts), **PARITY_TOL
    )


@pytest.mark.parametrize("n", [1, 3, 7, 10, 33, 100])
def test_timesteps_match_diffusers(n):
    ddpm, ref_ddpm = DDPMScheduler(T), RefDDPM(T)
    ddpm.set_timesteps(n)
    ref_ddpm.set_timesteps(n)
    assert torch.equal(ddpm.timesteps, ref_ddpm.timesteps)
    for offset in (0, 1):
        ddim, ref_ddim = DDIMScheduler(T, steps_offset=offset), RefDDIM(T, steps_offset=offset)
        if offset + (n - 1) * (T // n) >= T:
            with pytest.raises(ValueError, match="steps_offset"):
                ddim.set_timesteps(n)
            continue
        ddim.set_timesteps(n)
        ref_ddim.set_timesteps(n)
        assert torch.equal(ddim.timesteps, ref_ddim.timesteps)
        assert ddim.timesteps.dtype == torch.int64


def run_loop(scheduler, x, n, generator, **step_kwargs):
    if n is not None:
        scheduler.set_timesteps(n)
    for t in scheduler.timesteps:
        out = scheduler.step(dummy_eps_model(x, t), t, x, generator=generator, **step_kwargs)
        x = out.prev_sample
    return x, out.pred_original_sample


@pytest.mark.parametrize("schedule", BETA_SCHEDULES)
@pytest.mark.parametrize("variance_type", ["fixed_small", "fixed_large"])
@pytest.mark.parametrize("n", [None, 10])
@pytest.mark.parametrize("clip_sample", [True, False])
def test_full_ddpm_loop_matches_diffusers(schedule, variance_type, n, clip_sample):
    cfg = {"beta_schedule": schedule, "variance_type": variance_type, "clip_sample": clip_sample}
    x = x_start()
    ours, ours_x0 = run_loop(DDPMScheduler(T, **cfg), x, n, torch.Generator().manual_seed(1))
    ref, ref_x0 = run_loop(RefDDPM(T, **cfg), x, n, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, ref, **PARITY_TOL)
    torch.testing.assert_close(ours_x0, ref_x0, **PARITY_TOL)
    assert not torch.equal(ours, x)


@pytest.mark.parametrize("schedule", DDIM_SCHEDULES)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("n", [1, 10, 100])
@pytest.mark.parametrize("clip_sample", [True, False])
def test_full_ddim_loop_matches_diffusers(schedule, eta, n, clip_sample):
    cfg = {"beta_schedule": schedule, "clip_sample": clip_sample}
    x = x_start()
    gen_ours, gen_ref = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    ours, ours_x0 = run_loop(DDIMScheduler(T, **cfg), x, n, gen_ours, eta=eta)
    ref, ref_x0 = run_loop(RefDDIM(T, **cfg), x, n, gen_ref, eta=eta)
    torch.testing.assert_close(ours, ref, **PARITY_TOL)
    torch.testing.assert_close(ours_x0, ref_x0, **PARITY_TOL)
    # Same noise draws in the same order: the generators end in the same state.
    assert torch.equal(gen_ours.get_state(), gen_ref.get_state())


@pytest.mark.parametrize(
    ("name", "cfg", "n", "eta"),
    [
        ("ddpm", {"prediction_type": "sample", "beta_schedule": "squaredcos_cap_v2"}, 10, None),
        ("ddim", {"prediction_type": "sample", "beta_schedule": "linear"}, 10, 0.5),
        (
            "ddim",
            {"set_alpha_to_one": False, "steps_offset": 1, "beta_schedule": "linear"},
            10,
            0.0,
        ),
        ("ddim", {"clip_sample_range": 0.5, "beta_schedule": "linear"}, 20, 0.3),
    ],
)
def test_other_options_match_diffusers(name, cfg, n, eta):
    x = x_start(seed=3)
    kwargs = {} if eta is None else {"eta": eta}
    ref_cls = RefDDPM if name == "ddpm" else RefDDIM
    ours, _ = run_loop(
        make_scheduler(name, num_train_timesteps=T, **cfg),
        x,
        n,
        torch.Generator().manual_seed(4),
        **kwargs,
    )
    ref, _ = run_loop(ref_cls(T, **cfg), x, n, torch.Generator().manual_seed(4), **kwargs)
    torch.testing.assert_close(ours, ref, **PARITY_TOL)


# --------------------------------------------------------------------------- DDIM exactness


@pytest.mark.parametrize("schedule", DDIM_SCHEDULES)
@pytest.mark.parametrize("n", [1, 5, 50])
@pytest.mark.parametrize("clip_sample", [True, False])
def test_ddim_eta0_with_oracle_eps_recovers_x0(schedule, n, clip_sample):
    """ε = (x_t - √ᾱ_t x_0)/√(1-ᾱ_t) is exact, so deterministic DDIM lands on x_0."""
    s = DDIMScheduler(T, beta_schedule=schedule, clip_sample=clip_sample)
    s.set_timesteps(n)
    target = 0.9 * torch.tanh(x_start((2, 16, 4), 9))  # inside the clip range
    x = x_start((2, 16, 4), 10)
    for t in s.timesteps:
        abar = s.alphas_cumprod[t]
        eps = (x - abar.sqrt() * target) / (1 - abar).sqrt()
        x = s.step(eps, t, x).prev_sample
    torch.testing.assert_close(x, target, rtol=1e-4, atol=1e-4)


def test_step_accepts_int_and_zero_dim_tensor_timesteps():
    x = x_start()
    eps = dummy_eps_model(x, 50)
    ddim = DDIMScheduler(T)
    ddim.set_timesteps(10)
    a = ddim.step(eps, 50, x)
    b = ddim.step(eps, torch.tensor(50), x)
    assert isinstance(a, SchedulerOutput)
    assert torch.equal(a.prev_sample, b.prev_sample)
    ddpm = DDPMScheduler(T)
    a = ddpm.step(eps, 50, x, generator=torch.Generator().manual_seed(0))
    b = ddpm.step(eps, ddpm.timesteps[49], x, generator=torch.Generator().manual_seed(0))
    assert int(ddpm.timesteps[49]) == 50
    assert torch.equal(a.prev_sample, b.prev_sample)


def test_cpu_generator_draws_on_cpu_for_a_sample_on_another_device():
    """As diffusers' randn_tensor: a seeded CPU generator drives noise for any sample device."""
    s = DDIMScheduler(T)
    s.set_timesteps(10)
    x = torch.empty(2, 8, 3, device="meta")
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = s.step(x, 90, x, eta=1.0, generator=gen)
    assert out.prev_sample.device.type == "meta" and out.prev_sample.shape == x.shape
    assert not torch.equal(gen.get_state(), state)  # the draw consumed the CPU generator


def test_ddpm_default_timesteps_cover_the_training_chain():
    s = DDPMScheduler(T)
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))
    s.set_timesteps(10)
    assert s.timesteps.tolist() == list(range(90, -1, -10))
    s.set_timesteps()
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))


# --------------------------------------------------------------------------- errors


def test_invalid_inputs_raise_clear_errors():
    ddim = DDIMScheduler(T)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        ddim.step(x_start(), 10, x_start())
    for bad in (0, T + 1, -3):
        with pytest.raises(ValueError, match="num_inference_steps"):
            ddim.set_timesteps(bad)
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDPMScheduler(T).set_timesteps(T + 1)
    with pytest.raises(ValueError, match=r"linear.*squaredcos_cap_v2"):
        make_betas("cosine", T)
    with pytest.raises(ValueError, match="beta_schedule"):
        DDIMScheduler(T, beta_schedule="laplace")
    with pytest.raises(ValueError, match="variance_type"):
        DDPMScheduler(T, variance_type="learned")
    with pytest.raises(ValueError, match="prediction_type"):
        DDIMScheduler(T, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="num_train_timesteps"):
        DDPMScheduler(0)
    with pytest.raises(ValueError, match="scheduler name"):
        make_scheduler("pndm")
    ddim.set_timesteps(10)
    with pytest.raises(ValueError, match=r"not in scheduler\.timesteps"):
        ddim.step(x_start(), 55, x_start())
    with pytest.raises(ValueError, match="eta"):
        ddim.step(x_start(), 50, x_start(), eta=-0.1)
    with pytest.raises(ValueError, match="timestep"):
        ddim.step(x_start(), torch.tensor([50, 40]), x_start())


def test_make_scheduler_builds_the_named_scheduler():
    ddpm = make_scheduler("ddpm", num_train_timesteps=50, beta_schedule="linear")
    ddim = make_scheduler("ddim", num_train_timesteps=50, set_alpha_to_one=False)
    assert isinstance(ddpm, DDPMScheduler) and len(ddpm) == 50
    assert ddpm.betas[0].item() == pytest.approx(1e-4)
    assert isinstance(ddim, DDIMScheduler) and not ddim.set_alpha_to_one
