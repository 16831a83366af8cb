"""use_sim_time: the control loop runs on /clock (slowed, paused, and jumping back)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rosgraph_msgs.msg import Clock as ClockMsg
from std_msgs.msg import Float64MultiArray

from diffusion_policy_node.ros.conversions import sec_to_stamp

from .policy_node_harness import DT, NO_URDF, NodeProcess, Probe, make_tiny_checkpoint

pytestmark = pytest.mark.ros

TOPIC = "/sim_test/commands"
NODE = "pn_sim"


class SimClock:
    """Publishes /clock at 200 Hz (real time); sim time advances `rate` x real time."""

    def __init__(self, probe: Probe, start: float) -> None:
        self.pub = probe.node.create_publisher(ClockMsg, "/clock", 10)
        self.sim = start
        self.rate = 1.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(0.005):
            now = time.monotonic()
            with self._lock:
                self.sim += self.rate * (now - last)
                msg = ClockMsg(clock=sec_to_stamp(self.sim))
            last = now
            self.pub.publish(msg)

    def set(self, rate: float | None = None, sim: float | None = None) -> None:
        with self._lock:
            if rate is not None:
                self.rate = rate
            if sim is not None:
                self.sim = sim

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


def test_control_loop_follows_sim_time(tmp_path: Path, ros_domain_id: int) -> None:
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    probe = Probe("sim_time_probe")
    clock = SimClock(probe, start=1000.0)
    probe.subscribe(TOPIC, Float64MultiArray)
    sim = ["-p", "use_sim_time:=true"]
    sensors = NodeProcess(
        "diffusion_policy_node.ros.testing.fake_sensors", [*sim, "-p", "joint_rate_hz:=50.0"],
        tmp_path / "fs.log",
    )  # fmt: skip
    node = NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        [
            "-r", f"__node:={NODE}", *sim, "-p", f"checkpoint:={ckpt}", *NO_URDF,
            "-p", "output_mode:=stream", "-p", f"output_topic:={TOPIC}",
            "-p", "inference_process:=false", "-p", "torch_threads:=1",
            "-p", "max_obs_age:=0.8", "-p", "warmup_runs:=1",
        ],
        tmp_path / "node.log",
    )  # fmt: skip
    try:
        probe.wait_for(lambda: len(probe.since(TOPIC, 0.0)) >= 5, 90, "first commands")
        # Half speed: 20 Hz of sim time is 10 Hz of wall time.
        clock.set(rate=0.5)
        time.sleep(0.5)
        t0 = time.monotonic()
        time.sleep(3.0)
        rate = len(probe.since(TOPIC, t0, time.monotonic())) / 3.0
        assert 0.7 * 0.5 / DT <= rate <= 1.3 * 0.5 / DT, f"{rate:.1f} Hz at half sim speed"

        # Paused sim: no ticks, no commands; diagnostics (steady clock) still report.
        clock.set(rate=0.0)
        t_pause = time.monotonic()
        time.sleep(1.2)
        assert probe.since(TOPIC, t_pause + 0.3) == []
        diag = probe.diag(NODE)
        assert diag["state"] == "active"
        assert probe.since(TOPIC, t_pause + 0.3) == []

        # Sim restart: time jumps back 500 s; the node starts a new episode and runs again.
        clock.set(rate=1.0, sim=500.0)
        t_jump = time.monotonic()
        probe.wait_for(lambda: len(probe.since(TOPIC, t_jump)) >= 10, 20, "commands after jump")
        values = np.array([m.data.tolist() for m in probe.since(TOPIC, 0.0)])
        assert np.all(np.isfinite(values))
    finally:
        clock.close()
        rc = node.stop(signal.SIGINT)
        sensors.stop(signal.SIGINT)
        probe.close()
    log = node.log()
    assert rc == 0, log
    assert "node clock jumped back: restarting the episode" in log
    assert "Traceback" not in log
