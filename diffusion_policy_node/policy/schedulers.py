"""DDPM and DDIM noise schedulers (torch only).

The math follows DDPM (Ho et al. 2020; docs/design.md#the-math): the forward process
``q(x_t | x_0) = N(sqrt(ᾱ_t) x_0, (1 - ᾱ_t) I)`` (eq. 4), the posterior
``q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I)`` (eqs. 6-7) and Algorithm 2 (ancestral sampling);
DDIM follows Song et al. 2021, eqs. 12 and 16. Names and numbers match ``diffusers``'
``DDPMScheduler`` / ``DDIMScheduler`` ("leading" timestep spacing) so a test can compare them.

Timesteps are 0-based as in diffusers: ``alphas_cumprod[t]`` is ᾱ of the paper's step t + 1.

Numbers: ``betas``/``alphas``/``alphas_cumprod`` are float32 tensors built as diffusers builds
them, and every coefficient is computed with diffusers' float32 expressions, so on the CPU our
samples are bit-identical to diffusers' for the same inputs and generator (tests check 1e-5).

Speed: per-timestep coefficients are precomputed once (``set_timesteps``) as Python floats, so
``step`` is a dict lookup plus a few elementwise ops, works for any sample dtype/device, and never
synchronises a GPU (no ``.item()``, no coefficient tensors to move).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch

__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "SCHEDULER_NAMES",
    "VARIANCE_TYPES",
    "DDIMScheduler",
    "DDPMScheduler",
    "SchedulerOutput",
    "make_betas",
    "make_scheduler",
]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
VARIANCE_TYPES = ("fixed_small", "fixed_large")
PREDICTION_TYPES = ("epsilon", "sample")
SCHEDULER_NAMES = ("ddpm", "ddim")


@dataclass(frozen=True)
class SchedulerOutput:
    """Result of one reverse step; both tensors have the shape of the sample."""

    prev_sample: torch.Tensor  # x_{t-1} (or x at the previous inference timestep)
    pred_original_sample: torch.Tensor  # x̂_0 predicted at this step (after clipping)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_range(beta_schedule: str, beta_start: float, beta_end: float) -> None:
    if not 0.0 < beta_start <= beta_end < 1.0:
        raise ValueError(
            f"{beta_schedule} beta schedule needs 0 < beta_start <= beta_end < 1, got "
            f"beta_start={beta_start!r}, beta_end={beta_end!r}"
        )


def make_betas(
    beta_schedule: str,
    num_train_timesteps: int,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Variance schedule β_1..β_T as a ``(num_train_timesteps,)`` tensor of ``dtype``.

    ``linear``: evenly spaced from ``beta_start`` to ``beta_end`` (DDPM paper: 1e-4..0.02).
    ``squaredcos_cap_v2``: Nichol & Dhariwal's cosine schedule,
    ``β_i = min(1 - ᾱ((i+1)/T) / ᾱ(i/T), 0.999)`` with ``ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)``
    (diffusers' ``betas_for_alpha_bar``); ``beta_start``/``beta_end`` are ignored.
    """
    _check_int("num_train_timesteps", num_train_timesteps, 1)
    if beta_schedule == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                "linear beta schedule needs 0 < beta_start <= beta_end < 1, got "
                f"beta_start={beta_start!r}, beta_end={beta_end!r}"
            )
        # float32 linspace as diffusers (the float64 one rounds differently in the last bit).
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":  # latent diffusion's, as diffusers
        _check_range(beta_schedule, beta_start, beta_end)
        betas = (
            torch.linspace(
                beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32
            )
            ** 2
        )
    elif beta_schedule == "sigmoid":  # GeoDiff's, as diffusers
        _check_range(beta_schedule, beta_start, beta_end)
        betas = torch.linspace(-6, 6, num_train_timesteps)
        betas = torch.sigmoid(betas) * (beta_end - beta_start) + beta_start
    elif beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        T = num_train_timesteps
        betas = torch.tensor(  # computed in float64 (Python floats) as diffusers
            [min(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)],
            dtype=torch.float64,
        )
    else:
        raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    return betas.to(dtype)


