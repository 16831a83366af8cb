"""The selftest's content checks catch corrupted messages (ROS types, no DDS needed)."""

from types import SimpleNamespace

import numpy as np
import pytest

from diffusion_policy_node.ros import selftest

pytestmark = pytest.mark.ros


def _image(seq: int, data: bytes) -> SimpleNamespace:
    header = SimpleNamespace(frame_id=f"selftest/{seq}")
    size = selftest.SIZE
    return SimpleNamespace(
        header=header, encoding="rgb8", height=size, width=size, step=size * 3, data=data
    )


def test_check_image_accepts_exact_and_rejects_one_flipped_byte() -> None:
    good = selftest.expected_image(7).tobytes()
    assert selftest.check_image(_image(7, good)) is None
    bad = bytearray(good)
    bad[1234] ^= 0xFF
    assert "1 wrong bytes" in selftest.check_image(_image(7, bytes(bad)))


def test_check_joints_uses_names_not_order() -> None:
    want = selftest.expected_joints(3)
    names = list(reversed(selftest.JOINTS))
    msg = SimpleNamespace(
        header=SimpleNamespace(frame_id="selftest/3"),
        name=names,
        position=[want[n] for n in names],
    )
    assert selftest.check_joints(msg) is None
    msg.position = list(np.array(msg.position) + 1e-3)
    assert "off by" in selftest.check_joints(msg)
