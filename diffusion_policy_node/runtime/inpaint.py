"""Real-time chunking's constraint for the next chunk (Black et al. 2025), ROS-free.

The controller asks for a new chunk while the current one executes. The steps that will execute
before the new chunk can take over are frozen to what is already planned; a few steps after them
are guided towards the previous chunk with decaying weights; the rest is sampled freely. The
sampler that honours these weights is `policy.modeling.DiffusionPolicy._inpaint`.
"""

from __future__ import annotations

import numpy as np

from .settings import NodeSettings


def inpaint_request(
    settings: NodeSettings,
    last_chunk: tuple[float, np.ndarray] | None,
    now: float,
    t_obs: float,
    latency: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(actions (1, H, D), weights (1, H)) for the chunk observed at `t_obs`, from the last
    merged chunk (t_obs_prev, (H, D)). Steps that run before the new chunk can take over (grid
    time + action_lead at or before the estimated landing tick now + latency + dt) are frozen
    (weight 1); the next `inpaint_overlap` known steps get `inpaint_guidance * exp(-decay * i)`;
    the rest, and every step the last chunk does not cover, are free (weight 0)."""
    s, p = settings, settings.params
    h, dim = s.horizon, len(s.action_joints)  # the action vector (may omit observed joints)
    actions = np.zeros((1, h, dim), np.float32)
    weights = np.zeros((1, h), np.float32)
    if last_chunk is None:
        return actions, weights
    t_prev, chunk = last_chunk
    offset = round((t_obs - t_prev) / s.dt)  # new index j is the last chunk's j + offset
    j = np.arange(h)
    src = j + offset
    known = (src >= 0) & (src < chunk.shape[0])
    actions[0, known] = chunk[src[known]]
    grid = t_obs + (j - (s.n_obs_steps - 1)) * s.dt
    landing = now + (latency or 0.0) + s.dt
    frozen = known & (grid + s.action_lead <= landing + 1e-6 * s.dt)
    weights[0, frozen] = 1.0
    guided = np.flatnonzero(known & ~frozen)[: p.inpaint_overlap]
    weights[0, guided] = p.inpaint_guidance * np.exp(
        -p.inpaint_decay * np.arange(1, len(guided) + 1)
    )
    return actions, weights
