"""The denoising loop as one CUDA graph (`acceleration: cudagraph`, CUDA and deterministic DDIM
only): captured per batch size and replayed with fresh noise and the eagerly computed
observation condition. Written for CUDA; the tests run it only where a GPU is present."""

from __future__ import annotations

from typing import Any

import torch


class CapturedSampler:
    """A CUDA graph of `_denoise` (the denoising loop, not the observation encoder) for one batch
    size, replayed with fresh noise and the eagerly computed condition per call."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.graphs: dict[int, tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _capture(self, global_cond: torch.Tensor) -> tuple[Any, torch.Tensor, ...]:
        batch = global_cond.shape[0]
        static_cond = global_cond.clone()
        static_noise = self.policy._initial_noise(batch, global_cond.device, None)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph, as PyTorch requires
            for _ in range(2):
                self.policy._denoise(static_cond, static_noise.clone(), None)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self.policy._denoise(static_cond, static_noise.clone(), None)
        self.graphs[batch] = (graph, static_cond, static_noise, static_out)
        return self.graphs[batch]

    def run(self, global_cond: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        entry = self.graphs.get(global_cond.shape[0]) or self._capture(global_cond)
        graph, static_cond, static_noise, static_out = entry
        static_cond.copy_(global_cond)
        static_noise.copy_(
            self.policy._initial_noise(global_cond.shape[0], global_cond.device, generator)
        )
        graph.replay()
        return static_out.clone()
