"""Invalid lifecycle requests to a real policy_node process over DDS: each is answered with
`success: false` (the reason in the log and in ~/status `last_transition_error`) and the node
keeps serving; before, the first one ended the process with `RCLError: Transition is not
registered` (rclpy issue #1209), so a lifecycle manager that retries took the node down."""

from __future__ import annotations

import json
import signal

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState

from .policy_node_harness import NO_URDF, NodeProcess, Probe, make_tiny_checkpoint

pytestmark = pytest.mark.ros

NODE = "pn_invalid_transitions"
T = Transition


def _change(probe: Probe, transition_id: int = 0, label: str = "") -> bool:
    req = ChangeState.Request()
    req.transition.id, req.transition.label = transition_id, label
    return probe.call(ChangeState, f"/{NODE}/change_state", req, timeout=60.0).success


def _state(probe: Probe) -> str:
    return probe.call(GetState, f"/{NODE}/get_state", GetState.Request()).current_state.label


def _reason(probe: Probe) -> str:
    return json.loads(probe.trigger(f"/{NODE}/status").message)["last_transition_error"]


def test_invalid_requests_fail_with_a_reason_and_the_process_lives(tmp_path, ros_domain_id):
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    probe = Probe("invalid_transitions_probe")
    node = NodeProcess(
        "diffusion_policy_node.ros.policy_node",
        [
            "-r", f"__node:={NODE}", "-p", "checkpoint:=/no/such/checkpoint", *NO_URDF,
            "-p", "autostart:=false", "-p", "torch_threads:=1", "-p", "warmup_runs:=1",
            "-p", "inference_process:=false",
        ],
        tmp_path / "node.log",
    )  # fmt: skip
    try:
        probe.wait_for(lambda: _up(probe), 60, "the lifecycle services")
        # a failed configure, then what a retrying manager sends
        assert _change(probe, T.TRANSITION_CONFIGURE) is False
        assert _state(probe) == "unconfigured"
        for tid in (T.TRANSITION_ACTIVATE, T.TRANSITION_DEACTIVATE, T.TRANSITION_CLEANUP, 7):
            assert _change(probe, tid) is False, tid
            assert node.alive(), node.log()
        assert "active_shutdown (id 7) is not valid in state unconfigured" in _reason(probe)
        assert _change(probe, label="activate") is False
        probe.set_parameter(NODE, "checkpoint", str(ckpt))
        assert _change(probe, label="configure") and _state(probe) == "inactive"
        for tid in (T.TRANSITION_CONFIGURE, T.TRANSITION_DEACTIVATE, 5, 7, 10, 99):
            assert _change(probe, tid) is False, tid
        assert "callback_error (id 99) is not valid in state inactive" in _reason(probe)
        assert _change(probe, T.TRANSITION_ACTIVATE) and _state(probe) == "active"
        for tid in (T.TRANSITION_ACTIVATE, T.TRANSITION_CLEANUP, T.TRANSITION_CONFIGURE, 6):
            assert _change(probe, tid) is False, tid
        assert _change(probe, T.TRANSITION_DEACTIVATE) and _state(probe) == "inactive"
        assert _change(probe, T.TRANSITION_INACTIVE_SHUTDOWN) and _state(probe) == "finalized"
        for tid in (T.TRANSITION_CONFIGURE, T.TRANSITION_ACTIVATE, 5, 6, 7):
            assert _change(probe, tid) is False, tid
        assert _state(probe) == "finalized"
        assert "is not valid in state finalized; valid there: none" in _reason(probe)
        assert node.alive()
        log = node.log()
        assert "Traceback" not in log and "RCLError" not in log, log
        assert "[WARN]" in log and "is not valid in state unconfigured" in log
    finally:
        code = node.stop(signal.SIGINT)
        probe.close()
    assert code == 0, node.log()


def _up(probe: Probe) -> bool:
    try:
        return _state(probe) != ""
    except TimeoutError:
        return False
