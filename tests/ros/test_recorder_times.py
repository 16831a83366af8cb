"""recorder_node's record times: the middleware's receipt (minus queueing in the executor),
no message queued before ~/start, and a writer warmed up so the first bag is as fresh as later
ones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy

from diffusion_policy_node.ros import recorder_node
from diffusion_policy_node.ros.recorder_node import RecorderNode

pytestmark = pytest.mark.ros


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch) -> Iterator[RecorderNode]:
    opened: list[Path] = []

    class CountingWriter(recorder_node.BagWriter):
        def __init__(self, path, *args, **kwargs) -> None:
            opened.append(Path(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(recorder_node, "BagWriter", CountingWriter)
    rclpy.init(
        args=[
            "--ros-args",
            "-p",
            f"output_dir:={tmp_path / 'bags'}",
            "-p",
            "allow_missing_topics:=true",
        ]
    )
    try:
        node = RecorderNode()
    except Exception:
        rclpy.shutdown()
        raise
    node.writers_opened = opened
    try:
        yield node
    finally:
        node.close()
        node.destroy_node()
        rclpy.shutdown()


def test_record_time_is_the_receipt_and_nothing_from_before_start(recorder) -> None:
    assert recorder_node.MESSAGE_INFO  # the Jazzy wheels pass message info to callbacks
    before = recorder.get_clock().now().nanoseconds
    assert before <= recorder.record_time_ns(None) <= recorder.get_clock().now().nanoseconds
    recorder.start_bag()
    opened = recorder.opened_wall_ns
    assert recorder.record_time_ns({"received_timestamp": opened - 1}) is None
    received = time.time_ns() - 200_000_000  # waited 0.2 s in the executor's queue
    recorder.opened_wall_ns = received - 1
    before = recorder.get_clock().now().nanoseconds
    t = recorder.record_time_ns({"received_timestamp": received})
    after = recorder.get_clock().now().nanoseconds
    assert t is not None and before - 1_200_000_000 <= t <= after - 200_000_000


def test_the_writer_is_warmed_up_before_the_first_bag(recorder) -> None:
    # One throwaway bag at start-up (outside output_dir, deleted), then episode_0000.
    (warm,) = recorder.writers_opened
    assert not warm.parent.exists() and recorder.output_dir not in warm.parents
    assert recorder.start_bag()["bag"].endswith("episode_0000")
    assert recorder.stop_bag()["messages"] == {}
    assert len(recorder.writers_opened) == 2
