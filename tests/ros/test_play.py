"""dp-play over DDS: a short recorded episode (written in the test with the repo's bag writer)
is published with /clock, byte for byte; with --compare a policy_node on sim time (the bundled
checkpoint) fed by the playback produces commands, compared per joint (figures and PNG)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.data.bag_sources import open_bag
from diffusion_policy_node.eval.evaluate import bundled_checkpoint
from diffusion_policy_node.eval.expert_bag import CAMERA, COMMANDS, JOINTS, T0, write_expert_bag
from diffusion_policy_node.ros.conversions import stamp_to_sec

from .policy_node_harness import Probe

pytestmark = pytest.mark.ros

PLAY = [sys.executable, "-m", "diffusion_policy_node.ros.play_node"]


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("play") / "episode"
    write_expert_bag(path, seconds=3.0)
    return path


def _recorded(bag: Path, topic: str) -> list[bytes]:
    opened = open_bag(bag)
    try:
        return [bytes(raw) for _, _, raw in opened.messages({topic})]
    finally:
        opened.close()


def test_help_without_ros() -> None:
    out = subprocess.run([*PLAY, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--compare" in out.stdout and "--rate" in out.stdout


def test_bad_topic_is_named(bag: Path) -> None:
    out = subprocess.run(
        [*PLAY, str(bag), "--topics", "/nope"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and "/nope" in out.stderr, out.stderr


def test_plays_the_topics_with_clock(bag: Path, tmp_path: Path, ros_domain_id: int) -> None:
    probe = Probe("play_test_probe")
    got: dict[str, list] = {CAMERA: [], JOINTS: [], COMMANDS: [], "/clock": []}
    for topic, msg_type in ((CAMERA, Image), (JOINTS, JointState), (COMMANDS, JointTrajectory),
                            ("/clock", Clock)):  # fmt: skip
        probe.node.create_subscription(
            msg_type, topic, lambda m, t=topic: got[t].append(m), QoSProfile(depth=1000)
        )
    log = open(tmp_path / "play.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [*PLAY, str(bag), "--start-paused", "--rate", "2", "--ros-args", "-r", "__node:=player"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # Paused: the clock stands at the bag's start; play once our subscriptions matched.
        probe.wait_for(lambda: len(got["/clock"]) > 0, 60, "the paused /clock")
        assert {stamp_to_sec(m.clock) for m in got["/clock"]} == {T0 + 0.001}
        for topic in (CAMERA, JOINTS, COMMANDS):
            probe.wait_for(lambda t=topic: probe.node.count_publishers(t) > 0, 30, topic)
        assert probe.trigger("/player/unpause").success
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        probe.close()
    assert "Traceback" not in (tmp_path / "play.log").read_text()
    # Every message arrives, equal to the bag's (stamps untouched). Compared as messages: CDR
    # padding bytes are whatever the recording serializer left there.
    for topic, msg_type in ((CAMERA, Image), (JOINTS, JointState), (COMMANDS, JointTrajectory)):
        recorded = [deserialize_message(raw, msg_type) for raw in _recorded(bag, topic)]
        assert len(got[topic]) == len(recorded), topic
        assert got[topic] == recorded, topic
    clock = np.array([stamp_to_sec(m.clock) for m in got["/clock"]])
    assert np.all(np.diff(clock) >= 0)
    last_stamp = max(stamp_to_sec(m.header.stamp) for m in got[JOINTS])
    assert clock[-1] == pytest.approx(last_stamp + 0.001, abs=1e-9)  # the last record time
    # The clock was never behind a published message's record time (stamp + 1 ms here).
    assert len(clock) > len(got[JOINTS])


def test_policy_node_on_the_playback_is_compared(bag: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "cmp"
    run = subprocess.run(
        [*PLAY, str(bag), "--compare", str(bundled_checkpoint()), "--out", str(out_dir),
         "--policy-param", "inference_process:=false", "--policy-param", "torch_threads:=1",
         "--policy-param", "warmup_runs:=1", "--policy-param", "robot_description_topic:=''",
         "--ros-args", "-r", "__node:=cmp_player"],
        capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:] + (out_dir / "policy_node.log").read_text()
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["commands"]["arm"] > 0
    assert set(report["per_joint"]) == {"joint1", "joint2", "joint3"}
    assert 0 < report["compared"] <= report["steps"] == 30
    for name, err in report["per_joint"].items():
        assert f"{name}: MAE {err['mae']:.5f}" in run.stderr
        assert 0 <= err["mae"] <= err["rmse"] < 1.0  # rad; an unrelated policy is far worse
    png = Path(report["png"])
    assert png == out_dir / "compare.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out_dir / "compare.json").read_text())["per_joint"] == report["per_joint"]


def test_loop_jumps_the_clock_back_and_ctrl_c_ends_it(bag: Path, tmp_path: Path) -> None:
    probe = Probe("play_loop_probe")
    clock: list[float] = []
    probe.node.create_subscription(
        Clock, "/clock", lambda m: clock.append(stamp_to_sec(m.clock)), QoSProfile(depth=1000)
    )
    proc = subprocess.Popen(
        [*PLAY, str(bag), "--loop", "--rate", "4", "--topics", JOINTS, "--ros-args", "-r",
         "__node:=loop_player"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        went_back = lambda: any(b < a for a, b in itertools.pairwise(list(clock)))  # noqa: E731
        probe.wait_for(lambda: went_back() and clock[-1] > T0 + 1.0, 60, "a second pass")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        probe.close()
    back = [a for a, b in itertools.pairwise(clock) if b < a]
    assert back and all(a == pytest.approx(T0 + 2.95 + 0.001) for a in back)  # end -> start
