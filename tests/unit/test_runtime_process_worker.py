"""ProcessInferenceWorker: the InferenceWorker contract with the policy in a child process."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from diffusion_policy_node.policy.checkpoint import load_checkpoint
from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
from diffusion_policy_node.runtime.process_worker import (
    InferenceProcessError,
    InferenceWorker,
    ProcessInferenceWorker,
    start_worker,
)
from diffusion_policy_node.runtime.settings import InferenceSettings
from tests.factories import tiny_checkpoint, tiny_config

ACTION_MIN, ACTION_MAX = [-1.0, -0.5, -2.0], [1.0, 0.5, 2.0]


class Clock:
    """Deterministic clock: every call advances 1 ms."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_checkpoint(
        tmp_path_factory.mktemp("pw") / "ckpt",
        tiny_config(["a", "b", "c"], ["/cam"], encoder_width=64),
        action_range=(ACTION_MIN, ACTION_MAX),
    )


def _obs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        OBS_IMAGES: rng.integers(0, 256, (1, 2, 1, 3, 40, 40), dtype=np.uint8),
        OBS_STATE: rng.uniform(-1, 1, (1, 2, 3)).astype(np.float32),
    }


def test_process_worker_matches_in_process_policy(checkpoint: Path) -> None:
    clock = Clock()
    local = load_checkpoint(checkpoint)
    local.seed(7)
    # fp32 on both sides: `auto` may put the encoder in bf16 on this CPU (test_precision.py
    # bounds that); here the numbers must come through the process boundary unchanged.
    settings = InferenceSettings(str(checkpoint), device="cpu", seed=7, precision="fp32")
    with ProcessInferenceWorker(settings, clock=clock) as worker:
        assert worker.device == "cpu" and worker.alive
        np.testing.assert_allclose(worker.policy_info.action_min, ACTION_MIN)
        np.testing.assert_allclose(worker.policy_info.action_max, ACTION_MAX)
        assert worker.policy_info.num_inference_steps == 3
        warm = worker.warm_up(_obs(0), n=1)
        assert warm.chunk.shape == (16, 3)
        assert worker.latency_stats().count == 1
        worker.reset()  # seeded: the noise stream restarts, as local.seed(7) did
        assert worker.submit(_obs(1), t_obs=5.0)
        assert worker.busy and not worker.submit(_obs(2), t_obs=6.0)  # one in flight
        assert worker.wait(60.0)
        result = worker.poll()
        assert worker.poll() is None
        assert result.ok and result.t_obs == 5.0 and result.latency_s > 0
        want = local.predict_action_chunk(_obs(1))[0].numpy()
        np.testing.assert_allclose(result.chunk, want, rtol=1e-5, atol=1e-6)
        assert worker.completed_count == 1 and worker.latency_estimate is not None
        # reset discards what is in flight; the next result belongs to the next request
        assert worker.submit(_obs(3), t_obs=7.0)
        worker.reset()
        assert not worker.busy and worker.poll() is None
        assert worker.submit(_obs(4), t_obs=8.0)
        assert worker.wait(60.0)
        assert worker.poll().t_obs == 8.0
    assert not worker.alive


def test_bad_checkpoint_fails_at_start(tmp_path: Path) -> None:
    with pytest.raises(InferenceProcessError, match="does not exist"):
        ProcessInferenceWorker(InferenceSettings(str(tmp_path / "missing"), device="cpu"))


def test_start_worker_in_a_thread_reports_the_same_policy_info(checkpoint: Path) -> None:
    settings = InferenceSettings(str(checkpoint), device="cpu", num_inference_steps=2)
    worker, info = start_worker(dataclasses.replace(settings, in_process=False))
    try:
        assert isinstance(worker, InferenceWorker)
        assert info.device == "cpu" and info.num_inference_steps == 2
        np.testing.assert_allclose(info.action_min, ACTION_MIN)
        np.testing.assert_allclose(info.action_max, ACTION_MAX)
    finally:
        worker.close()


