"""Inference in a child process, behind the `InferenceWorker` interface.

Why: on a CPU-only machine the DDIM loop's Python (tens of small ops per denoising step) holds
the GIL, so a worker *thread* delays the control loop by milliseconds now and then (tens of
ms when the machine is loaded; see bench/control_jitter.py). A child process has its own GIL
(and can be niced), so the control process only pays for sending the observation.

The child (started with the "spawn" method: forking a process that already runs DDS and torch
threads is unsafe) loads the checkpoint itself and serves requests with an `InferenceWorker`,
so the inference code path is the same as in-thread. Observations are small (images are
resized to the checkpoint's size before they enter the history: 2 x 96 x 96 x 3 bytes for the
default config), so a pipe is used rather than shared memory; copying ~55 kB costs tens of µs.
The pipe is written by a sender thread, never by the caller: a write blocks while the child is
busy once the payload exceeds the pipe buffer (~64 KiB), and the caller is the control thread.
A parent-side receiver thread timestamps results with the injected clock, so latency has the
same meaning as with `InferenceWorker` (submit → result available, node clock).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from .inference_worker import InferenceResult, InferenceWorker, LatencyTracking, resolve_device
from .settings import InferenceSettings, PolicyInfo


def load_policy(settings: InferenceSettings) -> tuple[Any, PolicyInfo]:
    """Load the checkpoint for inference as `settings` say: (policy, PolicyInfo). The one place
    where the node's inference settings become a policy (thread or child process)."""
    from diffusion_policy_node.policy.checkpoint import load_checkpoint

    device = resolve_device(settings.device)
    policy = load_checkpoint(
        settings.checkpoint,
        device=device,
        num_inference_steps=settings.num_inference_steps,
        acceleration=settings.acceleration,
        precision=settings.precision,
    )
    if settings.seed is not None:
        policy.seed(settings.seed)
    return policy, PolicyInfo.of(policy, device)


def start_worker(
    settings: InferenceSettings, clock: Callable[[], float] = time.monotonic
) -> tuple[InferenceWorker | ProcessInferenceWorker, PolicyInfo]:
    """The inference worker `settings` ask for (child process or thread) and its PolicyInfo."""
    if settings.in_process:
        worker = ProcessInferenceWorker(settings, clock=clock)
        return worker, worker.policy_info
    policy, info = load_policy(settings)
    return _thread_worker(policy, info, settings, clock), info


def _thread_worker(
    policy: Any, info: PolicyInfo, settings: InferenceSettings, clock: Callable[[], float]
) -> InferenceWorker:
    return InferenceWorker(
        policy,
        clock=clock,
        device=info.device,
        torch_threads=settings.torch_threads,
        delay_s=settings.delay_s,
        stream_encoder=settings.stream_encoder,
    )


def _serve(conn: Connection, settings: InferenceSettings) -> None:
    """Child process: load the checkpoint, then answer requests until "close" or EOF."""
    # Ctrl-C in a terminal reaches the whole process group: the parent shuts us down through
    # the pipe (or we see EOF when it is gone), so SIGINT must not interrupt an inference.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if settings.nice:
            os.nice(settings.nice)
        policy, info = load_policy(settings)
        worker = _thread_worker(policy, info, settings, time.monotonic)
    except BaseException as exc:  # report every start-up failure to the parent
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", info))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break
        kind = msg[0]
        if kind == "close":
            break
        if kind == "reset":
            worker.reset()
            worker.wait(60.0)
        elif kind == "frame":
            worker.offer_frame(msg[1], msg[2])
        elif kind == "infer":
            _, generation, obs = msg
            worker.submit(obs, 0.0)
            while not worker.wait(3600.0):
                pass
            result = worker.poll()
            error = None if result is None or result.ok else _describe(result.error)
            chunk = None if result is None else result.chunk
            conn.send(("result", generation, chunk, error))
        elif kind == "warm_up":
            _, obs, n = msg
            try:
                out = worker.warm_up(obs, n=n)
                conn.send(("warm_up", out.chunk, None, out.latency_s))
            except Exception as exc:
                conn.send(("warm_up", None, _describe(exc), float("nan")))
    worker.close()


def _describe(err: BaseException | None) -> str:
    return "unknown error" if err is None else f"{type(err).__name__}: {err}"


class InferenceProcessError(RuntimeError):
    """The inference child process failed (start-up error, crash, or a policy exception)."""


_SIGACTION_SIZE = 256  # >= sizeof(struct sigaction) on Linux (152 on x86_64 and aarch64)