class _NoiseScheduler:
    """Shared schedule tables and the closed-form forward process q(x_t | x_0)."""

    def __init__(
        self,
        num_train_timesteps: int,
        beta_start: float,
        beta_end: float,
        beta_schedule: str,
        clip_sample: bool,
        clip_sample_range: float,
        prediction_type: str,
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}"
            )
        if not (isinstance(clip_sample_range, (int, float)) and clip_sample_range > 0):
            raise ValueError(f"clip_sample_range must be > 0, got {clip_sample_range!r}")
        self.num_train_timesteps = num_train_timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        self.beta_schedule = beta_schedule
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.prediction_type = prediction_type

        # float32 tables built exactly as diffusers builds them (float32 linspace and cumprod), so
        # sampling agrees with diffusers to float32 rounding; coefficients below derive from them.
        betas = make_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self._add_noise_cache: dict[tuple[torch.device, torch.dtype], tuple] = {}
        self._coefs: dict[int, tuple[float, ...]] = {}  # per timestep, from set_timesteps
        self._alpha_prev: dict[int, float] = {}  # ᾱ of the timestep each step returns
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.int64)

    def __len__(self) -> int:
        return self.num_train_timesteps

    def _alpha_prods(
        self, ts: list[int], prev_ts: list[int], final: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 ᾱ_t and ᾱ_prev for each timestep; ``final`` where prev < 0 (end of chain)."""
        acp = self.alphas_cumprod
        alpha_prod_t = acp[torch.tensor(ts)]
        prev = torch.tensor(prev_ts)
        alpha_prod_t_prev = torch.where(prev >= 0, acp[prev.clamp(min=0)], final)
        return alpha_prod_t, alpha_prod_t_prev

    def add_noise(
        self,
        original_samples: torch.Tensor,
        noise: torch.Tensor,
        timesteps: torch.Tensor | int,
    ) -> torch.Tensor:
        """Sample q(x_t | x_0) in closed form (Ho et al. 2020, eq. 4): ``√ᾱ_t x_0 + √(1-ᾱ_t) ε``.

        ``original_samples`` and ``noise``: ``(B, ...)``; ``timesteps``: an int, or an integer
        tensor of shape ``()`` or ``(B,)`` with values in ``[0, num_train_timesteps)``.
        """
        if original_samples.shape != noise.shape:
            raise ValueError(
                f"add_noise: noise shape {tuple(noise.shape)} != original_samples shape "
                f"{tuple(original_samples.shape)}"
            )
        device, dtype = original_samples.device, original_samples.dtype
        key = (device, dtype)
        tables = self._add_noise_cache.get(key)
        if tables is None:
            alphas_cumprod = self.alphas_cumprod.to(device=device, dtype=dtype)
            tables = (alphas_cumprod**0.5, (1 - alphas_cumprod) ** 0.5)
            self._add_noise_cache[key] = tables
        if isinstance(timesteps, torch.Tensor):
            if timesteps.is_floating_point() or timesteps.is_complex():
                raise ValueError(f"add_noise: timesteps must be integers, got {timesteps.dtype}")
            if timesteps.dim() > 1:
                raise ValueError(
                    f"add_noise: timesteps must have shape () or (B,), got "
                    f"{tuple(timesteps.shape)}"
                )
            timesteps = timesteps.to(device)
        else:
            t = operator.index(timesteps)
            if not 0 <= t < self.num_train_timesteps:
                raise ValueError(
                    f"add_noise: timestep {t} outside [0, {self.num_train_timesteps})"
                )
            timesteps = torch.tensor(t, device=device)
        view = (-1,) + (1,) * (original_samples.dim() - 1)
        sqrt_alpha_prod = tables[0][timesteps].reshape(view)
        sqrt_one_minus_alpha_prod = tables[1][timesteps].reshape(view)
        return sqrt_alpha_prod * original_samples + sqrt_one_minus_alpha_prod * noise

    def _step_coefs(self, timestep: torch.Tensor | int) -> tuple[int, tuple[float, ...]]:
        """(t, the coefficients `set_timesteps` precomputed for t); a named error for a
        timestep that is not one of ``timesteps``."""
        t = self._timestep_key(timestep)
        coefs = self._coefs.get(t)
        if coefs is None:
            raise ValueError(
                f"step: timestep {t} is not in scheduler.timesteps "
                f"({self.num_inference_steps} steps); iterate over scheduler.timesteps"
            )
        return t, coefs

    def noise_to_prev(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor | int
    ) -> torch.Tensor:
        """x_prev = √ᾱ_prev x_0 + √(1-ᾱ_prev) ε: `original_samples` noised to the timestep that
        `step(..., timestep, ...)` returns (Ho et al. 2020, eq. 4 at prev = the next inference
        timestep; ᾱ_prev = 1, or DDIM's final_alpha_cumprod, after the last step). RePaint's known
        part."""
        t, _ = self._step_coefs(timestep)
        alpha_prev = self._alpha_prev[t]
        return alpha_prev**0.5 * original_samples + (1 - alpha_prev) ** 0.5 * noise

    def _check_num_inference_steps(self, n: object, who: str = "") -> int:
        T = self.num_train_timesteps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= T:
            raise ValueError(
                f"{who}num_inference_steps must be an int in [1, num_train_timesteps={T}], "
                f"got {n!r}"
            )
        return n

    def _timestep_key(self, timestep: torch.Tensor | int) -> int:
        if isinstance(timestep, torch.Tensor):
            if timestep.numel() != 1 or timestep.is_floating_point():
                raise ValueError(
                    "step: timestep must be an int or a one-element integer tensor, got a "
                    f"{timestep.dtype} tensor of shape {tuple(timestep.shape)}"
                )
            return int(timestep)
        return operator.index(timestep)

    def _pred_x0_and_eps(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        sqrt_alpha_prod_t: float,
        sqrt_beta_prod_t: float,
        need_eps: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x̂_0 and ε̂ from the model output (Ho et al. 2020, eq. 4 solved for x_0, or for ε)."""
        if self.prediction_type == "epsilon":
            pred_epsilon = model_output
            pred_original_sample = (sample - sqrt_beta_prod_t * model_output) / sqrt_alpha_prod_t
        else:  # "sample"
            pred_original_sample = model_output
            pred_epsilon = None
            if need_eps:
                pred_epsilon = (sample - sqrt_alpha_prod_t * model_output) / sqrt_beta_prod_t
        return pred_original_sample, pred_epsilon

    def epsilon_from_output(
        self, model_output: torch.Tensor, timestep: torch.Tensor | int, sample: torch.Tensor
    ) -> torch.Tensor:
        """ε̂ at `timestep` from the network's output (ε̂ itself, or x̂_0 for "sample"
        prediction: ε̂ = (x_t − √ᾱ_t x̂_0) / √(1−ᾱ_t), eq. 4 solved for ε)."""
        if self.prediction_type == "epsilon":
            return model_output
        _, coefs = self._step_coefs(timestep)
        sqrt_alpha_prod_t, sqrt_beta_prod_t = coefs[0], coefs[1]
        return (sample - sqrt_alpha_prod_t * model_output) / sqrt_beta_prod_t

    def _clip(self, pred_original_sample: torch.Tensor) -> torch.Tensor:
        if self.clip_sample:
            r = self.clip_sample_range
            return pred_original_sample.clamp(-r, r)
        return pred_original_sample

    @staticmethod
    def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """N(0, I) noise shaped like ``like``; drawn as diffusers' ``randn_tensor`` does.

        A CPU generator with a non-CPU sample draws on the CPU and moves the noise, so a seed
        gives the same numbers on every device.
        """
        device = like.device
        if generator is not None and generator.device.type != device.type:
            if generator.device.type != "cpu":
                raise ValueError(
                    f"generator on {generator.device} cannot draw noise for a sample on {device}; "
                    "use a CPU generator or one on the sample's device"
                )
            noise = torch.randn(like.shape, generator=generator, device="cpu", dtype=like.dtype)
            return noise.to(device)
        return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype)


class DDPMScheduler(_NoiseScheduler):
    """DDPM ancestral sampler (Ho et al. 2020, Algorithm 2) and forward process.

    ``timesteps`` starts as ``T-1, ..., 0``; ``set_timesteps(n)`` subsamples them with
    diffusers' "leading" spacing, and ``step`` then uses the respaced β between consecutive
    kept timesteps (``β = 1 - ᾱ_t / ᾱ_prev``), exactly as diffusers does.
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "squaredcos_cap_v2",
        variance_type: str = "fixed_small",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
    ) -> None:
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(
                f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}"
            )
        super().__init__(
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule,
            clip_sample,
            clip_sample_range,
            prediction_type,
        )
        self.variance_type = variance_type
        # Posterior q(x_{t-1} | x_t, x_0) on the training chain (prev = t - 1), Ho et al. 2020,
        # eq. 7, in float64 from the stored ᾱ (α_t = ᾱ_t/ᾱ_{t-1}) so it is consistent with
        # add_noise.
        acp = self.alphas_cumprod.double()
        acp_prev = torch.cat([acp.new_ones(1), acp[:-1]])
        alphas = acp / acp_prev
        betas = 1.0 - alphas
        self._posterior_coef_x0 = acp_prev.sqrt() * betas / (1.0 - acp)
        self._posterior_coef_xt = alphas.sqrt() * (1.0 - acp_prev) / (1.0 - acp)
        self._eps_coef = betas / (1.0 - acp).sqrt()  # β_t / √(1-ᾱ_t)
        self._inv_sqrt_alphas = 1.0 / alphas.sqrt()  # 1 / √α_t
        self._coefs: dict[int, tuple[float, float, float, float, float]] = {}
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int | None = None) -> None:
        """Choose the sampling timesteps ("leading" spacing; ``None`` = every training step).

        ``timesteps = arange(n) * (T // n)`` reversed, e.g. T=100, n=10 gives 90, 80, ..., 0.
        Precomputes the per-timestep coefficients used by ``step``.
        """
        T = self.num_train_timesteps
        n = self._check_num_inference_steps(
            T if num_inference_steps is None else num_inference_steps
        )
        step_ratio = T // n
        ts = [i * step_ratio for i in range(n - 1, -1, -1)]
        prev_ts = [*ts[1:], -1]
        # Vectorised float32 arithmetic in the same order as diffusers' step / _get_variance.
        alpha_prod_t, alpha_prod_t_prev = self._alpha_prods(ts, prev_ts, torch.tensor(1.0))
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        current_alpha_t = alpha_prod_t / alpha_prod_t_prev  # respaced α_t
        current_beta_t = 1 - current_alpha_t  # respaced β_t
        coef_x0 = (alpha_prod_t_prev**0.5 * current_beta_t) / beta_prod_t  # eq. 7, x_0 term
        coef_xt = current_alpha_t**0.5 * beta_prod_t_prev / beta_prod_t  # eq. 7, x_t term
        if self.variance_type == "fixed_small":  # β̃_t of eq. 7, clamped as diffusers
            variance = torch.clamp(beta_prod_t_prev / beta_prod_t * current_beta_t, min=1e-20)
        else:  # "fixed_large": σ_t² = β_t
            variance = current_beta_t
        # Algorithm 2 line 3: no noise at t = 0.
        std = torch.where(torch.tensor(ts) > 0, variance**0.5, torch.zeros(()))
        rows = zip(
            (alpha_prod_t**0.5).tolist(),
            (beta_prod_t**0.5).tolist(),
            coef_x0.tolist(),
            coef_xt.tolist(),
            std.tolist(),
            strict=True,
        )
        coefs = dict(zip(ts, rows, strict=True))
        self._coefs = coefs
        self._alpha_prev = dict(zip(ts, alpha_prod_t_prev.tolist(), strict=True))
        self.num_inference_steps = n
        self.timesteps = torch.tensor(ts, dtype=torch.int64)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput:
        """One reverse step x_t -> x_{prev} of Algorithm 2, written via the posterior (eq. 7).

        ``model_output`` (ε̂ or x̂_0, per ``prediction_type``) and ``sample`` (x_t) share a
        shape ``(B, ...)``; ``timestep`` is an element of ``timesteps`` (int or 1-element tensor).
        Noise ``z`` has the shape/dtype of ``model_output`` and is drawn only when t > 0.
        """
        # 1. Coefficients of this timestep (ᾱ_t, ᾱ_prev, respaced β_t), from set_timesteps.
        t, coefs = self._step_coefs(timestep)
        sqrt_alpha_prod_t, sqrt_beta_prod_t, coef_x0, coef_xt, std = coefs
        # 2. Predicted x_0 from ε (eq. 4 solved for x_0): x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t.
        pred_original_sample, _ = self._pred_x0_and_eps(
            model_output, sample, sqrt_alpha_prod_t, sqrt_beta_prod_t, need_eps=False
        )
        # 3. Optionally clip x̂_0 to [-clip_sample_range, clip_sample_range].
        pred_original_sample = self._clip(pred_original_sample)
        # 4. Posterior mean (eq. 7): μ̃ = √ᾱ_{t-1} β_t/(1-ᾱ_t) x̂_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t.
        prev_sample = coef_x0 * pred_original_sample + coef_xt * sample
        # 5.-6. Add σ_t z (Algorithm 2 line 4), σ_t² = β̃_t or β_t; z = 0 at t = 0 (line 3).
        if t > 0:
            noise = self._randn(model_output, generator)
            prev_sample = prev_sample + std * noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _posterior_coef(
        self, table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor
    ) -> torch.Tensor | float:
        if isinstance(t, torch.Tensor):
            view = (-1,) + (1,) * (like.dim() - 1)
            table = table.to(device=like.device, dtype=like.dtype)
            return table[t.to(like.device)].reshape(view)
        return float(table[operator.index(t)])

    def posterior_mean(
        self, x_t: torch.Tensor, x_0: torch.Tensor, t: torch.Tensor | int
    ) -> torch.Tensor:
        """μ̃_t(x_t, x_0) of Ho et al. 2020, eq. 7 on the training chain (t -> t-1).

        ``√ᾱ_{t-1} β_t / (1-ᾱ_t) · x_0 + √α_t (1-ᾱ_{t-1}) / (1-ᾱ_t) · x_t`` (ᾱ_{-1} = 1);
        ``t``: int or ``(B,)`` tensor.
        """
        c0 = self._posterior_coef(self._posterior_coef_x0, t, x_t)
        ct = self._posterior_coef(self._posterior_coef_xt, t, x_t)
        return c0 * x_0 + ct * x_t

    def posterior_mean_from_eps(
        self, x_t: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int
    ) -> torch.Tensor:
        """The same mean written with ε (Algorithm 2 line 4): ``(x_t - β_t/√(1-ᾱ_t) ε) / √α_t``."""
        ce = self._posterior_coef(self._eps_coef, t, x_t)
        inv = self._posterior_coef(self._inv_sqrt_alphas, t, x_t)
        return (x_t - ce * eps) * inv


class DDIMScheduler(_NoiseScheduler):
    """DDIM sampler (Song et al. 2021, eq. 12) for a DDPM-trained model; η=0 is deterministic.

    Call ``set_timesteps(n)`` before ``step``. With ``set_alpha_to_one`` the step past the end
    of the chain uses ᾱ = 1 (so the last step returns x̂_0), otherwise ᾱ_0.
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "squaredcos_cap_v2",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        prediction_type: str = "epsilon",
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
    ) -> None:
        super().__init__(
            num_train_timesteps,
            beta_start,
            beta_end,
            beta_schedule,
            clip_sample,
            clip_sample_range,
            prediction_type,
        )
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.steps_offset = _check_int("steps_offset", steps_offset, 0)
        if steps_offset >= num_train_timesteps:
            raise ValueError(
                f"steps_offset={steps_offset} must be < num_train_timesteps={num_train_timesteps}"
            )
        self.final_alpha_cumprod = (
            torch.tensor(1.0) if self.set_alpha_to_one else self.alphas_cumprod[0].clone()
        )
        self._coefs: dict[int, tuple[float, float, float, float]] = {}
        self._eta_coefs: dict[float, dict[int, tuple[float, float]]] = {}
        self._alpha_prod_t_prev = torch.zeros(0)
        self._variance = torch.zeros(0)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose ``n`` sampling timesteps with "leading" spacing (diffusers' default).

        ``step_ratio = T // n``; ``timesteps = arange(n) * step_ratio`` reversed, plus
        ``steps_offset`` (T=100, n=10: 90, 80, ..., 0). Precomputes ``step``'s coefficients.
        """
        T = self.num_train_timesteps
        n = self._check_num_inference_steps(num_inference_steps, "DDIM ")
        step_ratio = T // n
        ts = [i * step_ratio + self.steps_offset for i in range(n - 1, -1, -1)]
        if ts[0] >= T:
            raise ValueError(
                f"DDIM num_inference_steps={n} with steps_offset={self.steps_offset} reaches "
                f"timestep {ts[0]} >= num_train_timesteps={T}; use fewer steps or a smaller offset"
            )
        prev_ts = [t - step_ratio for t in ts]  # as diffusers: t minus the spacing
        alpha_prod_t, alpha_prod_t_prev = self._alpha_prods(ts, prev_ts, self.final_alpha_cumprod)
        beta_prod_t = 1 - alpha_prod_t
        beta_prod_t_prev = 1 - alpha_prod_t_prev
        # eq. 16 with η = 1: σ_t² = (1-ᾱ_prev)/(1-ᾱ_t) · (1 - ᾱ_t/ᾱ_prev)
        variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
        rows = zip(
            (alpha_prod_t**0.5).tolist(),
            (beta_prod_t**0.5).tolist(),
            (alpha_prod_t_prev**0.5).tolist(),
            ((1 - alpha_prod_t_prev) ** 0.5).tolist(),  # direction coefficient for η = 0
            strict=True,
        )
        self._coefs = dict(zip(ts, rows, strict=True))
        self._alpha_prev = dict(zip(ts, alpha_prod_t_prev.tolist(), strict=True))
        self._alpha_prod_t_prev = alpha_prod_t_prev
        self._variance = variance
        self._eta_coefs = {}
        self.num_inference_steps = n
        self.timesteps = torch.tensor(ts, dtype=torch.int64)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | int,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput:
        """One DDIM step x_t -> x_{t - T//n} (Song et al. eq. 12).

        ``model_output`` and ``sample``: ``(B, ...)``; ``eta`` in [0, 1] scales σ_t (0: DDIM,
        deterministic; 1: DDPM-like). Noise (shape/dtype of ``model_output``) is drawn when η > 0.
        """
        if self.num_inference_steps is None:
            raise RuntimeError(
                "DDIMScheduler.step called before set_timesteps; call "
                "scheduler.set_timesteps(num_inference_steps) first"
            )
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta!r}")
        # 1. Coefficients of t and prev_t = t - T//n (ᾱ_prev = final_alpha_cumprod past the end).
        t, coefs = self._step_coefs(timestep)
        sqrt_alpha_prod_t, sqrt_beta_prod_t, sqrt_alpha_prod_t_prev, direction_coef = coefs
        # 2. "predicted x_0" of eq. 12: x̂_0 = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t.
        pred_original_sample, pred_epsilon = self._pred_x0_and_eps(
            model_output, sample, sqrt_alpha_prod_t, sqrt_beta_prod_t
        )
        # 3. Optionally clip x̂_0 (ε̂ stays the model's, as diffusers' default).
        pred_original_sample = self._clip(pred_original_sample)
        # 4. σ_t(η) = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_prev) (eq. 16); 0 for η = 0.
        # 5. "direction pointing to x_t" of eq. 12: √(1-ᾱ_prev-σ_t²) ε̂.
        std_dev_t = 0.0
        if eta > 0.0:
            std_dev_t, direction_coef = self._eta_table(eta)[t]
        # 6. x_prev = √ᾱ_prev x̂_0 + direction (+ σ_t z, the "random noise" of eq. 12).
        prev_sample = sqrt_alpha_prod_t_prev * pred_original_sample + direction_coef * pred_epsilon
        if eta > 0.0:
            noise = self._randn(model_output, generator)
            prev_sample = prev_sample + std_dev_t * noise
        return SchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _eta_table(self, eta: float) -> dict[int, tuple[float, float]]:
        """(σ_t, √(1-ᾱ_prev-σ_t²)) per timestep for this η, float32 as diffusers; cached."""
        table = self._eta_coefs.get(eta)
        if table is None:
            std_dev_t = eta * self._variance.clamp(min=0) ** 0.5
            direction = (1 - self._alpha_prod_t_prev - std_dev_t**2).clamp(min=0) ** 0.5
            rows = zip(std_dev_t.tolist(), direction.tolist(), strict=True)
            table = dict(zip(self.timesteps.tolist(), rows, strict=True))
            if len(self._eta_coefs) >= 8:  # bound the cache if η keeps changing
                self._eta_coefs.clear()
            self._eta_coefs[eta] = table
        return table


def make_scheduler(name: str, **kwargs: object) -> DDPMScheduler | DDIMScheduler:
    """Build a scheduler by name: ``"ddpm"`` or ``"ddim"``; ``kwargs`` go to its constructor."""
    if name == "ddpm":
        return DDPMScheduler(**kwargs)  # type: ignore[arg-type]
    if name == "ddim":
        return DDIMScheduler(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"scheduler name must be one of {SCHEDULER_NAMES}, got {name!r}")
