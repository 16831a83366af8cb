"""ε-networks behind one protocol, and the registry that builds one from a PolicyConfig.

``DiffusionPolicy`` and ``RegressionPolicy`` call an ε-network only through
:class:`EpsilonNetwork`; ``PolicyConfig.network`` names the implementation in :data:`NETWORKS`.
The conditional 1-D U-Net (:class:`~.unet1d.ConditionalUnet1D`, Chi et al. 2023) is the first.

Sampling a chunk of K denoising steps goes::

    conditioning = net.prepare_conditioning(timesteps, global_cond)   # once per chunk
    for k, t in enumerate(timesteps):
        eps = net.forward_prepared(sample, conditioning, k)           # one step per k
        sample = scheduler.step(eps, t, sample).prev_sample

so a network can move all the work that depends only on the observation and the timesteps
(the U-Net: every FiLM scale and bias) out of the loop. Training calls the plain forward.
Inference speed-ups that keep the math (packed layouts, kernel choice, traces) live beside the
networks in `policy/accel/`, registered per block type (`accel.packing.BLOCK_PACKERS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, dtype, nn

from .unet1d import ConditionalUnet1D


class NetworkConfig(Protocol):
    """The fields of `policy.config.PolicyConfig` a network builder reads (config.py imports
    this module to validate `network`, so this one does not import config.py)."""

    network: str
    action_dim: int
    diffusion_step_embed_dim: int
    down_dims: Sequence[int]
    kernel_size: int
    n_groups: int


__all__ = ["NETWORKS", "EpsilonNetwork", "PreparedStep", "build_network"]

# What `prepare_conditioning` returns: opaque to the caller, read only by the network that made it.
Conditioning = Any
# `forward_prepared`'s signature: (sample (B, T, D), conditioning, k) -> ε̂ (B, T, D).
PreparedStep = Callable[[Tensor, Conditioning, int], Tensor]


@runtime_checkable
class EpsilonNetwork(Protocol):
    """What the diffusion wrapper may call on an ε-network (implementations are ``nn.Module``s).

    Shapes: sample (B, T, D) with D = ``input_dim`` and T a multiple of ``horizon_multiple``;
    global_cond (B, G) with G = ``global_cond_dim``; timesteps are 0-based diffusion steps.
    """

    input_dim: int
    global_cond_dim: int

    @property
    def horizon_multiple(self) -> int:
        """The action horizon T must be a multiple of this (1: any T)."""
        ...

    @property
    def dtype(self) -> dtype:
        """The compute precision of the weights; inputs are cast to it by the caller."""
        ...

    def __call__(self, sample: Tensor, timestep: Tensor | int, global_cond: Tensor) -> Tensor:
        """Plain forward (training): ε̂ (B, T, D) for timestep (B,) / scalar / int."""
        ...

    def prepare_conditioning(
        self, timesteps: Tensor | Sequence[int], global_cond: Tensor | None
    ) -> Conditioning:
        """Everything that depends only on the (K,) timesteps of a sampling run and on the
        (B, G) global condition, computed once per chunk."""
        ...

    def forward_prepared(self, sample: Tensor, conditioning: Conditioning, k: int) -> Tensor:
        """ε̂ (B, T, D) at ``timesteps[k]`` of ``conditioning``; equals the plain forward."""
        ...


def _build_unet(config: NetworkConfig, global_cond_dim: int) -> ConditionalUnet1D:
    return ConditionalUnet1D(
        input_dim=config.action_dim,
        global_cond_dim=global_cond_dim,
        diffusion_step_embed_dim=config.diffusion_step_embed_dim,
        down_dims=config.down_dims,
        kernel_size=config.kernel_size,
        n_groups=config.n_groups,
    )


# name (PolicyConfig.network) -> builder(config, global_cond_dim).
NETWORKS: dict[str, Callable[[NetworkConfig, int], EpsilonNetwork]] = {"unet": _build_unet}


def build_network(config: NetworkConfig, global_cond_dim: int) -> EpsilonNetwork:
    """The ε-network named by ``config.network`` over (B, horizon, action_dim) action sequences,
    conditioned on (B, global_cond_dim) observation features."""
    builder = NETWORKS.get(config.network)
    if builder is None:
        raise ValueError(
            f"PolicyConfig.network={config.network!r}: expected one of {tuple(NETWORKS)}"
        )
    network = builder(config, global_cond_dim)
    if not isinstance(network, nn.Module) or not isinstance(network, EpsilonNetwork):
        raise TypeError(
            f"network {config.network!r}: the builder returned {type(network).__name__}, "
            "which is not an nn.Module implementing EpsilonNetwork"
        )
    return network
