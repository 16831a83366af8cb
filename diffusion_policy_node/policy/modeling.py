"""DiffusionPolicy: vision encoder + an ε-network (networks.py; DDPM training, DDIM sampling)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .accel.cudagraph import CapturedSampler
from .accel.packing import pack_for_inference
from .accel.trace import (
    freeze_prepared_step,
    trace_camera_encoder,
    tracing_warnings_filtered,
)
from .config import PolicyConfig
from .constants import (
    ACTION,
    ACTION_IS_PAD,
    INPAINT_ACTIONS,
    INPAINT_WEIGHTS,
    OBS_IMAGE_FEATURES,
    OBS_IMAGES,
    OBS_STATE,
)
from .networks import EpsilonNetwork, PreparedStep, build_network
from .normalizer import MinMaxNormalizer, StatsNormalizer
from .schedulers import DDPMScheduler, make_scheduler
from .vision import ObservationEncoder

# Checkpoints (and training states) written before the ε-network protocol name the U-Net's
# weights `unet.*`; the network is now `DiffusionPolicy.network`, so loading renames them.
_LEGACY_PREFIX, _NETWORK_PREFIX = "unet.", "network."


def upgrade_legacy_keys(
    state: dict[str, torch.Tensor], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """`state` with the pre-protocol keys `<prefix>unet.*` renamed to `<prefix>network.*`
    (same tensors, same order); keys already in the current form pass through."""
    old, new = prefix + _LEGACY_PREFIX, prefix + _NETWORK_PREFIX
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def _upgrade_on_load(module: nn.Module, state_dict: dict, prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: rename legacy keys in place before the strict key check."""
    upgraded = upgrade_legacy_keys(state_dict, prefix)
    if upgraded.keys() != state_dict.keys():
        state_dict.clear()
        state_dict.update(upgraded)


def _as_tensor(value: Any, device: torch.device, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"observation '{name}': expected a numpy array or tensor, got {type(value)}"
        )
    return value.to(device, non_blocking=True)


