"""Conditional 1-D temporal U-Net: the ε-network of Diffusion Policy (Chi et al. 2023).

The network predicts the noise ε added to an action sequence ``sample`` (B, T, D) at diffusion
step ``timestep``, conditioned through FiLM on ``[time_emb ; global_cond]``. Module and parameter
names follow Chi et al.'s ``ConditionalUnet1D`` (``diffusion_step_encoder``, ``down_modules``,
``mid_modules``, ``up_modules``, ``final_conv``; ``blocks.i.block.j``, ``cond_encoder.1``), so a
state dict from that code base maps key for key (without local conditioning).

It implements the ``EpsilonNetwork`` protocol of ``networks.py``. Sampling hook: the FiLM input
is ``Mish([temb ; g]) = [Mish(temb) ; Mish(g)]``, so every FiLM linear splits into
``W_t·Mish(temb) + W_g·Mish(g) + b``. :meth:`ConditionalUnet1D.prepare_conditioning` evaluates
all FiLM parameters for every timestep of a sampling run once per chunk;
:meth:`ConditionalUnet1D.forward_prepared` then runs one denoising step with convolutions only.

The inference speed-ups (convolutions as matrix products, the FiLM linears stacked, kernel
choice, TorchScript traces) live beside the network in ``policy/accel/``: ``accel.packing``
swaps these blocks for their packed inference forms, ``accel.trace`` traces the trunk.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# One res block's FiLM parameters: (scale, bias), each (B, C, 1).
Film = tuple[Tensor, Tensor]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of the diffusion step: (B,) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalPosEmb: dim must be even and >= 4, got {dim}")
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        half_dim = self.dim // 2
        scale = math.log(10000) / (half_dim - 1)
        freqs = torch.exp(torch.arange(half_dim, device=x.device) * -scale)
        emb = x.float()[:, None] * freqs[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Downsample1d(nn.Module):
    """Halve the temporal length: Conv1d(k=3, s=2, p=1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the temporal length: ConvTranspose1d(k=4, s=2, p=1)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Conv1dBlock(nn.Module):
    """Conv1d (length-preserving) -> GroupNorm -> Mish: (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, inp_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(inp_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks with FiLM (``scale·h + bias``) between them and a residual path."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups),
            ]
        )
        self.out_channels = out_channels
        # Output layout: the first out_channels are the scale, the next out_channels the bias.
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_channels))
        self.residual_conv: nn.Module = (
            nn.Conv1d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def film(self, cond: Tensor) -> Film:
        """FiLM parameters from the condition: (B, cond_dim) -> scale, bias each (B, C, 1)."""
        embed = self.cond_encoder(cond).unsqueeze(-1)
        return embed[:, : self.out_channels], embed[:, self.out_channels :]

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """(B, C_in, T), (B, cond_dim) -> (B, C_out, T)."""
        return self.forward_film(x, self.film(cond))

    def forward_film(self, x: Tensor, film: Film) -> Tensor:
        """(B, C_in, T) with precomputed (scale, bias) -> (B, C_out, T)."""
        scale, bias = film
        out = self.blocks[0](x)
        if torch.is_grad_enabled():
            out = torch.addcmul(bias, scale, out)
            out = self.blocks[1](out)
            return out + self.residual_conv(x)
        # Inference: reuse the activations' buffers instead of allocating new ones.
        out.mul_(scale).add_(bias)
        out = self.blocks[1](out)
        return out.add_(self.residual_conv(x))


@dataclass(frozen=True)
class FilmCache:
    """FiLM parameters of every res block for K timesteps, from ``prepare_conditioning``.

    ``per_step[k][i]`` is (scale, bias), each (B, C_i, 1), of res block ``i`` (network order:
    down, mid, up) at ``timesteps[k]``; the tensors are views into one (K, B, C_i, 1) tensor each.
    """

    timesteps: Tensor
    batch_size: int
    per_step: tuple[tuple[Film, ...], ...]

    def __len__(self) -> int:
        return len(self.per_step)


class ConditionalUnet1D(nn.Module):
    """ε-network over an action sequence: (B, T, input_dim) -> (B, T, input_dim).

    Args:
        input_dim: action dimension D.
        global_cond_dim: size G of the observation features (FiLM condition), >= 0.
        diffusion_step_embed_dim: size of the diffusion-step embedding (even, >= 4).
        down_dims: channels per resolution level; T must be divisible by
            ``2 ** (len(down_dims) - 1)``.
        kernel_size: odd temporal kernel size of the Conv1dBlocks.
        n_groups: GroupNorm groups; must divide every entry of ``down_dims``.
    """

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int,
        diffusion_step_embed_dim: int = 128,
        down_dims: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
    ) -> None:
        super().__init__()
        down_dims = tuple(int(d) for d in down_dims)
        _validate_args(
            input_dim, global_cond_dim, diffusion_step_embed_dim, down_dims, kernel_size, n_groups
        )
        self.input_dim = input_dim
        self.global_cond_dim = global_cond_dim
        self.diffusion_step_embed_dim = dsed = diffusion_step_embed_dim
        self.down_dims = down_dims

        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed),
            nn.Linear(dsed, dsed * 4),
            nn.Mish(),
            nn.Linear(dsed * 4, dsed),
        )
        cond_dim = dsed + global_cond_dim
        all_dims = (input_dim, *down_dims)
        in_out = list(itertools.pairwise(all_dims))

        def res(cin: int, cout: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(cin, cout, cond_dim, kernel_size, n_groups)

        self.down_modules = nn.ModuleList()
        for ind, (dim_in, dim_out) in enumerate(in_out):
            is_last = ind >= len(in_out) - 1
            self.down_modules.append(
                nn.ModuleList(
                    [
                        res(dim_in, dim_out),
                        res(dim_out, dim_out),
                        Downsample1d(dim_out) if not is_last else nn.Identity(),
                    ]
                )
            )
        mid_dim = all_dims[-1]
        self.mid_modules = nn.ModuleList([res(mid_dim, mid_dim), res(mid_dim, mid_dim)])
        # As in Chi et al.'s code: len(down_dims) - 1 up levels, each upsampling once, so the
        # output length equals T; the skip of the first (full-resolution) level is not used.
        self.up_modules = nn.ModuleList()
        for dim_in, dim_out in reversed(in_out[1:]):
            self.up_modules.append(
                nn.ModuleList([res(dim_out * 2, dim_in), res(dim_in, dim_in), Upsample1d(dim_in)])
            )
        start_dim = down_dims[0]
        self.final_conv = nn.Sequential(
            Conv1dBlock(start_dim, start_dim, kernel_size, n_groups=n_groups),
            nn.Conv1d(start_dim, input_dim, 1),
        )
        # Inference-only: every res block's FiLM linear stacked into one matrix and bias, so
        # `prepare_conditioning` runs 2 matrix products instead of 2 per block; set by
        # `accel.packing.pack_for_inference`. Plain attributes, not in the state_dict.
        self.packed_film: tuple[Tensor, Tensor] | None = None
        # True: `prepare_conditioning` evaluates every FiLM linear on the concatenated condition
        # as the plain forward does, so sampling matches it bit for bit (imported LeRobot
        # checkpoints: its actions to float32 rounding); False: the split form below, fewer
        # products, equal to float32 rounding of the linear's sum order.
        self.exact_film = False

    @property
    def horizon_multiple(self) -> int:
        """T must be a multiple of this."""
        return 2 ** (len(self.down_dims) - 1)

    @property
    def dtype(self) -> torch.dtype:
        """The weights' dtype (the compute precision)."""
        return self.final_conv[1].weight.dtype

    def res_blocks(self) -> list[ConditionalResidualBlock1D]:
        """All FiLM res blocks in execution order (down, mid, up)."""
        blocks: list[ConditionalResidualBlock1D] = []
        for level in self.down_modules:
            blocks += [level[0], level[1]]
        blocks += list(self.mid_modules)
        for level in self.up_modules:
            blocks += [level[0], level[1]]
        return blocks

    # ------------------------------------------------------------------ plain forward

    def _time_embedding(self, timesteps: Tensor) -> Tensor:
        """(K,) diffusion steps -> (K, dsed); sinusoids in float32, MLP in the weights' dtype."""
        sinusoid, *mlp = self.diffusion_step_encoder
        x = sinusoid(timesteps).to(self.dtype)
        for layer in mlp:
            x = layer(x)
        return x

    def forward(
        self, sample: Tensor, timestep: Tensor | int, global_cond: Tensor | None = None
    ) -> Tensor:
        """Predict ε: sample (B, T, D), timestep (B,) / scalar / int, global_cond (B, G)."""
        self._check_sample(sample)
        B = sample.shape[0]
        g = self._check_global_cond(global_cond, sample)
        timesteps = _as_timesteps(timestep, B, sample.device)
        cond = self._time_embedding(timesteps)
        if g.shape[1] > 0:
            cond = torch.cat([cond, g.to(cond.dtype)], dim=-1)
        films = [block.film(cond) for block in self.res_blocks()]
        return self._run(sample, films)

    # ------------------------------------------------------------------ cached FiLM path

    def prepare_conditioning(
        self, timesteps: Tensor | Sequence[int], global_cond: Tensor | None
    ) -> FilmCache:
        """FiLM parameters for every timestep of a sampling run, computed once per chunk.

        timesteps: (K,) diffusion steps in the order they will be used; global_cond: (B, G).
        Uses ``W·Mish([temb ; g]) = W_t·Mish(temb) + W_g·Mish(g)``: the observation part is
        computed once, the timestep part once per k, and they are added by broadcasting.
        """
        device = self.final_conv[1].weight.device
        t = torch.as_tensor(timesteps, device=device)
        if t.ndim != 1 or t.numel() == 0:
            raise ValueError(
                f"prepare_conditioning: timesteps must be a non-empty 1-D tensor (K,), "
                f"got shape {tuple(t.shape)}"
            )
        if global_cond is None:
            if self.global_cond_dim > 0:
                raise ValueError(
                    f"prepare_conditioning: global_cond (B, {self.global_cond_dim}) is required"
                )
            global_cond = torch.zeros(1, 0, device=device)
        if global_cond.ndim != 2 or global_cond.shape[1] != self.global_cond_dim:
            raise ValueError(
                f"prepare_conditioning: global_cond must have shape (B, {self.global_cond_dim}),"
                f" got {tuple(global_cond.shape)}"
            )
        if self.exact_film:
            # Per timestep, exactly the plain forward's FiLM computation on (B, ·) inputs (same
            # products and shapes, so the same rounding): [temb ; g] -> Mish -> each linear.
            B, per_step = global_cond.shape[0], []
            for k in range(t.shape[0]):
                cond = self._time_embedding(t[k].expand(B))
                cond = torch.cat([cond, global_cond.to(cond.dtype)], dim=-1)
                per_step.append(tuple(block.film(cond) for block in self.res_blocks()))
            return FilmCache(timesteps=t, batch_size=B, per_step=tuple(per_step))
        dsed = self.diffusion_step_embed_dim
        mish_t = F.mish(self._time_embedding(t))  # (K, dsed)
        mish_g = F.mish(global_cond.to(mish_t.dtype))  # (B, G)
        K, B = t.shape[0], global_cond.shape[0]
        blocks = self.res_blocks()
        if self.packed_film is not None and not (self.training or torch.is_grad_enabled()):
            weight, bias = self.packed_film  # every block's rows, in block order
            t_all = mish_t @ weight[:, :dsed].T  # (K, Σ 2C)
            g_all = torch.addmm(bias, mish_g, weight[:, dsed:].T)  # (B, Σ 2C)
            embed_all = (t_all[:, None, :] + g_all[None, :, :]).unsqueeze(-1)
            embeds = embed_all.split([2 * block.out_channels for block in blocks], dim=2)
        else:
            embeds = []
            for block in blocks:
                linear: nn.Linear = block.cond_encoder[1]
                w_t, w_g = linear.weight[:, :dsed], linear.weight[:, dsed:]
                t_part = mish_t @ w_t.T  # (K, 2C)
                g_part = torch.addmm(linear.bias, mish_g, w_g.T)  # (B, 2C)
                embeds.append((t_part[:, None, :] + g_part[None, :, :]).unsqueeze(-1))
        stacked: list[tuple[Tensor, Tensor]] = []
        for block, embed in zip(blocks, embeds, strict=True):  # embed: (K, B, 2C, 1)
            C = block.out_channels
            stacked.append((embed[:, :, :C].contiguous(), embed[:, :, C:].contiguous()))
        per_step = tuple(tuple((scale[k], bias[k]) for scale, bias in stacked) for k in range(K))
        return FilmCache(timesteps=t, batch_size=B, per_step=per_step)

    def forward_prepared(self, sample: Tensor, film_cache: FilmCache, k: int) -> Tensor:
        """Predict ε for ``film_cache.timesteps[k]`` using only cached FiLM parameters.

        sample: (B, T, D) with B equal to the cache's batch size (or a cache of batch 1).
        """
        self._check_sample(sample)
        if not 0 <= k < len(film_cache):
            raise IndexError(
                f"forward_prepared: k={k} outside the cache's {len(film_cache)} timesteps"
            )
        if film_cache.batch_size not in (1, sample.shape[0]):
            raise ValueError(
                f"forward_prepared: sample batch {sample.shape[0]} does not match the FiLM "
                f"cache batch {film_cache.batch_size}; call prepare_conditioning with this batch"
            )
        return self._run(sample, film_cache.per_step[k])

    # ------------------------------------------------------------------ internals

    def _run(self, sample: Tensor, films: Sequence[Film]) -> Tensor:
        """The convolutional trunk, given one (scale, bias) per res block in execution order."""
        x = sample.transpose(1, 2)  # (B, D, T), a view
        it = iter(films)
        h: list[Tensor] = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet.forward_film(x, next(it))
            x = resnet2.forward_film(x, next(it))
            h.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid.forward_film(x, next(it))
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, h.pop()), dim=1)
            x = resnet.forward_film(x, next(it))
            x = resnet2.forward_film(x, next(it))
            x = upsample(x)
        x = self.final_conv(x)
        return x.transpose(1, 2)  # (B, T, D)

    def _check_sample(self, sample: Tensor) -> None:
        if sample.ndim != 3 or sample.shape[2] != self.input_dim:
            raise ValueError(
                f"ConditionalUnet1D: sample must have shape (B, T, {self.input_dim}), "
                f"got {tuple(sample.shape)}"
            )
        T = sample.shape[1]
        if T == 0 or T % self.horizon_multiple:
            raise ValueError(
                f"ConditionalUnet1D: horizon T={T} must be a positive multiple of "
                f"2**(len(down_dims)-1)={self.horizon_multiple} for down_dims={self.down_dims}; "
                f"change the horizon or use fewer down_dims"
            )

    def _check_global_cond(self, global_cond: Tensor | None, sample: Tensor) -> Tensor:
        expected = (sample.shape[0], self.global_cond_dim)
        if global_cond is None:
            if self.global_cond_dim > 0:
                raise ValueError(f"ConditionalUnet1D: global_cond {expected} is required")
            return sample.new_zeros(expected)
        if tuple(global_cond.shape) != expected:
            raise ValueError(
                f"ConditionalUnet1D: global_cond must have shape {expected}, "
                f"got {tuple(global_cond.shape)}"
            )
        return global_cond


