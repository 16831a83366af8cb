"""Suite-wide setup: every test run talks DDS only to itself."""

import os
import random

import pytest


def _pick_domain_id() -> int:
    # 1..100 are valid Fast DDS domain ids on Linux that keep the participant ports in range;
    # mixing in the pid keeps parallel runs (CI next to a developer's run) apart.
    return 1 + (os.getpid() * 7919 + random.SystemRandom().randrange(100)) % 100


os.environ["ROS_DOMAIN_ID"] = os.environ.get("DP_TEST_ROS_DOMAIN_ID") or str(_pick_domain_id())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def ros_domain_id() -> int:
    return int(os.environ["ROS_DOMAIN_ID"])


@pytest.fixture(autouse=True)
def _sigint_as_a_terminal_gives_it():
    """Every test starts with SIGINT as a shell gives it (Python's KeyboardInterrupt handler,
    not blocked). A child process inherits an ignored or blocked SIGINT across exec, so a test
    that left it so (an in-process node main resets it to SIG_IGN at its end) would make every
    later node ignore Ctrl-C. After the test, a changed disposition is reported by name."""
    import signal
    import sys
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        print("\nconftest: the test left SIGINT changed; restored", file=sys.stderr)
