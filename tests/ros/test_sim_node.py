"""sim_node over DDS: one sim process (real time) shared by the module; a probe node in the test
process reads its topics, sends commands and calls its services."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from diffusion_policy_node.ros.conversions import sec_to_duration, sec_to_stamp, stamp_to_sec
from diffusion_policy_node.sim.arm_task import HOME_QPOS, JOINT_NAMES

from .sim_node_harness import SimSystem

pytestmark = pytest.mark.ros

SIM = "sim_under_test"
WIDTH, HEIGHT = 64, 48
CAMERA_HZ = 30.0
PHYSICS_DT = 0.002


class System(SimSystem):
    def __init__(self, tmp: Path) -> None:
        params = ["-p", f"image_width:={WIDTH}", "-p", f"image_height:={HEIGHT}",
                  "-p", f"camera_rate_hz:={CAMERA_HZ}"]  # fmt: skip
        stream = "/forward_position_controller/commands"
        super().__init__(tmp, SIM, ["/camera/image_raw"], params, float_topic=stream)

    def sim_time(self) -> float:
        return stamp_to_sec(self.probe.records["/clock"][-1][2].clock)

    def joints_after(self, t_mono: float) -> list[tuple[float, np.ndarray]]:
        return super().joints_after(t_mono, JOINT_NAMES)

    def wait_converged(self, target: np.ndarray, t_mono: float, what: str) -> float:
        """Stamp of the first joint state after t_mono within 2e-3 rad of `target`."""
        found: list[float] = []

        def close() -> bool:
            for stamp, q in self.joints_after(t_mono):
                if np.max(np.abs(q - target)) < 2e-3:
                    found.append(stamp)
                    return True
            return False

        self.probe.wait_for(close, 30.0, what)
        return found[0]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory):
    with System(tmp_path_factory.mktemp("sim_node")) as sys_:
        yield sys_


def test_joint_states_camera_and_clock(system: System) -> None:
    t0 = time.monotonic()
    msgs = system.wait_joint_states(t0, 60, JOINT_NAMES)
    assert len(JOINT_NAMES) == 3
    # 100 Hz in simulation time, none lost (reliable): consecutive stamps exactly 10 ms apart.
    stamps_ns = np.array([m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in msgs])
    assert np.all(np.diff(stamps_ns) == 10_000_000), np.unique(np.diff(stamps_ns))
    images = system.probe.since("/camera/image_raw", t0)
    assert len(images) >= 5
    for img in images:
        assert (img.width, img.height, img.encoding, img.step) == (
            WIDTH,
            HEIGHT,
            "rgb8",
            3 * WIDTH,
        )
        assert len(img.data) == WIDTH * HEIGHT * 3
    frame = np.frombuffer(bytes(images[-1].data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert frame.std() > 10  # a rendered scene, not a blank image
    # Camera frames land on the first physics step at or after their due time (1/30 s grid).
    gaps = np.diff([stamp_to_sec(i.header.stamp) for i in images])
    assert np.all(np.abs(gaps - 1 / CAMERA_HZ) <= PHYSICS_DT + 1e-9), gaps
    clocks = [stamp_to_sec(c.clock) for c in system.probe.since("/clock", t0)]
    assert len(clocks) > 10 and np.all(np.diff(clocks) > 0)
    # Simulation time starts at 1 s (a zero stamp means "now" in ROS) and is on the physics grid.
    assert min(clocks) > 1.0
    assert np.all((stamps_ns - 10**9) % 2_000_000 == 0)


def test_trajectory_and_stream_commands_move_the_arm(system: System) -> None:
    start = system.sim_time()
    mid = HOME_QPOS + np.array([0.15, -0.1, 0.1])
    goal = HOME_QPOS + np.array([0.3, -0.2, 0.2])
    begin = start + 1.0  # header.stamp in simulation time: the trajectory starts then
    msg = JointTrajectory()
    msg.header.stamp = sec_to_stamp(begin)
    msg.joint_names = list(reversed(JOINT_NAMES))  # matched by name, not by order
    for tfs, q in ((0.5, mid), (1.0, goal)):
        point = JointTrajectoryPoint()
        point.positions = [float(v) for v in q[::-1]]
        point.time_from_start = sec_to_duration(tfs)
        msg.points.append(point)
    t_send = time.monotonic()
    system.traj_pub.publish(msg)
    reached = system.wait_converged(goal, t_send, "the arm to reach the trajectory's goal")
    # The last point is due at begin + 1.0: the arm cannot be there before it.
    assert reached > begin + 1.0
    late = [q for stamp, q in system.joints_after(t_send) if begin + 0.9 <= stamp <= begin + 1.0]
    assert late and np.max(np.abs(late[-1] - goal)) > 0.01

    # Stream mode (forward_position_controller): the newest command wins at once.
    target = HOME_QPOS + np.array([-0.2, 0.1, -0.15])
    t_send = time.monotonic()
    system.float_pub.publish(Float64MultiArray(data=[float(v) for v in target]))
    system.wait_converged(target, t_send, "the arm to reach the stream command")


def _image_at(system: System, stamp: float, t_mono: float) -> np.ndarray:
    found: list[Image] = []

    def arrived() -> bool:
        found[:] = [
            m
            for m in system.probe.since("/camera/image_raw", t_mono)
            if abs(stamp_to_sec(m.header.stamp) - stamp) < 1e-9
        ]
        return bool(found)

    system.probe.wait_for(arrived, 20.0, f"the image stamped {stamp}")
    return np.frombuffer(bytes(found[0].data), np.uint8).reshape(HEIGHT, WIDTH, 3)


def _reset(system: System) -> tuple[dict, np.ndarray]:
    t_mono = time.monotonic()
    resp = system.probe.trigger(f"/{SIM}/reset")
    assert resp.success, resp.message
    info = json.loads(resp.message)
    return info, _image_at(system, info["episode_start"], t_mono)


def test_seeded_reset_gives_deterministic_initial_image(system: System) -> None:
    system.probe.set_parameter(SIM, "seed", 11)
    first, image_a = _reset(system)
    second, image_b = _reset(system)  # the seed parameter was incremented by the reset
    system.probe.set_parameter(SIM, "seed", 11)
    third, image_c = _reset(system)
    assert (first["episode_seed"], second["episode_seed"], third["episode_seed"]) == (11, 12, 11)
    assert first["episode_start"] < second["episode_start"] < third["episode_start"]
    assert np.array_equal(image_a, image_c)
    assert np.count_nonzero(np.any(image_a != image_b, axis=2)) > 20  # another layout
    # Every episode starts at home: the joint state stamped at the reset is exactly HOME_QPOS.
    at_reset: list[np.ndarray] = []

    def home_seen() -> bool:
        start = third["episode_start"]
        at_reset[:] = [q for stamp, q in system.joints_after(0.0) if abs(stamp - start) < 1e-9]
        return bool(at_reset)

    system.probe.wait_for(home_seen, 20.0, "the joint state stamped at the reset")
    np.testing.assert_allclose(at_reset[0], HOME_QPOS, atol=1e-12)


def test_report_and_pause(system: System) -> None:
    report = json.loads(system.probe.trigger(f"/{SIM}/report").message)
    assert set(report) >= {"success", "collided", "done", "time", "episode_seed", "sim_time"}
    assert isinstance(report["episode_seed"], int) and report["done"] is False
    assert report["success"] is False and report["collided"] is False
    assert 0 <= report["time"] <= report["sim_time"]
    # the smoothness of the executed targets so far (eval/smoothness.py), one sample per 10 ms
    assert report["motion_samples"] > 0 and report["chunk_boundaries"] == 0
    assert system.probe.trigger(f"/{SIM}/pause").success
    paused = [json.loads(system.probe.trigger(f"/{SIM}/report").message) for _ in range(2)]
    time.sleep(0.3)
    paused.append(json.loads(system.probe.trigger(f"/{SIM}/report").message))
    assert all(r["paused"] for r in paused)
    assert len({r["sim_time"] for r in paused}) == 1
    assert system.probe.trigger(f"/{SIM}/unpause").success
    t0 = time.monotonic()
    system.probe.wait_for(
        lambda: len(system.probe.since("/joint_states", t0)) >= 3, 20.0, "joint states again"
    )
    later = json.loads(system.probe.trigger(f"/{SIM}/report").message)
    assert later["sim_time"] > paused[-1]["sim_time"] and not later["paused"]