def test_submit_never_blocks_on_a_busy_child_with_large_observations(tmp_path: Path) -> None:
    # Two 224x224 cameras x 2 steps (~600 KiB, far more than a pipe buffer) while the child is
    # stuck in a slow inference: a pipe write from the caller would block until the child reads;
    # submit/reset must return at once (a thread that is still inside them after 20 s fails).
    import threading

    config = tiny_config(
        ["a", "b", "c"], ["/a", "/b"], image_size=(224, 224), crop_shape=None,
        num_inference_steps=1, encoder_width=16,
    )  # fmt: skip
    ckpt = tiny_checkpoint(tmp_path / "big", config, action_range=(ACTION_MIN, ACTION_MAX))
    rng = np.random.default_rng(0)
    obs = {
        OBS_IMAGES: rng.integers(0, 256, (1, 2, 2, 3, 224, 224), dtype=np.uint8),
        OBS_STATE: np.zeros((1, 2, 3), np.float32),
    }
    assert obs[OBS_IMAGES].nbytes > 500 * 1024
    settings = InferenceSettings(str(ckpt), device="cpu", delay_s=60.0)  # the child is slow
    with ProcessInferenceWorker(settings, clock=Clock()) as worker:
        calls_done = threading.Event()

        def control_thread() -> None:
            assert worker.submit(obs, t_obs=1.0)  # the child starts its 60 s inference
            for k in range(3):  # the controller gives up on it and asks again, 3 times
                worker.reset()
                assert worker.submit(obs, t_obs=2.0 + k)
            calls_done.set()

        t = threading.Thread(target=control_thread, daemon=True)
        t.start()
        t.join(20.0)
        assert calls_done.is_set(), "submit/reset blocked on the busy inference process"
        assert worker.busy and worker.poll() is None  # nothing has come back yet


def _sigint_disposition(queue) -> None:
    import signal

    queue.put(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)


def test_the_inference_process_ignores_the_terminals_ctrl_c() -> None:
    """A Ctrl-C reaches the whole process group: the child (importing torch, inferring) must
    not print a KeyboardInterrupt traceback; a SIGINT to the parent meanwhile is not lost."""
    import ctypes
    import multiprocessing as mp
    import signal
    import threading

    from diffusion_policy_node.runtime.process_worker import (
        _SIGACTION_SIZE,
        _child_ignores_sigint,
        _sigaction,
    )

    def os_action() -> bytes:  # the OS-level handler (rclpy's C handler, when installed)
        buffer = ctypes.create_string_buffer(_SIGACTION_SIZE)
        _sigaction(signal.SIGINT, None, buffer)
        return buffer.raw[: ctypes.sizeof(ctypes.c_void_p)]  # sa_handler, the first field

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_sigint_disposition, args=(queue,))
    before, before_os = signal.getsignal(signal.SIGINT), os_action()
    with pytest.raises(KeyboardInterrupt):
        with _child_ignores_sigint():
            child.start()
            # to this (main) thread, which blocks it: pending until the block ends
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        pytest.fail("the SIGINT sent meanwhile was lost")
    assert queue.get(timeout=60) is True
    child.join(10)
    assert signal.getsignal(signal.SIGINT) is before
    assert os_action() == before_os


def test_the_parents_os_level_sigint_action_is_restored_exactly() -> None:
    """rclpy installs a C-level SIGINT handler that Python's signal.signal would replace for
    good (its Ctrl-C then stops waking the executor); the block puts back the OS-level action
    exactly. Simulated with an OS-level SIG_IGN that Python's handler record does not know."""
    import ctypes
    import signal

    from diffusion_policy_node.runtime.process_worker import (
        _SIGACTION_SIZE,
        _child_ignores_sigint,
        _sigaction,
    )

    def handler_field(buffer) -> int:
        return ctypes.c_void_p.from_buffer_copy(buffer.raw[: ctypes.sizeof(ctypes.c_void_p)]).value

    original = ctypes.create_string_buffer(_SIGACTION_SIZE)
    ignore = ctypes.create_string_buffer(_SIGACTION_SIZE)
    ctypes.memmove(ignore, ctypes.byref(ctypes.c_void_p(1)), ctypes.sizeof(ctypes.c_void_p))
    _sigaction(signal.SIGINT, ignore, original)
    try:
        python_record = signal.getsignal(signal.SIGINT)
        with _child_ignores_sigint():
            pass
        now = ctypes.create_string_buffer(_SIGACTION_SIZE)
        _sigaction(signal.SIGINT, None, now)
        assert handler_field(now) == int(signal.SIG_IGN)
        assert signal.getsignal(signal.SIGINT) is python_record
    finally:
        _sigaction(signal.SIGINT, original, None)
