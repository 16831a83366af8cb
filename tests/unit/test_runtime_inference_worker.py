"""InferenceWorker (real thread, gated fake policies, fake clock) and the trigger formula."""

import threading
import time

import numpy as np
import pytest
import torch

from diffusion_policy_node.runtime import inference_worker as iw
from diffusion_policy_node.runtime.inference_worker import (
    InferenceWorker,
    resolve_device,
    should_start_inference,
)

TIMEOUT = 10.0  # real seconds, only reached if the worker hangs


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakePolicy:
    """Returns a (1, 3, 2) chunk from the state; advances the fake clock by `latencies[k]`."""

    def __init__(self, clock: FakeClock, latencies: list[float], fail_on: set[int] = frozenset()):
        self.clock = clock
        self.latencies = list(latencies)
        self.fail_on = fail_on
        self.calls = 0
        self.resets = 0
        self.seen: list[object] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.reset_thread: str | None = None

    def predict_action_chunk(self, obs: dict) -> torch.Tensor:
        k = self.calls
        self.calls += 1
        self.seen.append(obs["observation.state"])
        self.started.set()
        if not self.release.wait(TIMEOUT):
            raise TimeoutError("test never released the policy")
        self.clock.t += self.latencies[k % len(self.latencies)]
        if k in self.fail_on:
            raise ValueError(f"boom {k}")
        state = obs["observation.state"]
        return state[:, -1:, :].repeat(1, 3, 1) + torch.arange(3.0)[None, :, None]

    def reset(self) -> None:
        self.resets += 1
        self.reset_thread = threading.current_thread().name


