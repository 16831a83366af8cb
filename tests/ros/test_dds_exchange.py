"""Two real rclpy processes exchange Image (rgb8, 96x96) and JointState over DDS."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.ros


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "diffusion_policy_node.ros.selftest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )


def test_image_and_joint_state_cross_process(ros_domain_id: int) -> None:
    listener = _spawn("listen", "--count", "30", "--timeout", "60")
    talker = _spawn("talk", "--count", "30", "--rate", "30")
    try:
        out_l, _ = listener.communicate(timeout=90)
        talker.communicate(timeout=30)
    finally:
        for p in (listener, talker):
            if p.poll() is None:
                p.kill()
    assert listener.returncode == 0, out_l
    assert "verified {'image': 30, 'joint_state': 30}" in out_l


def test_listener_fails_without_talker() -> None:
    # The check must be able to fail: nobody publishes on this domain → non-zero exit.
    env = dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ["ROS_DOMAIN_ID"]) + 50) % 100 + 1))
    proc = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_node.ros.selftest", "listen", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "selftest FAILED" in proc.stdout
