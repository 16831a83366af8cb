"""Streaming encoder: camera features computed as the frames arrive, kept for the window.

Without it, every chunk request encodes all n_obs_steps x n_cameras frames of its observation
window, though all but the newest arrived long before (and were encoded for the previous
chunk too). With it, the inference worker encodes each camera frame when it is offered
(`InferenceWorker.offer_frame`, between chunks, on the worker, never on the control thread)
and keeps the features of the last few frames per camera, keyed by the frame's content; a
chunk request then looks its frames up and runs only the denoising trunk (plus any frame not
encoded yet, e.g. one that arrived while the previous chunk was computed).

Exactness: a frame is always encoded the same way, alone (`DiffusionPolicy.encode_frame`),
whether ahead of time or at request time, so a chunk does not depend on whether the worker had
time to encode its frames first (tests/unit/test_frame_features.py). The batched request-time
path (stream off) encodes the window's frames in one batch: the same math, floats rounded
differently (fp32: ~1e-7; a bf16 encoder: one bf16 unit in the last place).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..policy.constants import OBS_IMAGE_FEATURES, OBS_IMAGES


def frame_key(camera: int, chw: np.ndarray) -> bytes:
    """Content key of one (3, H, W) uint8 frame of camera `camera` (BLAKE2b, 128 bit)."""
    digest = hashlib.blake2b(np.ascontiguousarray(chw).data, digest_size=16)
    digest.update(camera.to_bytes(2, "little"))
    return digest.digest()


class FrameFeatureCache:
    """The camera features of recent frames (`capacity` per camera, oldest evicted first).

    `policy` must have `encode_frame(camera, (3, H, W) uint8) -> (2K,)` (DiffusionPolicy)."""

    def __init__(self, policy: Any, n_cameras: int, capacity: int = 8) -> None:
        if not callable(getattr(policy, "encode_frame", None)):
            raise ValueError(
                f"streaming encoder: policy {type(policy).__name__} has no encode_frame()"
            )
        if capacity < 1:
            raise ValueError(f"streaming encoder: capacity must be >= 1, got {capacity}")
        self.policy = policy
        self.n_cameras = int(n_cameras)
        self.capacity = int(capacity)
        self._features: list[OrderedDict[bytes, torch.Tensor]] = [
            OrderedDict() for _ in range(self.n_cameras)
        ]
        self.encoded = 0  # frames encoded (ahead or at request time)
        self.hits = 0  # frames a request found encoded

    def clear(self) -> None:
        for cache in self._features:
            cache.clear()

    def _encode(self, camera: int, chw: np.ndarray, key: bytes) -> torch.Tensor:
        feats = self.policy.encode_frame(camera, torch.from_numpy(np.ascontiguousarray(chw)))
        cache = self._features[camera]
        cache[key] = feats
        while len(cache) > self.capacity:
            cache.popitem(last=False)
        self.encoded += 1
        return feats

    def add(self, camera: int, hwc: np.ndarray) -> None:
        """Encode one frame as it arrives: (H, W, 3) uint8 RGB, the decoded camera image."""
        if not 0 <= camera < self.n_cameras:
            raise ValueError(f"streaming encoder: camera {camera} of {self.n_cameras}")
        chw = np.ascontiguousarray(np.asarray(hwc).transpose(2, 0, 1))
        key = frame_key(camera, chw)
        if key not in self._features[camera]:
            self._encode(camera, chw, key)

    def features(self, images: np.ndarray) -> torch.Tensor:
        """(B=1, T, N, 3, H, W) uint8 -> (1, T, N·2K): the cached features of each frame,
        the missing ones encoded now (and kept)."""
        images = np.asarray(images)
        if images.ndim != 6 or images.shape[0] != 1 or images.shape[2] != self.n_cameras:
            raise ValueError(
                f"streaming encoder: expected {OBS_IMAGES} (1, T, {self.n_cameras}, 3, H, W), "
                f"got {images.shape}"
            )
        steps = []
        for t in range(images.shape[1]):
            row = []
            for camera in range(self.n_cameras):
                chw = images[0, t, camera]
                key = frame_key(camera, chw)
                cached = self._features[camera].get(key)
                if cached is None:
                    cached = self._encode(camera, chw, key)
                else:
                    self.hits += 1
                row.append(cached)
            steps.append(torch.cat(row))
        return torch.stack(steps)[None]

    def replace_images(self, obs: dict[str, Any]) -> dict[str, Any]:
        """`obs` with OBS_IMAGES (numpy) replaced by OBS_IMAGE_FEATURES; unchanged otherwise."""
        images = obs.get(OBS_IMAGES)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            return dict(obs)
        out = {k: v for k, v in obs.items() if k != OBS_IMAGES}
        out[OBS_IMAGE_FEATURES] = self.features(images)
        return out