def _as_timesteps(timestep: Tensor | int, batch: int, device: torch.device) -> Tensor:
    """int / 0-d / (1,) / (B,) -> (B,) tensor on ``device``."""
    t = torch.as_tensor(timestep, device=device)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.shape[0] not in (1, batch):
        raise ValueError(
            f"ConditionalUnet1D: timestep must be an int or a tensor of shape () or ({batch},), "
            f"got shape {tuple(t.shape)}"
        )
    return t.expand(batch)


def _validate_args(
    input_dim: int,
    global_cond_dim: int,
    dsed: int,
    down_dims: tuple[int, ...],
    kernel_size: int,
    n_groups: int,
) -> None:
    if input_dim < 1:
        raise ValueError(f"ConditionalUnet1D: input_dim must be >= 1, got {input_dim}")
    if global_cond_dim < 0:
        raise ValueError(f"ConditionalUnet1D: global_cond_dim must be >= 0, got {global_cond_dim}")
    if dsed < 4 or dsed % 2:
        raise ValueError(
            f"ConditionalUnet1D: diffusion_step_embed_dim must be even and >= 4, got {dsed}"
        )
    if not down_dims or any(d < 1 for d in down_dims):
        raise ValueError(f"ConditionalUnet1D: down_dims must be positive ints, got {down_dims}")
    if n_groups < 1 or any(d % n_groups for d in down_dims):
        raise ValueError(
            f"ConditionalUnet1D: n_groups={n_groups} must divide every entry of "
            f"down_dims={down_dims} (GroupNorm)"
        )
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"ConditionalUnet1D: kernel_size must be odd, got {kernel_size}")
