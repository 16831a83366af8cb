"""Inference off the control thread: one background thread, at most one request in flight.

The control thread calls `submit(obs, t_obs)` (never blocks; False while busy) and `poll()` (never
blocks) each tick; the worker thread runs `policy.predict_action_chunk(obs) -> (1, H, D)`.
Policy errors are captured and reported through `poll()` / `last_error`; they never kill the
thread. Latency is measured with the injected clock from `submit` to completion.

GIL: torch releases the GIL inside its kernels, but the DDIM loop's Python between kernels (tens
of small ops per denoising step) holds it, so on a CPU-only machine the control thread's timer
callback can be delayed by up to a few milliseconds while inference runs, and torch's intra-op
threads compete with it for cores. Keep the control callback short, and on small CPUs pass
`torch_threads` to leave a core free. On CUDA the Python overhead is the same but the heavy work
runs on the GPU. A separate process would remove the contention entirely at the cost of
serialising observations; docs/design.md#timing-model allows either.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch

from ..cpu_threads import inference_threads
from .frame_features import FrameFeatureCache

DEVICES = ("auto", "cuda", "cpu")


def resolve_device(device: str) -> str:
    """ "auto" → "cuda" if `torch.cuda.is_available()` else "cpu"; "cuda"/"cuda:N" require CUDA."""
    if not isinstance(device, str):
        raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available (torch "
                f"{torch.__version__}, CUDA build {torch.version.cuda}); install a CUDA build of "
                "torch / check the GPU driver, or set device to 'cpu' or 'auto'"
            )
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
        return device
    raise ValueError(f"device must be one of {DEVICES} (or 'cuda:N'), got {device!r}")


def should_start_inference(
    now: float,
    plan_end: float | None,
    latency_est: float | None,
    dt: float,
    margin: float = 0.0,
) -> bool:
    """Receding-horizon trigger: start the next inference now so its chunk lands in time.

    With `plan_end` the grid time of the last planned action (the controller passes the newest
    chunk's n_action_steps-th action; the rest of its horizon is only the fallback when late),
    the plan is used up at the tick `t_end = plan_end + dt`. A chunk started at `now` lands at
    `now + latency_est`. Start when

        now + latency_est + margin >= t_end - dt        (i.e. >= plan_end)

    The one `dt` of slack covers the tick quantisation of this check (it runs once per tick, so
    the start can be up to one `dt` late) and lets chunk mode republish before the controller
    reaches the last point. No plan (`plan_end` None) always triggers; an unknown latency
    counts as 0 (use `margin` until one is measured).
    """
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0 s, got {dt!r}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0 s, got {margin!r}")
    if plan_end is None:
        return True
    latency = 0.0 if latency_est is None else float(latency_est)
    if not (math.isfinite(latency) and latency >= 0):
        raise ValueError(f"latency_est must be a finite number >= 0 s, got {latency_est!r}")
    t_end = plan_end + dt
    return now + latency + margin >= t_end - dt


class InferenceResult(NamedTuple):
    """One finished request: `chunk` (H, D) float64, or None with `error` set on failure."""

    chunk: np.ndarray | None
    t_obs: float
    latency_s: float
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class LatencyStats(NamedTuple):
    """Latency in seconds over the last `window` successful requests (None before the first)."""

    count: int
    last: float | None
    ema: float | None
    p50: float | None
    p90: float | None


class LatencyTracking:
    """Latency and outcome bookkeeping (and `poll`) shared by the thread and process workers;
    subclasses call `_init_tracking` first. `_record_latency` is called with `_cond` held."""

    _cond: threading.Condition
    _result: InferenceResult | None
    _latencies: deque[float]
    _ema: float | None
    ema_alpha: float

    def _init_tracking(self, clock: Callable[[], float], ema_alpha: float, window: int) -> None:
        """Validate the statistics settings; set the clock, stats, counters and `_cond`."""
        if not 0 < ema_alpha <= 1:
            raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha!r}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, got {window!r}")
        self.clock = clock
        self.ema_alpha = float(ema_alpha)
        self._latencies = deque(maxlen=window)
        self._ema = None
        self.last_error: BaseException | None = None
        self.error_count = 0
        self.completed_count = 0
        self._cond = threading.Condition()

    def _record_latency(self, latency: float) -> None:
        if not math.isfinite(latency):
            return
        self._latencies.append(latency)
        a = self.ema_alpha
        self._ema = latency if self._ema is None else a * latency + (1 - a) * self._ema

    def _wait_while(self, busy: Callable[[], bool], timeout: float) -> bool:
        """Wait on `_cond` (real time) while `busy()`; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while busy():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def poll(self) -> InferenceResult | None:
        """The newest finished result not yet polled, or None. Never blocks."""
        with self._cond:
            result, self._result = self._result, None
            return result

    def latency_stats(self) -> LatencyStats:
        with self._cond:
            lat = list(self._latencies)
            ema = self._ema
        if not lat:
            return LatencyStats(0, None, None, None, None)
        p50, p90 = np.percentile(lat, [50, 90])
        return LatencyStats(len(lat), lat[-1], ema, float(p50), float(p90))

    @property
    def latency_estimate(self) -> float | None:
        """Conservative latency for the trigger: max(EMA, p90); None before any measurement."""
        stats = self.latency_stats()
        if stats.count == 0:
            return None
        return max(stats.ema, stats.p90)  # type: ignore[type-var]


class InferenceWorker(LatencyTracking):
    """Runs `policy.predict_action_chunk` on a daemon thread; see the module docstring."""

    def __init__(
        self,
        policy: Any,
        clock: Callable[[], float] = time.monotonic,
        device: str = "auto",
        ema_alpha: float = 0.2,
        window: int = 100,
        to_tensors: bool = True,
        torch_threads: int | None = None,
        name: str = "dp-inference",
        delay_s: float = 0.0,
        stream_encoder: bool = False,
    ) -> None:
        """`to_tensors` converts numpy observations to torch tensors on `device`; an
        `nn.Module` policy is moved there. `torch_threads` calls `torch.set_num_threads`
        (process-wide; None: one thread per available core, cpu_threads.inference_threads).
        `delay_s` is slept after every inference (warm-up included): an artificial delay
        for evaluating slow models (parameter `inference_delay_ms`). `stream_encoder`: encode
        the frames given to `offer_frame` as they come, between requests (frame_features.py;
        the policy needs `encode_frame` and `config.n_cameras`)."""
        if not (math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"delay_s must be a finite number >= 0 s, got {delay_s!r}")
        self.delay_s = float(delay_s)
        for method in ("predict_action_chunk", "reset"):
            if not callable(getattr(policy, method, None)):
                raise ValueError(f"policy {type(policy).__name__} has no method {method}()")
        self._init_tracking(clock, ema_alpha, window)
        # One thread per available core unless told otherwise; with the passive OpenMP wait
        # the package sets (cpu_threads.py) they do not collapse beside a busy neighbour.
        torch.set_num_threads(inference_threads(torch_threads))
        self.device = resolve_device(device)
        if isinstance(policy, torch.nn.Module):
            policy.to(self.device)
        self.policy = policy
        self.to_tensors = to_tensors
        self.frames: FrameFeatureCache | None = None
        if stream_encoder:
            n_cameras = int(policy.config.n_cameras)
            # The window's frames plus a few that arrive while a chunk is computed.
            capacity = int(getattr(policy.config, "n_obs_steps", 2)) + 6
            self.frames = FrameFeatureCache(policy, n_cameras, capacity)
        self._offered: dict[int, np.ndarray] = {}  # newest frame per camera, not encoded yet
        self._request: tuple[Mapping[str, Any], float, float, int] | None = None
        self._running = False
        self._result: InferenceResult | None = None
        self._reset_pending = False
        self._generation = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------ control thread
    @property
    def busy(self) -> bool:
        """True while a request is queued or running."""
        with self._cond:
            return self._request is not None or self._running

    def submit(self, obs: Mapping[str, Any], t_obs: float) -> bool:
        """Queue an inference on `obs` sampled at tick time `t_obs`; False if one is in flight."""
        with self._cond:
            if self._closed:
                raise RuntimeError("InferenceWorker.submit after close()")
            if self._request is not None or self._running:
                return False
            self._request = (obs, float(t_obs), self.clock(), self._generation)
            self._cond.notify_all()
            return True

    @property
    def streams_frames(self) -> bool:
        """True when `offer_frame` is worth calling (the streaming encoder is on)."""
        return self.frames is not None

    def offer_frame(self, camera: int, image: np.ndarray) -> None:
        """A decoded camera frame (H, W, 3) uint8 as it arrives: encoded on the worker thread
        when no request is waiting (an older frame of the same camera not encoded yet is
        dropped). Never blocks; ignored when the streaming encoder is off."""
        if self.frames is None:
            return
        with self._cond:
            self._offered[int(camera)] = image
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block (real time) until no request or reset is pending or running; False on timeout.
        For tests and shutdown, never on the control thread."""
        return self._wait_while(
            lambda: self._request is not None or self._running or self._reset_pending, timeout
        )

    def reset(self) -> None:
        """New episode: discard queued/in-flight/unpolled results and call `policy.reset()` on
        the worker thread before the next request (so it never races a running inference)."""
        with self._cond:
            self._generation += 1
            self._request = None
            self._result = None
            self._reset_pending = True
            self._offered.clear()
            self._cond.notify_all()

    def warm_up(self, obs: Mapping[str, Any], n: int = 2) -> InferenceResult:
        """Run `n` inferences synchronously in the calling thread (CUDA init, allocator, kernel
        selection) before the node goes active, then `policy.reset()`. Only the last run's
        latency enters the statistics, so the first slow run does not inflate the estimate.
        Raises RuntimeError if the policy fails or if a request is in flight."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        with self._cond:
            if self._closed:
                raise RuntimeError("InferenceWorker.warm_up after close()")
            if self._request is not None or self._running:
                raise RuntimeError("InferenceWorker.warm_up while an inference is in flight")
            self._running = True
        try:
            for _ in range(n):
                start = self.clock()
                chunk = self._infer(obs)
                latency = self.clock() - start
            self.policy.reset()
        except Exception as err:
            raise RuntimeError(f"warm-up inference failed: {type(err).__name__}: {err}") from err
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()
        with self._cond:
            self._record_latency(latency)
        return InferenceResult(chunk, float("nan"), latency)

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the thread (after the running inference, if any); True if it has exited."""
        with self._cond:
            self._closed = True
            self._request = None
            self._reset_pending = False
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> InferenceWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ worker thread
    def _to_device(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value)).to(self.device)
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        return value

    def _infer(self, obs: Mapping[str, Any]) -> np.ndarray:
        with torch.inference_mode():
            if self.frames is not None:
                obs = self.frames.replace_images(dict(obs))
            batch = {k: self._to_device(v) for k, v in obs.items()} if self.to_tensors else obs
            out = self.policy.predict_action_chunk(batch)
            if isinstance(out, torch.Tensor):
                out = out.detach().to("cpu").numpy()
        if self.delay_s:
            time.sleep(self.delay_s)
        out = np.asarray(out)
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] < 1 or out.shape[2] < 1:
            raise ValueError(
                f"{type(self.policy).__name__}.predict_action_chunk returned shape {out.shape}, "
                "expected (1, H, D)"
            )
        return np.array(out[0], dtype=np.float64)

    def _encode_offered(self, camera: int, frame: np.ndarray) -> None:
        try:
            assert self.frames is not None
            self.frames.add(camera, frame)
        except Exception:  # a bad frame: the request that uses it encodes it and reports
            pass

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (
                    self._request is not None
                    or self._reset_pending
                    or self._closed
                    or (self._offered and not self._running)  # not during warm_up
                ):
                    self._cond.wait()
                if self._closed:
                    return
                frame = None
                if self._request is None and not self._reset_pending:
                    # Between requests: encode a frame (a request submitted meanwhile waits
                    # for this one frame, then finds it encoded).
                    camera = next(iter(self._offered))
                    frame = self._offered.pop(camera)
            if frame is not None:
                self._encode_offered(camera, frame)
                continue
            with self._cond:
                request, self._request = self._request, None
                do_reset, self._reset_pending = self._reset_pending, False
                self._running = True
            error: BaseException | None = None
            chunk = None
            try:
                if do_reset:
                    self.policy.reset()
                if request is not None:
                    chunk = self._infer(request[0])
            except Exception as err:
                error = err
            done = self.clock()
            with self._cond:
                self._running = False
                if error is not None:
                    self.last_error = error
                    self.error_count += 1
                if request is not None and request[3] == self._generation:
                    _, t_obs, t_submit, _ = request
                    latency = done - t_submit
                    if error is None:
                        self._record_latency(latency)
                        self.completed_count += 1
                    self._result = InferenceResult(chunk, t_obs, latency, error)
                self._cond.notify_all()
