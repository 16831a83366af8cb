"""Camera message types from the recording, over DDS: a CompressedImage camera on a topic whose
name does not end in /compressed (`/camera/jpeg`) drives a node whose checkpoint recorded that
type; a node whose checkpoint recorded Image for the same topic holds, WARNs naming the topic
and both types, and says so in its hold reason (it used to subscribe by the topic name and
hold forever with "no camera image received yet")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from std_msgs.msg import Float64MultiArray

from .policy_node_harness import NO_URDF, NodeGroup, NodeProcess, Probe, make_tiny_checkpoint

pytestmark = pytest.mark.ros

TOPIC = "/camera/jpeg"
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"
GOOD, WRONG = "pn_jpeg", "pn_wrong_type"
MOD = "diffusion_policy_node.ros."


class Graph(NodeGroup):
    def __init__(self, tmp: Path) -> None:
        self.probe = Probe("camera_types_probe")
        self.procs = [
            NodeProcess(
                MOD + "testing.fake_sensors",
                ["-p", f"camera_topics:=[{TOPIC}]", "-p", "image_format:=jpeg",
                 "-p", "rate_hz:=20.0"],
                tmp / "sensors.log",
            )
        ]  # fmt: skip
        self.nodes = {}
        for name, msgtype in ((GOOD, COMPRESSED), (WRONG, IMAGE)):
            ckpt = make_tiny_checkpoint(tmp / name, cameras=[TOPIC], camera_types=[msgtype])
            out = f"/{name}/commands"
            self.probe.subscribe(out, Float64MultiArray)
            self.nodes[name] = NodeProcess(
                MOD + "policy_node",
                [
                    "-r", f"__node:={name}", "-p", f"checkpoint:={ckpt}", *NO_URDF,
                    "-p", "torch_threads:=1", "-p", "warmup_runs:=1",
                    "-p", "max_obs_age:=0.8", "-p", "inference_process:=false",
                    "-p", "output_mode:=stream", "-p", f"output_topic:={out}",
                ],
                tmp / f"{name}.log",
            )  # fmt: skip
            self.procs.append(self.nodes[name])


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory, ros_domain_id: int):
    with Graph(tmp_path_factory.mktemp("camera_types")) as g:
        yield g


def test_recorded_compressed_type_on_any_topic_name_is_received(graph: Graph) -> None:
    start = time.monotonic()
    out = f"/{GOOD}/commands"
    try:
        graph.probe.wait_for(lambda: len(graph.probe.since(out, start)) >= 5, 90.0, "commands")
    except TimeoutError:
        diag = graph.probe.latest_diag(GOOD)
        raise AssertionError(f"no commands: {diag.get('hold_reason')!r}") from None
    diag = graph.probe.diag(GOOD)
    assert diag["state"] == "active", diag["message"]
    assert int(diag["bad_images"]) == 0


def test_a_publisher_of_another_type_is_named_in_a_warning_and_the_hold_reason(
    graph: Graph,
) -> None:
    node = graph.nodes[WRONG]
    deadline = time.monotonic() + 90.0
    reason = ""
    while time.monotonic() < deadline:
        assert node.alive(), node.log()
        diag = graph.probe.latest_diag(WRONG)
        reason = diag.get("hold_reason", "")
        if "has a publisher of" in reason:
            break
        time.sleep(0.5)
    assert diag["state"] == "holding", diag["message"]
    assert f"no camera '{TOPIC}' image received yet" in reason
    assert f"{TOPIC} has a publisher of {COMPRESSED}" in reason
    assert f"subscribes with {IMAGE} (recorded in the checkpoint)" in reason
    warns = [
        ln for ln in node.log().splitlines() if "has a publisher of" in ln and "holding" not in ln
    ]
    assert len(warns) == 1 and "WARN" in warns[0] and TOPIC in warns[0], warns
    assert graph.probe.since(f"/{WRONG}/commands", 0.0) == []
