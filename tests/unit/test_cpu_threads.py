"""OpenMP defaults and thread rules of diffusion_policy_node/cpu_threads.py."""

import os
import subprocess
import sys

import pytest

from diffusion_policy_node import cpu_threads
from diffusion_policy_node.cpu_threads import (
    apply_omp_defaults,
    available_cores,
    inference_threads,
    omp_defaults,
)


def test_defaults_fill_only_what_the_user_did_not_set() -> None:
    assert omp_defaults({}) == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert omp_defaults({"OMP_WAIT_POLICY": "ACTIVE"}) == {"KMP_BLOCKTIME": "0"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert apply_omp_defaults(env) == {"KMP_BLOCKTIME": "0"}
    assert env == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0"}


def _child_env(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")}
    code = (
        "import sys, os, diffusion_policy_node\n"
        "assert 'torch' not in sys.modules\n"
        "from diffusion_policy_node.cpu_threads import added_to_environ\n"
        "print(os.environ.get('OMP_WAIT_POLICY'), sorted(added_to_environ()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_package_sets_passive_wait_before_torch_loads() -> None:
    assert _child_env({}) == "PASSIVE ['KMP_BLOCKTIME', 'OMP_WAIT_POLICY']"
    assert _child_env({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE ['KMP_BLOCKTIME']"


def test_added_to_environ_reports_only_the_process_environment() -> None:
    before = cpu_threads.added_to_environ()
    apply_omp_defaults({})
    assert cpu_threads.added_to_environ() == before


def test_inference_threads() -> None:
    assert inference_threads(3) == 3
    assert inference_threads(None) == available_cores() >= 1
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="torch_threads"):
            inference_threads(bad)