def obs(value: float) -> dict:
    return {"observation.state": np.full((1, 2, 2), value, dtype=np.float32)}


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(iw.torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ValueError, match=r"CUDA is not available.*'cpu' or 'auto'"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_should_start_inference_formula() -> None:
    # schedule_end 1.0, dt 0.1: dry at 1.1; start when now + latency + margin >= 1.0
    assert not should_start_inference(0.70, 1.0, 0.25, 0.1)  # lands 0.95 < 1.0
    assert should_start_inference(0.75, 1.0, 0.25, 0.1)  # lands exactly at 1.0
    assert should_start_inference(0.80, 1.0, 0.25, 0.1)  # lands 1.05, still before dry 1.1
    assert should_start_inference(0.70, 1.0, 0.25, 0.1, margin=0.05)
    assert should_start_inference(0.0, None, 0.25, 0.1)  # nothing scheduled
    assert not should_start_inference(0.95, 1.0, None, 0.1)  # unknown latency counts as 0
    assert should_start_inference(1.0, 1.0, None, 0.1)
    with pytest.raises(ValueError, match="dt"):
        should_start_inference(0.0, 1.0, 0.1, 0.0)


def test_one_in_flight_and_poll_returns_latency() -> None:
    clock = FakeClock(10.0)
    policy = FakePolicy(clock, latencies=[0.25])
    policy.release.clear()
    with InferenceWorker(policy, clock=clock, device="cpu") as worker:
        assert worker.submit(obs(1.0), t_obs=9.9)
        assert policy.started.wait(TIMEOUT)
        assert worker.busy
        assert not worker.submit(obs(2.0), t_obs=10.0)  # one in flight
        assert worker.poll() is None
        policy.release.set()
        assert worker.wait(TIMEOUT)
        result = worker.poll()
        assert result is not None and result.ok
        np.testing.assert_allclose(result.chunk, [[1, 1], [2, 2], [3, 3]])
        assert result.chunk.shape == (3, 2) and result.chunk.dtype == np.float64
        assert result.t_obs == 9.9
        assert result.latency_s == pytest.approx(0.25)
        assert worker.poll() is None
        # numpy observations arrive as tensors on the worker's device
        assert isinstance(policy.seen[0], torch.Tensor) and policy.seen[0].device.type == "cpu"
        assert worker.submit(obs(2.0), t_obs=10.3)
        assert worker.wait(TIMEOUT)
        np.testing.assert_allclose(worker.poll().chunk[0], [2, 2])
    assert not worker.alive
    with pytest.raises(RuntimeError, match="close"):
        worker.submit(obs(0.0), 0.0)


def test_policy_errors_are_captured_and_thread_survives() -> None:
    clock = FakeClock()
    policy = FakePolicy(clock, latencies=[0.1], fail_on={0})
    with InferenceWorker(policy, clock=clock, device="cpu") as worker:
        assert worker.submit(obs(1.0), t_obs=0.0)
        assert worker.wait(TIMEOUT)
        result = worker.poll()
        assert result is not None and not result.ok and result.chunk is None
        assert isinstance(result.error, ValueError) and "boom 0" in str(result.error)
        assert worker.last_error is result.error and worker.error_count == 1
        assert worker.latency_stats().count == 0  # failures do not enter the statistics
        assert worker.alive
        assert worker.submit(obs(1.0), t_obs=0.1)
        assert worker.wait(TIMEOUT)
        assert worker.poll().ok


class BadShapePolicy:
    def predict_action_chunk(self, obs: dict) -> np.ndarray:
        return np.zeros((3, 2))

    def reset(self) -> None:
        pass


def test_bad_output_shape_is_reported() -> None:
    with InferenceWorker(BadShapePolicy(), clock=FakeClock(), device="cpu") as worker:
        worker.submit(obs(0.0), 0.0)
        assert worker.wait(TIMEOUT)
        result = worker.poll()
        assert "expected (1, H, D)" in str(result.error)


def test_latency_statistics_golden() -> None:
    clock = FakeClock()
    policy = FakePolicy(clock, latencies=[0.1, 0.2, 0.3, 0.4])
    with InferenceWorker(policy, clock=clock, device="cpu", ema_alpha=0.5) as worker:
        assert worker.latency_estimate is None
        for k in range(4):
            assert worker.submit(obs(0.0), t_obs=float(k))
            assert worker.wait(TIMEOUT)
            worker.poll()
        stats = worker.latency_stats()
    assert stats.count == 4 and stats.last == pytest.approx(0.4)
    assert stats.ema == pytest.approx(0.3125)  # 0.1 -> 0.15 -> 0.225 -> 0.3125
    assert stats.p50 == pytest.approx(0.25)
    assert stats.p90 == pytest.approx(0.37)
    assert worker.completed_count == 4


def test_warm_up_and_reset() -> None:
    clock = FakeClock()
    policy = FakePolicy(clock, latencies=[1.0, 0.2, 0.2])
    worker = InferenceWorker(policy, clock=clock, device="cpu")
    try:
        result = worker.warm_up(obs(3.0), n=3)
        np.testing.assert_allclose(result.chunk[:, 0], [3, 4, 5])
        stats = worker.latency_stats()
        assert stats.count == 1 and stats.last == pytest.approx(0.2)
        assert policy.resets == 1 and policy.calls == 3
        # reset discards the in-flight result and resets the policy on the worker thread
        policy.release.clear()
        policy.started.clear()
        assert worker.submit(obs(1.0), t_obs=5.0)
        assert policy.started.wait(TIMEOUT)
        worker.reset()
        policy.release.set()
        assert worker.wait(TIMEOUT)
        assert worker.poll() is None
        assert policy.resets == 2 and policy.reset_thread == "dp-inference"
        policy.fail_on = {policy.calls}
        with pytest.raises(RuntimeError, match="warm-up inference failed: ValueError"):
            worker.warm_up(obs(0.0), n=1)
    finally:
        assert worker.close()


def test_torch_module_policy_runs_on_device() -> None:
    class LinearPolicy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))

        def predict_action_chunk(self, obs: dict) -> torch.Tensor:
            return self.proj(obs["observation.state"])

        def reset(self) -> None:
            pass

    with InferenceWorker(LinearPolicy(), device="cpu") as worker:
        worker.submit({"observation.state": np.array([[[1.0, 1.0], [2.0, 3.0]]], np.float32)}, 0)
        assert worker.wait(TIMEOUT)
        np.testing.assert_allclose(worker.poll().chunk, [[3.0, -1.0], [8.0, -3.0]])


def test_artificial_delay_is_part_of_every_inference() -> None:
    # inference_delay_ms: the result arrives no earlier than the delay after submit (sleep is
    # a lower bound), and warm-up includes it so the first latency estimate knows it.
    policy = FakePolicy(FakeClock(), [0.0])
    with InferenceWorker(policy, clock=time.monotonic, device="cpu", delay_s=0.2) as worker:
        assert worker.warm_up(obs(1.0), n=1).latency_s >= 0.2
        assert worker.submit(obs(1.0), 0.0)
        assert worker.wait(TIMEOUT)
        assert worker.poll().latency_s >= 0.2
    with pytest.raises(ValueError, match="delay_s"):
        InferenceWorker(policy, device="cpu", delay_s=-1.0)
