"""CPU threading for inference and training: the OpenMP wait policy and the torch thread count.

torch's CPU kernels run on an OpenMP pool (libgomp in the PyPI wheels). By default its idle
threads spin on a core for a while after every parallel region, waiting for the next one. On an
idle machine that saves a wake-up; beside another CPU-bound process (a camera driver, a
recorder, a second policy) it is the collapse measured in docs/performance.md: the spinning
thread and the neighbour share a core, a parallel region waits for its slowest thread, and a
chunk takes many times its idle time. With the passive wait policy an idle OpenMP thread
sleeps at once, so a neighbour costs the pool one core, not the whole pool.

The wait policy is read once, when the OpenMP runtime loads with torch, so it has to be in the
environment of a process *before* that process imports torch: importing this package applies
`apply_omp_defaults()`, which also reaches every process started from it (the inference child
process). A variable the user has set is never overridden: `OMP_WAIT_POLICY=ACTIVE` (or
`GOMP_SPINCOUNT`) in the environment brings spinning back for a dedicated machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping

# GNU OpenMP (PyPI torch wheels) reads OMP_WAIT_POLICY; Intel's OpenMP (some conda builds)
# reads KMP_BLOCKTIME (ms an idle thread spins; 0 = sleep at once) and honours the former too.
OMP_DEFAULTS: tuple[tuple[str, str], ...] = (
    ("OMP_WAIT_POLICY", "PASSIVE"),
    ("KMP_BLOCKTIME", "0"),
)
_ADDED: dict[str, str] = {}


def omp_defaults(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The OpenMP variables to add to `environ` (default os.environ): those not set there."""
    environ = os.environ if environ is None else environ
    return {key: value for key, value in OMP_DEFAULTS if key not in environ}


def apply_omp_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Add `omp_defaults()` to `environ` (default os.environ); returns what was added. The
    package does this when it is imported (diffusion_policy_node/__init__.py), so a process
    that imports it before torch (every entry point: policy_node, its inference child,
    dp-train, the sim and benches) and every process it starts run OpenMP with them."""
    own = environ is None
    environ = os.environ if environ is None else environ
    added = omp_defaults(environ)
    environ.update(added)
    if own:
        _ADDED.update(added)
    return added


def added_to_environ() -> dict[str, str]:
    """What `apply_omp_defaults()` added to os.environ in this process (the user had not set
    it): a tool that starts a process which should run with OpenMP's own defaults (a
    reference implementation) removes these."""
    return dict(_ADDED)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; os.cpu_count() where unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def inference_threads(requested: int | None = None) -> int:
    """torch threads for the inference worker: `requested` (parameter `torch_threads`, >= 1),
    else one per available core."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise ValueError(f"torch_threads must be an int >= 1, got {requested!r}")
        return requested
    return available_cores()


def train_threads(requested: int | None = None) -> int:
    """torch threads for dp-train: `requested` (train.torch_threads, >= 1), else one per
    available core."""
    if requested is not None:
        if not isinstance(requested, int) or requested < 1:
            raise ValueError(f"train.torch_threads must be an int >= 1, got {requested!r}")
        return requested
    return available_cores()