class DiffusionPolicy(nn.Module):
    """Chi et al.'s CNN-based Diffusion Policy.

    Training: `compute_loss(batch)` (Algorithm 1 with ε-prediction). Inference:
    `predict_action_chunk(obs) -> (B, horizon, action_dim)` in robot units; the observation is
    encoded once and the ε-network prepares its conditioning for every denoising step once per
    chunk (the U-Net: all FiLM parameters), so the loop only runs the network's trunk and the
    scheduler update. The ε-network (`config.network`) is used only through `EpsilonNetwork`.
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        self.image_normalizer: StatsNormalizer | None = None
        if config.normalization is None:
            self.state_normalizer: nn.Module = MinMaxNormalizer(config.state_dim)
            self.action_normalizer: nn.Module = MinMaxNormalizer(config.action_dim)
        else:
            modes = config.normalization
            self.state_normalizer = StatsNormalizer(
                (config.state_dim,), modes.get("state", "identity")
            )
            self.action_normalizer = StatsNormalizer(
                (config.action_dim,), modes.get("action", "identity")
            )
            if modes.get("images", "identity") != "identity":
                self.image_normalizer = StatsNormalizer(
                    (config.n_cameras, 3, 1, 1), modes["images"]
                )
        self.obs_encoder = ObservationEncoder(
            n_cameras=config.n_cameras,
            image_shape=(3, *config.image_size),
            crop_shape=config.crop_shape,
            state_dim=config.state_dim,
            num_keypoints=config.num_keypoints,
            share_encoder=config.share_encoder,
            encoder_width=config.encoder_width,
            backbone_norm=config.backbone_norm,
            state_first=config.cond_order == "state_images",
        )
        self.global_cond_dim = config.n_obs_steps * self.obs_encoder.feature_dim_per_step
        self.network: EpsilonNetwork = build_network(config, self.global_cond_dim)
        if hasattr(self.network, "exact_film"):
            self.network.exact_film = bool(config.exact_film)
        self.register_load_state_dict_pre_hook(_upgrade_on_load)
        self.train_scheduler = DDPMScheduler(**self._scheduler_kwargs())
        self.set_inference(config.noise_scheduler, config.num_inference_steps, config.eta)
        self.generator: torch.Generator | None = None
        self._seed: int | None = None
        self._graph: CapturedSampler | None = None
        self._frozen_step: PreparedStep | None = None

    # ----------------------------------------------------------------------------- set-up
    def _scheduler_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "num_train_timesteps": c.num_train_timesteps,
            "beta_start": c.beta_start,
            "beta_end": c.beta_end,
            "beta_schedule": c.beta_schedule,
            "variance_type": c.variance_type,
            "clip_sample": c.clip_sample,
            "clip_sample_range": c.clip_sample_range,
            "prediction_type": c.prediction_type,
        }

    def set_inference(self, scheduler: str, num_inference_steps: int, eta: float = 0.0) -> None:
        """Choose the sampler (`ddim` any step count, or `ddpm`) without retraining."""
        self.config.replace(  # validates the combination, names the bad field
            noise_scheduler=scheduler, num_inference_steps=num_inference_steps, eta=eta
        )
        self.config.noise_scheduler = scheduler
        self.config.num_inference_steps = num_inference_steps
        self.config.eta = eta
        kwargs = self._scheduler_kwargs()
        if scheduler == "ddim":
            kwargs.pop("variance_type")  # DDIM's σ_t comes from η (Song et al. eq. 16)
        self.inference_scheduler = make_scheduler(scheduler, **kwargs)
        self.inference_scheduler.set_timesteps(num_inference_steps)
        self._graph = None  # a captured graph bakes in the old timesteps

    def set_normalizer_stats(
        self, state_min: Any, state_max: Any, action_min: Any, action_max: Any
    ) -> None:
        self.state_normalizer.fit(torch.as_tensor(state_min), torch.as_tensor(state_max))
        self.action_normalizer.fit(torch.as_tensor(action_min), torch.as_tensor(action_max))

    def seed(self, seed: int | None) -> None:
        """Make sampling reproducible: `reset()` restarts the noise stream from `seed`."""
        self._seed = seed
        self.reset()

    def reset(self) -> None:
        """Start a new episode. The policy keeps no observation history (the runtime does);
        with a seed set, the sampling noise restarts so episodes are reproducible."""
        if self._seed is None:
            self.generator = None
            return
        device = next(self.parameters()).device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self._seed)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------------------- shared
    def encode_observations(self, batch: dict[str, Any]) -> torch.Tensor:
        """(B, global_cond_dim) from OBS_IMAGES (B, To, N, 3, H, W) and OBS_STATE (B, To, D)."""
        device = self.device
        c = self.config
        state = _as_tensor(batch[OBS_STATE], device, OBS_STATE).float()
        if state.ndim != 3 or state.shape[1] < c.n_obs_steps or state.shape[2] != c.state_dim:
            raise ValueError(
                f"{OBS_STATE}: expected (B, {c.n_obs_steps}, {c.state_dim}), "
                f"got {tuple(state.shape)}"
            )
        if OBS_IMAGE_FEATURES in batch:  # encoded as the frames arrived (streaming encoder)
            feats = _as_tensor(batch[OBS_IMAGE_FEATURES], device, OBS_IMAGE_FEATURES)
            width = c.n_cameras * 2 * self.obs_encoder.num_keypoints
            if feats.ndim != 3 or feats.shape[1] < c.n_obs_steps or feats.shape[2] != width:
                raise ValueError(
                    f"{OBS_IMAGE_FEATURES}: expected (B, {c.n_obs_steps}, {width}), "
                    f"got {tuple(feats.shape)}"
                )
            nstate = self.state_normalizer.normalize(state[:, -c.n_obs_steps :])
            return self.obs_encoder.combine(
                feats[:, -c.n_obs_steps :], nstate.to(self.network.dtype)
            )
        images = _as_tensor(batch[OBS_IMAGES], device, OBS_IMAGES)
        if images.ndim != 6 or images.shape[1] < c.n_obs_steps:
            raise ValueError(
                f"{OBS_IMAGES}: expected (B, {c.n_obs_steps}, {c.n_cameras}, 3, "
                f"{c.image_size[0]}, {c.image_size[1]}), got {tuple(images.shape)}"
            )
        # Condition on the last n_obs_steps observations (the window may carry more).
        state = state[:, -c.n_obs_steps :]
        images = images[:, -c.n_obs_steps :]
        nstate = self.state_normalizer.normalize(state)
        if self.image_normalizer is not None:
            # Per-camera statistics on images in [0, 1] (LeRobot's VISUAL features); the
            # encoder takes float images as they are.
            float_images = images.float() / 255.0 if images.dtype == torch.uint8 else images
            images = self.image_normalizer.normalize(float_images.float())
        # The features come out in the ε-network's dtype (the encoder may run in another).
        return self.obs_encoder(images, nstate.to(self.network.dtype))

    @torch.inference_mode()
    def encode_frame(self, camera: int, image: Any) -> torch.Tensor:
        """One camera frame (3, H, W) uint8 -> its (2K,) keypoint features, as
        `encode_observations` computes them for that frame (the streaming encoder's step)."""
        x = _as_tensor(image, self.device, OBS_IMAGES)
        if x.ndim != 3:
            raise ValueError(f"{OBS_IMAGES}: expected one frame (3, H, W), got {tuple(x.shape)}")
        if self.image_normalizer is not None:  # that camera's statistics, as encode_observations
            frame = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            x = self.image_normalizer.normalize(frame, camera)
        return self.obs_encoder.camera_features(camera, x[None])[0]

    # ----------------------------------------------------------------------------- training
    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Algorithm 1: x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε, t ~ U{0..T−1}; loss ‖ε − ε_θ(x_t, t)‖²
        (‖x_0 − x̂_θ(x_t, t)‖² with prediction_type "sample")."""
        global_cond = self.encode_observations(batch)
        x0 = self.action_normalizer.normalize(self._actions(batch))
        noise = torch.randn_like(x0)
        timesteps = torch.randint(
            0, self.config.num_train_timesteps, (x0.shape[0],), device=x0.device
        )
        noisy = self.train_scheduler.add_noise(x0, noise, timesteps)
        target = x0 if self.config.prediction_type == "sample" else noise
        return self._masked_mse(self.network(noisy, timesteps, global_cond), target, batch)

    def _actions(self, batch: dict[str, Any]) -> torch.Tensor:
        c = self.config
        actions = _as_tensor(batch[ACTION], self.device, ACTION).float()
        if actions.ndim != 3 or actions.shape[1:] != (c.horizon, c.action_dim):
            raise ValueError(
                f"{ACTION}: expected (B, {c.horizon}, {c.action_dim}), got {tuple(actions.shape)}"
            )
        return actions

    def _masked_mse(
        self, pred: torch.Tensor, target: torch.Tensor, batch: dict[str, Any]
    ) -> torch.Tensor:
        """Mean squared error over the action steps that are not padding (ACTION_IS_PAD)."""
        loss = F.mse_loss(pred, target, reduction="none")
        if ACTION_IS_PAD not in batch:
            return loss.mean()
        valid = ~_as_tensor(batch[ACTION_IS_PAD], self.device, ACTION_IS_PAD).bool()
        loss = loss * valid.unsqueeze(-1)
        return loss.sum() / (valid.sum() * self.config.action_dim).clamp_min(1)

    # ----------------------------------------------------------------------------- inference
    @torch.inference_mode()
    def predict_action_chunk(
        self, obs: dict[str, Any], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample an action chunk (B, horizon, action_dim) in robot units (Algorithm 2 / DDIM).

        With INPAINT_ACTIONS and INPAINT_WEIGHTS in `obs` the chunk is inpainted: steps of
        weight 1 reproduce the given actions, weights in (0, 1) pull towards them (`_inpaint`).
        """
        global_cond = self.encode_observations(obs)
        inpaint = self._inpaint_target(obs)
        return self.sample_actions(global_cond, generator=generator, inpaint=inpaint)

    def _inpaint_target(self, obs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(normalized known actions (B, H, D), weights (B, H, 1)) from `obs`, or None."""
        if INPAINT_WEIGHTS not in obs:
            return None
        c, device = self.config, self.device
        actions = _as_tensor(obs[INPAINT_ACTIONS], device, INPAINT_ACTIONS).float()
        weights = _as_tensor(obs[INPAINT_WEIGHTS], device, INPAINT_WEIGHTS).float()
        if actions.ndim != 3 or actions.shape[1:] != (c.horizon, c.action_dim):
            raise ValueError(
                f"{INPAINT_ACTIONS}: expected (B, {c.horizon}, {c.action_dim}), "
                f"got {tuple(actions.shape)}"
            )
        if weights.shape != actions.shape[:2]:
            raise ValueError(
                f"{INPAINT_WEIGHTS}: expected {tuple(actions.shape[:2])}, "
                f"got {tuple(weights.shape)}"
            )
        if not (torch.all(weights >= 0) and torch.all(weights <= 1)):
            raise ValueError(f"{INPAINT_WEIGHTS}: weights must be in [0, 1]")
        if not torch.any(weights > 0):
            return None  # nothing known: plain sampling (same numbers for the same seed)
        known = torch.where(weights[..., None] > 0, actions, torch.zeros_like(actions))
        if not torch.all(torch.isfinite(known)):
            raise ValueError(f"{INPAINT_ACTIONS}: non-finite values where the weight is > 0")
        return self.action_normalizer.normalize(known), weights[..., None]

    @torch.inference_mode()
    def sample_actions(
        self,
        global_cond: torch.Tensor,
        generator: torch.Generator | None = None,
        inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        generator = generator if generator is not None else self.generator
        if self._graph is not None and inpaint is None:
            return self._graph.run(global_cond, generator)
        sample = self._initial_noise(global_cond.shape[0], global_cond.device, generator)
        return self._denoise(global_cond, sample, generator, inpaint)

    def _initial_noise(
        self, batch: int, device: torch.device, generator: torch.Generator | None
    ) -> torch.Tensor:
        """x_T ~ N(0, I), (B, horizon, action_dim), float32 whatever the compute precision."""
        c = self.config
        shape = (batch, c.horizon, c.action_dim)
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)

    def _denoise(
        self,
        global_cond: torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None,
        inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Run every inference step from x_T = `sample`; returns actions in robot units.

        The scheduler update runs in float32; only the network runs in the compute precision.
        `inpaint` = (known x_0, weights m): after each step the sample is blended with the
        known actions noised to the step's timestep (`_inpaint`).
        """
        scheduler = self.inference_scheduler
        timesteps = scheduler.timesteps
        conditioning = self.network.prepare_conditioning(
            timesteps.to(global_cond.device), global_cond
        )
        step_kwargs: dict[str, Any] = {"generator": generator}
        if self.config.noise_scheduler == "ddim":
            step_kwargs["eta"] = self.config.eta
        net_dtype = global_cond.dtype
        forward_step = self._frozen_step or self.network.forward_prepared
        last = len(timesteps) - 1
        for k, t in enumerate(timesteps.tolist()):
            output = forward_step(sample.to(net_dtype), conditioning, k).float()
            step = scheduler.step(output, t, sample, **step_kwargs)
            if inpaint is not None:
                eps = scheduler.epsilon_from_output(output, t, sample)
                sample = self._inpaint(step.prev_sample, eps, t, k == last, *inpaint)
            else:
                sample = step.prev_sample
        return self.action_normalizer.unnormalize(sample)

    def _inpaint(
        self,
        sample: torch.Tensor,
        eps: torch.Tensor,
        t: int,
        last: bool,
        known: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        """RePaint's combination (Lugmayr et al. 2022, eq. 8): x_prev = m ⊙ x_prev^known +
        (1 - m) ⊙ x_prev^unknown, with a soft mask m in [0, 1] (real-time chunking's frozen
        prefix m = 1 and decaying guidance over the overlap, Black et al. 2025).

        x_prev^known is the known x_0 taken to the step's timestep by the forward process (seeds
        eq. 4), `noise_to_prev`, with the network's own ε̂ as the noise instead of a fresh draw:
        deterministic for DDIM η = 0, no extra draws from the generator (a zero mask samples the
        same numbers as plain sampling), and x_prev^known lies on the trajectory the sampler is
        following. After the last step x_prev^known = x_0 itself, so a frozen step ends exactly
        at its known action. RePaint's resampling (jumping back n times) is not done: with
        10 DDIM steps it would multiply the latency, which is what inpainting is meant to hide.
        """
        target = known if last else self.inference_scheduler.noise_to_prev(known, eps, t)
        return sample + weights * (target - sample)

    # ----------------------------------------------------------------------------- speed
    def set_precision(self, dtype: torch.dtype, encoder_dtype: torch.dtype | None = None) -> None:
        """Run the ε-network in `dtype` and the camera encoders in `encoder_dtype` (default:
        `dtype`), each float32, bfloat16 or float16, for inference.

        Normalizers and the scheduler arithmetic stay float32; the encoder's features are cast
        to the ε-network's dtype. Reduced precision changes the numbers slightly; see
        bench/inference_latency.py for what it buys on each device.
        """
        encoder_dtype = dtype if encoder_dtype is None else encoder_dtype
        for value in (dtype, encoder_dtype):
            if value not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"precision must be float32, bfloat16 or float16, got {value}")
        self.enable_acceleration("none")  # frozen/packed copies hold the old dtype
        self.obs_encoder.to(encoder_dtype)
        self.network.to(dtype)  # type: ignore[attr-defined]  # networks are nn.Modules

    def enable_acceleration(self, mode: str) -> None:
        """Inference speed-ups that keep the math: `none`, `jit` or `cudagraph`.

        jit: the ε-network's inference layout (U-Net: convolutions as unfold + matmul over
        views of the weights, no copies), a TorchScript trace of the network's denoising step
        and a trace + freeze of the camera encoders (fewer dispatcher hops; CPU or CUDA; a bf16
        encoder on a CPU in channels-last layout, `accel.trace.trace_camera_encoder`).
        cudagraph: the denoising loop (`_denoise`: every step and scheduler update) as one CUDA
        graph, for CUDA and deterministic DDIM (η = 0) only. The observation encoder is not in
        the graph: it runs eagerly before each replay. The initial noise is drawn outside the
        graph, so seeds behave as without capture.
        Re-run after changing the sampler, precision or device.
        """
        self._graph = None
        self._frozen_step = None
        self.obs_encoder.camera_runners = None
        # A bf16 trace converts the encoders to channels-last (accel/trace.py
        # `trace_camera_encoder`); back to the default layout, which training and the state_dict
        # expect.
        self.obs_encoder.to(memory_format=torch.contiguous_format)
        pack_for_inference(self.network, mode == "jit")
        if mode in ("", "none"):
            return
        if mode == "jit":
            self._freeze_for_inference()
            return
        if mode != "cudagraph":
            raise ValueError(f"acceleration must be 'none', 'jit' or 'cudagraph', got {mode!r}")
        if self.device.type != "cuda":
            raise ValueError("acceleration 'cudagraph' needs the policy on a CUDA device")
        if self.config.noise_scheduler != "ddim" or self.config.eta != 0.0:
            raise ValueError("acceleration 'cudagraph' supports deterministic DDIM (eta = 0) only")
        self._graph = CapturedSampler(self)

    def _freeze_for_inference(self) -> None:
        c = self.config
        h, w = c.crop_shape or c.image_size
        # tracing_warnings_filtered: which warnings a trace raises here and why they are benign.
        with torch.no_grad(), tracing_warnings_filtered():
            self.eval()
            self.obs_encoder.camera_runners = [
                trace_camera_encoder(enc, (h, w)) for enc in self.obs_encoder.encoders
            ]
            self._frozen_step = freeze_prepared_step(self.network, c.horizon)


class RegressionPolicy(DiffusionPolicy):
    """Baseline: the same encoder and ε-network, trained with MSE to output the action chunk
    directly.

    The network sees a zero sequence at timestep 0 and predicts the normalized actions; with
    multimodal demonstrations it learns their mean, which is why diffusion is used instead.
    """

    def _regress(self, global_cond: torch.Tensor) -> torch.Tensor:
        c = self.config
        zeros = torch.zeros(
            (global_cond.shape[0], c.horizon, c.action_dim),
            device=global_cond.device,
            dtype=global_cond.dtype,
        )
        return self.network(zeros, 0, global_cond)

    def compute_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        target = self.action_normalizer.normalize(self._actions(batch))
        pred = self._regress(self.encode_observations(batch))
        return self._masked_mse(pred, target, batch)

    @torch.inference_mode()
    def sample_actions(
        self,
        global_cond: torch.Tensor,
        generator: torch.Generator | None = None,
        inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The regressed chunk; `inpaint` is ignored (nothing is sampled to steer)."""
        return self.action_normalizer.unnormalize(self._regress(global_cond).float())


def build_policy(config: PolicyConfig) -> DiffusionPolicy:
    """The policy class named by `config.policy_type`."""
    return (
        RegressionPolicy(config) if config.policy_type == "regression" else DiffusionPolicy(config)
    )