def _sigaction(sig: int, new: Any, old: Any) -> None:
    """libc sigaction with opaque buffers: saves and restores the OS-level action exactly
    (rclpy's C handler included), which Python's signal.signal cannot."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.sigaction(sig, new, old) != 0:
        raise OSError(ctypes.get_errno(), "sigaction failed")


@contextlib.contextmanager
def _child_ignores_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT (an ignored disposition survives fork + exec,
    and Python keeps it at start-up): a Ctrl-C reaches the whole process group, and the
    inference process, busy importing torch or inferring, must not print a KeyboardInterrupt
    traceback; its parent stops it (close, kill). Here SIGINT is blocked meanwhile, so one
    arriving then is delivered afterwards (Linux keeps a blocked signal pending even while it
    is ignored), and the OS-level action is put back exactly as it was (Python's handler
    record is never touched). Linux, main thread; elsewhere the child starts as is."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    saved = ctypes.create_string_buffer(_SIGACTION_SIZE)
    ignore = ctypes.create_string_buffer(_SIGACTION_SIZE)
    handler = ctypes.c_void_p(int(signal.SIG_IGN))
    ctypes.memmove(ignore, ctypes.byref(handler), ctypes.sizeof(handler))
    try:
        _sigaction(signal.SIGINT, ignore, saved)  # sa_handler (the first field) = SIG_IGN
        try:
            yield
        finally:
            _sigaction(signal.SIGINT, saved, None)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class ProcessInferenceWorker(LatencyTracking):
    """`InferenceWorker` API (submit/poll/busy/reset/warm_up/latency_*/close) with the policy
    in a child process loaded as `settings` say (`load_policy`)."""

    def __init__(
        self,
        settings: InferenceSettings,
        clock: Callable[[], float] = time.monotonic,
        ema_alpha: float = 0.2,
        window: int = 100,
        start_timeout: float = 300.0,
    ) -> None:
        if not isinstance(settings, InferenceSettings):
            raise ValueError(
                f"settings must be an InferenceSettings, got {type(settings).__name__}"
            )
        self._init_tracking(clock, ema_alpha, window)
        self._pending: tuple[int, float, float] | None = None  # (generation, t_obs, t_submit)
        self._generation = 0
        self._result: InferenceResult | None = None
        self._warm: tuple[Any, str | None, float] | None = None
        self._closed = False
        self._dead: str | None = None
        self._stream = bool(settings.stream_encoder)
        # Everything for the child goes through one sender thread: a pipe write blocks while the
        # child is busy and the payload exceeds the pipe buffer (two 224x224 cameras x 2 steps
        # are ~600 KiB), and the control thread must never wait for that.
        self._outbox: queue.SimpleQueue[tuple | None] = queue.SimpleQueue()
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve,
            args=(child, settings),
            name="dp-inference",
            daemon=True,
        )
        with _child_ignores_sigint():
            self._proc.start()
        child.close()
        try:
            started = self._conn.poll(start_timeout)
        except BaseException:  # Ctrl-C / SIGTERM while the child loads: do not leave it behind
            self._kill()
            raise
        if not started:
            self._kill()
            raise InferenceProcessError(
                f"inference process did not start within {start_timeout:.0f} s"
            )
        try:
            status, detail = self._conn.recv()
        except EOFError:
            self._kill()
            raise InferenceProcessError(
                f"inference process exited during start-up (exit code {self._proc.exitcode})"
            ) from None
        if status != "ready":
            self._kill()
            raise InferenceProcessError(f"inference process could not start: {detail}")
        self.policy_info: PolicyInfo = detail
        self.device: str = detail.device
        self._rx = threading.Thread(target=self._receive, name="dp-inference-rx", daemon=True)
        self._rx.start()
        self._tx = threading.Thread(target=self._transmit, name="dp-inference-tx", daemon=True)
        self._tx.start()

    # ------------------------------------------------------------------------ control thread
    @property
    def busy(self) -> bool:
        with self._cond:
            return self._pending is not None

    @property
    def alive(self) -> bool:
        return self._dead is None and self._proc.is_alive()

    def submit(self, obs: Mapping[str, Any], t_obs: float) -> bool:
        """Send `obs` (numpy arrays) to the child; False while a request is in flight."""
        with self._cond:
            if self._closed:
                raise RuntimeError("ProcessInferenceWorker.submit after close()")
            if self._pending is not None or self._dead is not None:
                return False
            self._pending = (self._generation, float(t_obs), self.clock())
            generation = self._generation
        self._send(("infer", generation, {k: np.asarray(v) for k, v in obs.items()}))
        return True

    @property
    def streams_frames(self) -> bool:
        """True when `offer_frame` is worth calling (the streaming encoder is on)."""
        return self._stream

    def offer_frame(self, camera: int, image: np.ndarray) -> None:
        """Send a decoded camera frame (H, W, 3) uint8 to the child's streaming encoder
        (`InferenceWorker.offer_frame`). Never blocks; ignored when streaming is off or the
        child is gone."""
        if self._stream and self._dead is None and not self._closed:
            self._outbox.put(("frame", int(camera), np.asarray(image)))

    def wait(self, timeout: float) -> bool:
        """Block until no request is in flight; False on timeout."""
        return self._wait_while(lambda: self._pending is not None and self._dead is None, timeout)

    def reset(self) -> None:
        """Discard in-flight/unpolled results; the child calls `policy.reset()` before its next
        request (requests are served in order)."""
        with self._cond:
            self._generation += 1
            self._pending = None
            self._result = None
        self._send(("reset",))

    def warm_up(
        self, obs: Mapping[str, Any], n: int = 2, timeout: float = 600.0
    ) -> InferenceResult:
        """Run `n` inferences in the child and wait (see `InferenceWorker.warm_up`)."""
        with self._cond:
            if self._pending is not None:
                raise RuntimeError(
                    "ProcessInferenceWorker.warm_up while an inference is in flight"
                )
            self._warm = None
        self._send(("warm_up", {k: np.asarray(v) for k, v in obs.items()}, n))
        with self._cond:
            deadline = time.monotonic() + timeout
            while self._warm is None and self._dead is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"warm-up did not finish within {timeout:.0f} s")
                self._cond.wait(remaining)
            if self._warm is None:
                raise RuntimeError(f"warm-up failed: {self._dead}")
            chunk, error, latency = self._warm
            if error is not None:
                raise RuntimeError(f"warm-up inference failed: {error}")
            # The last run's compute time (the first runs are slow), as InferenceWorker does.
            self._record_latency(latency)
        return InferenceResult(chunk, float("nan"), latency)

    def close(self, timeout: float = 5.0) -> bool:
        """Ask the child to exit (after its running inference), kill it after `timeout`."""
        with self._cond:
            if self._closed:
                return not self._proc.is_alive()
            self._closed = True
            self._pending = None
            self._cond.notify_all()
        self._outbox.put(("close",))
        self._outbox.put(None)  # then the sender thread ends
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._kill()
        # The child is gone, so a send still in progress fails (broken pipe) and the sender
        # ends; only then close the pipe, which must not be closed under a send.
        self._tx.join(1.0)
        self._conn.close()
        return not self._proc.is_alive()

    def __enter__(self) -> ProcessInferenceWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ internals
    def _kill(self) -> None:
        self._proc.kill()
        self._proc.join(5.0)

    def _send(self, msg: tuple) -> None:
        """Queue `msg` for the child; never blocks (the sender thread writes it, in order)."""
        if self._dead is not None:
            raise RuntimeError(self._dead)
        self._outbox.put(msg)

    def _transmit(self) -> None:
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            try:
                self._conn.send(msg)
            except (OSError, ValueError, TypeError) as exc:  # TypeError: closed under a send
                self._mark_dead(f"cannot reach the inference process: {exc}")
                return

    def _mark_dead(self, why: str) -> None:
        with self._cond:
            if self._dead is None and not self._closed:
                self._dead = why
                self.last_error = InferenceProcessError(why)
                self.error_count += 1
                if self._pending is not None:
                    _, t_obs, t_submit = self._pending
                    self._result = InferenceResult(
                        None, t_obs, self.clock() - t_submit, self.last_error
                    )
                self._pending = None
            self._cond.notify_all()

    def _receive(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                self._mark_dead(
                    f"inference process exited (exit code {self._proc.exitcode}); see its log"
                )
                return
            done = self.clock()
            with self._cond:
                if msg[0] == "warm_up":
                    self._warm = (msg[1], msg[2], msg[3])
                elif msg[0] == "result":
                    _, generation, chunk, error = msg
                    if self._pending is not None and self._pending[0] == generation:
                        _, t_obs, t_submit = self._pending
                        self._pending = None
                        latency = done - t_submit
                        err = None if error is None else InferenceProcessError(error)
                        if err is None:
                            self._record_latency(latency)
                            self.completed_count += 1
                        else:
                            self.last_error = err
                            self.error_count += 1
                        self._result = InferenceResult(chunk, t_obs, latency, err)
                self._cond.notify_all()
