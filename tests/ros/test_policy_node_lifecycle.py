"""policy_node as a managed node: the standard lifecycle_msgs services, driven from the test's
process, over DDS (fake_sensors -> policy_node with autostart:=false -> the test's probe)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from trajectory_msgs.msg import JointTrajectory

from .policy_node_harness import DT, NO_URDF, NodeProcess, Probe, make_tiny_checkpoint

pytestmark = pytest.mark.ros

NODE, TOPIC = "pn_managed", "/test/managed/joint_trajectory"
CHUNK_S = 8 * DT  # n_action_steps x dt of the tiny checkpoint


def _change(probe: Probe, node: str, transition: int) -> bool:
    req = ChangeState.Request()
    req.transition.id = transition
    return probe.call(ChangeState, f"/{node}/change_state", req, timeout=60.0).success


def _state(probe: Probe, node: str) -> str:
    return probe.call(GetState, f"/{node}/get_state", GetState.Request()).current_state.label


def _status(probe: Probe, node: str) -> dict:
    return json.loads(probe.trigger(f"/{node}/status").message)


def _policy_node(name: str, checkpoint: Path, log: Path, *extra: str) -> NodeProcess:
    return NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        [
            "-r", f"__node:={name}", "-p", f"checkpoint:={checkpoint}", *NO_URDF,
            "-p", "autostart:=false", "-p", "torch_threads:=1", "-p", "warmup_runs:=1",
            "-p", "max_obs_age:=0.8", "-p", f"output_topic:={TOPIC}", *extra,
        ],
        log,
    )  # fmt: skip


def _slow_warm_up(name: str, checkpoint: Path, log: Path) -> NodeProcess:
    """policy_node with autostart (the default) whose configure warms up for 20 s."""
    return NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        [
            "-r", f"__node:={name}", "-p", f"checkpoint:={checkpoint}", *NO_URDF,
            "-p", "warmup_runs:=1", "-p", "inference_delay_ms:=20000",
        ],
        log,
    )  # fmt: skip


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, ros_domain_id: int):
    tmp = tmp_path_factory.mktemp("lifecycle")
    ckpt = make_tiny_checkpoint(tmp / "ckpt")
    probe = Probe("lifecycle_test_probe")
    probe.subscribe(TOPIC, JointTrajectory)
    sensors = NodeProcess(
        "diffusion_policy_node.ros.testing.fake_sensors", ["-p", "rate_hz:=30.0"], tmp / "fs.log"
    )
    node = _policy_node(NODE, ckpt, tmp / "node.log")
    try:
        probe.wait_for(lambda: _services_up(probe), 60, "the lifecycle services")
        yield probe, node, ckpt, tmp
    finally:
        for p in (node, sensors):
            p.stop(signal.SIGINT)
        probe.close()


def _services_up(probe: Probe) -> bool:
    try:
        return _state(probe, NODE) != ""
    except TimeoutError:
        return False


def test_transitions_gate_what_is_published(system) -> None:
    probe, node, _, _ = system
    assert _state(probe, NODE) == "unconfigured"
    assert _status(probe, NODE)["lifecycle"] == "unconfigured"
    t0 = time.monotonic()
    time.sleep(1.0)
    assert probe.since(TOPIC, t0) == []  # unconfigured: nothing
    assert _change(probe, NODE, Transition.TRANSITION_CONFIGURE)
    assert _state(probe, NODE) == "inactive"
    status = _status(probe, NODE)
    assert status["lifecycle"] == "inactive" and status["state"] == "stopped"
    t1 = time.monotonic()
    time.sleep(1.5)  # configured, inputs flowing, the worker warm: still nothing
    assert probe.since(TOPIC, t1) == []
    assert _change(probe, NODE, Transition.TRANSITION_ACTIVATE)
    assert _state(probe, NODE) == "active"
    t2 = time.monotonic()
    probe.wait_for(lambda: any(m.points for m in probe.since(TOPIC, t2)), 10, "trajectories")
    assert _status(probe, NODE)["state"] == "active"

    assert _change(probe, NODE, Transition.TRANSITION_DEACTIVATE)
    t3 = time.monotonic()
    assert _state(probe, NODE) == "inactive"
    time.sleep(1.5)
    after = probe.since(TOPIC, t3 - 0.2)
    # the hold: at most the one empty trajectory sent on deactivate, no plan after it
    assert all(not m.points for m in probe.since(TOPIC, t3 + 0.3)), "published while inactive"
    assert sum(1 for m in after if not m.points) <= 1

    assert _change(probe, NODE, Transition.TRANSITION_ACTIVATE)  # the worker is still warm
    t4 = time.monotonic()
    probe.wait_for(lambda: any(m.points for m in probe.since(TOPIC, t4)), 10, "resume")
    first = next(t for t, _, m in probe.timed_since(TOPIC, t4) if m.points)
    assert first - t4 < CHUNK_S + 0.5, first - t4  # within one chunk (+ DDS and start-up slack)

    assert _change(probe, NODE, Transition.TRANSITION_DEACTIVATE)
    children = node.children()
    assert _change(probe, NODE, Transition.TRANSITION_CLEANUP)
    assert _state(probe, NODE) == "unconfigured"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    alive = [p for p in children if Path(f"/proc/{p}/cmdline").exists()]
    assert not [
        p for p in alive if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()
    ]
    # configure again after cleanup
    assert _change(probe, NODE, Transition.TRANSITION_CONFIGURE)
    assert _state(probe, NODE) == "inactive"
    assert node.alive()


def test_a_bad_checkpoint_fails_configure_with_the_reason(system, tmp_path: Path) -> None:
    probe, _, ckpt, tmp = system
    name = "pn_bad_checkpoint"
    missing = tmp / "no_such_checkpoint"
    bad = _policy_node(name, missing, tmp_path / "bad.log")
    try:
        probe.wait_for(lambda: _status_or_none(probe, name) is not None, 60, "the bad node")
        t0 = time.monotonic()
        assert not _change(probe, name, Transition.TRANSITION_CONFIGURE)
        assert _state(probe, name) == "unconfigured"
        status = _status(probe, name)
        assert f"checkpoint folder {missing} does not exist" in status["last_error"]
        assert probe.since(TOPIC, t0) == [] or all(not m.points for m in probe.since(TOPIC, t0))
        # parameters can be fixed while unconfigured, then configure succeeds
        probe.set_parameter(name, "checkpoint", str(ckpt))
        assert _change(probe, name, Transition.TRANSITION_CONFIGURE)
        assert _state(probe, name) == "inactive" and _status(probe, name)["last_error"] == ""
        # ... and are refused once configured
        with pytest.raises(RuntimeError, match="at configure"):
            probe.set_parameter(name, "checkpoint", str(missing))
        # Ctrl-C in the inactive state exits cleanly
        assert bad.stop(signal.SIGINT) == 0
        assert "Traceback" not in bad.log()
    finally:
        bad.stop(signal.SIGKILL)


def _status_or_none(probe: Probe, name: str) -> dict | None:
    try:
        return _status(probe, name)
    except TimeoutError:
        return None


def test_ctrl_c_while_unconfigured_exits_cleanly(system, tmp_path: Path) -> None:
    probe, _, ckpt, _ = system
    name = "pn_unconfigured"
    proc = _policy_node(name, ckpt, tmp_path / "idle.log")
    probe.wait_for(lambda: _status_or_none(probe, name) is not None, 60, "the idle node")
    assert _state(probe, name) == "unconfigured"
    assert proc.stop(signal.SIGINT) == 0
    assert "Traceback" not in proc.log()


def test_ctrl_c_during_the_autostart_warm_up_exits_cleanly(system, tmp_path: Path) -> None:
    _, _, ckpt, _ = system
    proc = _slow_warm_up("pn_slow_warmup", ckpt, tmp_path / "slow.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "inference process" not in _kids(proc):
        time.sleep(0.1)  # the inference process is up: the warm-up is running
    children = proc.children()
    assert children, proc.log()
    time.sleep(1.0)
    assert proc.stop(signal.SIGINT, timeout=15) == 0, proc.log()
    assert "Traceback" not in proc.log()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{p}").exists() for p in children), "inference process left"


def test_sigterm_during_configure_is_a_clean_exit(system, tmp_path: Path) -> None:
    """`ros2 launch` (or a supervisor) stopping the node while it configures: exit 0, no
    ERROR "configure failed" and no FATAL "cannot start"."""
    _, _, ckpt, _ = system
    proc = _slow_warm_up("pn_sigterm_configure", ckpt, tmp_path / "sigterm.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not proc.children():
        time.sleep(0.1)  # the inference process is up: configure is warming up
    assert proc.children(), proc.log()
    time.sleep(1.0)
    assert proc.stop(signal.SIGTERM, timeout=15) == 0, proc.log()
    log = proc.log()
    assert "Traceback" not in log and "[FATAL]" not in log and "[ERROR]" not in log, log


def _kids(proc: NodeProcess) -> str:
    return "inference process" if proc.children() else ""


def test_commanding_a_topic_nobody_listens_to_is_a_warning(system, tmp_path: Path) -> None:
    probe, _, ckpt, _ = system
    name, topic = "pn_unheard", "/nobody/listens/joint_trajectory"
    proc = NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        ["-r", f"__node:={name}", "-p", f"checkpoint:={ckpt}", *NO_URDF,
         "-p", f"output_topic:={topic}",
         "-p", "warmup_runs:=1", "-p", "max_obs_age:=0.8"],
        tmp_path / "unheard.log",
    )  # fmt: skip
    try:

        def warned() -> bool:
            d = probe.latest_diag(name) if probe.diagnostics.get(f"{name}: policy") else {}
            return f"nobody subscribes to {topic}" in d.get("message", "")

        probe.wait_for(warned, 60, "the no-subscriber warning")
        assert probe.latest_diag(name)["output_subscribers"] == str({topic: 0})
        probe.subscribe(topic, JointTrajectory)  # a controller appears: the warning goes
        t0 = time.monotonic()
        probe.wait_for(
            lambda: "nobody" not in probe.diag(name, after=t0 + 1.0, timeout=10)["message"],
            20,
            "the warning to clear",
        )
        assert "nobody subscribes to" in proc.log()
    finally:
        proc.stop(signal.SIGINT)
