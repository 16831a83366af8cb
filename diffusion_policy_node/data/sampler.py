"""Training windows over a cache: `horizon` steps with edge-repeat padding (Chi et al. 2023).

A window starts up to `pad_before = n_obs_steps - 1` steps before an episode's first step (so
the first step is the newest observation of some window) and ends up to `pad_after` steps
after its last step; positions outside the episode repeat the first/last step. How far past
the end windows reach is `DataConfig.window_end` (see `pad_after_steps`):

- `"hold"` (default): `pad_after = horizon - n_obs_steps`. Every step of an episode, the last
  one included, is the newest observation of some window, so a demonstration that ends on a
  gripper close teaches the close. Actions past the end repeat the last action and are trained
  as targets (the robot holds there); ACTION_IS_PAD stays False.
- `"action_steps"`: `pad_after = n_action_steps - 1` (Chi et al.'s sampler) with the targets
  past the end flagged in ACTION_IS_PAD (left out of the loss). The last `horizon -
  n_obs_steps - n_action_steps + 1` steps of an episode are then never an observation: a
  demonstration must hold for about `n_action_steps * dt` after its last event to teach it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..policy.constants import ACTION, ACTION_IS_PAD, OBS_IMAGES, OBS_STATE
from .cache import EpisodeCache, open_cache
from .config import WINDOW_ENDS

__all__ = [
    "WINDOW_ENDS",
    "WindowDataset",
    "create_sample_indices",
    "pad_after_steps",
    "sample_sequence",
]


def pad_after_steps(window_end: str, n_obs_steps: int, horizon: int, n_action_steps: int) -> int:
    """Steps a window may reach past an episode's last step (see the module doc)."""
    if window_end == "hold":
        return horizon - n_obs_steps
    if window_end == "action_steps":
        return n_action_steps - 1
    raise ValueError(f"window_end={window_end!r}: expected one of {WINDOW_ENDS}")


def create_sample_indices(
    episode_ends: np.ndarray,
    sequence_length: int,
    pad_before: int = 0,
    pad_after: int = 0,
) -> np.ndarray:
    """All windows of `sequence_length` steps: `(N, 4)` int64 rows of
    (buffer_start, buffer_end, sample_start, sample_end).

    `buffer_start:buffer_end` are the steps read from the concatenated arrays, and they fill
    positions `sample_start:sample_end` of the window; the positions before/after are padding.
    `episode_ends` holds each episode's exclusive end index (nondecreasing). Episodes are
    windowed independently; an episode yields `length - sequence_length + pad_before +
    pad_after + 1` windows (none if that is <= 0; empty episodes yield none).
    """
    ends = np.asarray(episode_ends)
    if ends.ndim != 1 or (ends.size and (ends[0] < 0 or np.any(np.diff(ends) < 0))):
        raise ValueError(f"episode_ends must be a nondecreasing 1-D array >= 0, got {ends!r}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length={sequence_length}: must be >= 1")
    for name, pad in (("pad_before", pad_before), ("pad_after", pad_after)):
        if not 0 <= pad < sequence_length:
            raise ValueError(f"{name}={pad}: must be in [0, sequence_length={sequence_length})")
    rows = []
    start = 0
    for end in ends.astype(np.int64):
        length = int(end) - start
        if length > 0:
            idx = np.arange(-pad_before, length - sequence_length + pad_after + 1)
            buffer_start = np.maximum(idx, 0) + start
            buffer_end = np.minimum(idx + sequence_length, length) + start
            sample_start = buffer_start - (idx + start)
            sample_end = sequence_length - ((idx + sequence_length + start) - buffer_end)
            rows.append(np.stack([buffer_start, buffer_end, sample_start, sample_end], axis=1))
        start = int(end)
    if not rows:
        return np.zeros((0, 4), np.int64)
    return np.concatenate(rows).astype(np.int64)


def _window_positions(row: np.ndarray, sequence_length: int) -> np.ndarray:
    """Buffer index for every window position, repeating the edge steps into the padding."""
    buffer_start, buffer_end, sample_start, _ = (int(v) for v in row)
    offsets = np.clip(np.arange(sequence_length) - sample_start, 0, buffer_end - buffer_start - 1)
    return buffer_start + offsets


def sample_sequence(
    train_data: dict[str, np.ndarray],
    sequence_length: int,
    buffer_start_idx: int,
    buffer_end_idx: int,
    sample_start_idx: int,
    sample_end_idx: int,
) -> dict[str, np.ndarray]:
    """Cut one window out of every array in `train_data`, repeating its first/last step into
    the padding: each result has shape `(sequence_length, *array.shape[1:])`."""
    row = np.array([buffer_start_idx, buffer_end_idx, sample_start_idx, sample_end_idx])
    if not (
        buffer_end_idx > buffer_start_idx
        and sample_end_idx - sample_start_idx == buffer_end_idx - buffer_start_idx
        and 0 <= sample_start_idx < sample_end_idx <= sequence_length
    ):
        raise ValueError(f"inconsistent window {row.tolist()} for length {sequence_length}")
    positions = _window_positions(row, sequence_length)
    return {key: np.asarray(array[positions]) for key, array in train_data.items()}


class WindowDataset(Dataset):
    """Windows of a cache as training samples (torch Dataset).

    Each item: OBS_IMAGES (n_obs_steps, N, 3, H, W) uint8, OBS_STATE (n_obs_steps, D) float32,
    ACTION (horizon, D) float32 starting at the first observation step, and ACTION_IS_PAD
    (horizon,) bool, True where the action repeats the episode's last one past its end and is
    not a target (`window_end="action_steps"` only; see the module doc).
    """

    def __init__(
        self,
        cache: EpisodeCache | str | Path,
        n_obs_steps: int,
        horizon: int,
        n_action_steps: int,
        window_end: str = "hold",
    ) -> None:
        for name, value in (
            ("n_obs_steps", n_obs_steps),
            ("horizon", horizon),
            ("n_action_steps", n_action_steps),
        ):
            if int(value) < 1:
                raise ValueError(f"WindowDataset.{name}={value}: must be >= 1")
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(
                f"WindowDataset: n_obs_steps - 1 + n_action_steps = "
                f"{n_obs_steps - 1 + n_action_steps} exceeds horizon={horizon}"
            )
        self.cache = cache if isinstance(cache, EpisodeCache) else open_cache(cache)
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        self.n_action_steps = int(n_action_steps)
        self.window_end = window_end
        self.indices = create_sample_indices(
            self.cache.episode_ends,
            sequence_length=self.horizon,
            pad_before=self.n_obs_steps - 1,
            pad_after=pad_after_steps(window_end, self.n_obs_steps, self.horizon, n_action_steps),
        )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.indices[i]
        positions = _window_positions(row, self.horizon)
        obs = positions[: self.n_obs_steps]
        images = np.asarray(self.cache.images[obs])  # (n_obs, N, H, W, 3)
        if self.window_end == "hold":
            is_pad = np.zeros(self.horizon, bool)  # holding at the end is a target
        else:
            is_pad = np.arange(self.horizon) >= row[3]
        return {
            OBS_IMAGES: torch.from_numpy(np.ascontiguousarray(images.transpose(0, 1, 4, 2, 3))),
            OBS_STATE: torch.from_numpy(np.asarray(self.cache.state[obs], np.float32)),
            ACTION: torch.from_numpy(np.asarray(self.cache.action[positions], np.float32)),
            ACTION_IS_PAD: torch.from_numpy(is_pad),
        }
