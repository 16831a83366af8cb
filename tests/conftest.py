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
