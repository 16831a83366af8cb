"""Every (primary state, transition) pair of policy_node's lifecycle, in process with the real
rcl state machine: a pair the state does not have fails with a reason (it used to raise
`RCLError: Transition is not registered` from the ~/change_state handler, ending the node's
spin), a valid pair does what lifecycle_msgs says. Requests go through the very callback the
executor calls for ~/change_state, by id and by label, and through the trigger_* methods.
The DDS test with a real process is test_lifecycle_invalid_dds.py."""

from __future__ import annotations

import pytest
import rclpy
import yaml
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from diffusion_policy_node.ros.lifecycle_guard import TRANSITION_NAMES
from diffusion_policy_node.ros.policy_node import PolicyNode

from .policy_node_harness import make_tiny_checkpoint

pytestmark = pytest.mark.ros

# Every transition id lifecycle_msgs/Transition defines (0..8, the callback results 10..62,
# 97..99), and every label a client may send (plus one nobody knows).
ALL_IDS = sorted(TRANSITION_NAMES)
LABELS = ["configure", "cleanup", "activate", "deactivate", "shutdown", "destroy", "bogus"]
VALID = {  # (state, transition id) -> state after
    ("unconfigured", Transition.TRANSITION_CONFIGURE): "inactive",
    ("unconfigured", Transition.TRANSITION_UNCONFIGURED_SHUTDOWN): "finalized",
    ("inactive", Transition.TRANSITION_CLEANUP): "unconfigured",
    ("inactive", Transition.TRANSITION_ACTIVATE): "active",
    ("inactive", Transition.TRANSITION_INACTIVE_SHUTDOWN): "finalized",
    ("active", Transition.TRANSITION_DEACTIVATE): "inactive",
    ("active", Transition.TRANSITION_ACTIVE_SHUTDOWN): "finalized",
}
VALID_LABELS = {
    "unconfigured": {"configure", "shutdown"},
    "inactive": {"cleanup", "activate", "shutdown"},
    "active": {"deactivate", "shutdown"},
    "finalized": set(),
}
TRIGGERS = ("configure", "cleanup", "activate", "deactivate", "shutdown")
VALID_TRIGGERS = VALID_LABELS
TESTED: set[tuple[str, str]] = set()  # (state, transition) pairs, for the closing check


@pytest.fixture(scope="module")
def make_node(tmp_path_factory: pytest.TempPathFactory):
    ckpt = make_tiny_checkpoint(tmp_path_factory.mktemp("pairs") / "ckpt")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[PolicyNode] = []

    def make(name: str) -> PolicyNode:
        node = PolicyNode(
            name,
            context=ctx,
            parameter_overrides=[
                rclpy.parameter.Parameter("checkpoint", value=str(ckpt)),
                rclpy.parameter.Parameter("autostart", value=False),
                rclpy.parameter.Parameter("robot_description_topic", value=""),
                rclpy.parameter.Parameter("inference_process", value=False),
                rclpy.parameter.Parameter("warmup_runs", value=1),
                rclpy.parameter.Parameter("torch_threads", value=1),
            ],
        )
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def _change(node: PolicyNode, transition_id: int = 0, label: str = "") -> bool:
    """The ~/change_state request as the executor delivers it."""
    req = ChangeState.Request()
    req.transition.id = transition_id
    req.transition.label = label
    callback = node._service_change_state.callback
    return callback(req, ChangeState.Response()).success


def _check_invalid_everything(node: PolicyNode) -> None:
    """Every invalid request in the node's current state fails with a reason, changes nothing."""
    state = node.lifecycle_state
    for tid in ALL_IDS:
        if (state, tid) in VALID:
            continue
        assert _change(node, tid) is False, (state, tid)
        assert node.lifecycle_state == state
        reason = node.last_transition_error
        assert f"{TRANSITION_NAMES[tid]} (id {tid}) is not valid in state {state}" in reason
        TESTED.add((state, f"id {tid}"))
    for label in LABELS:
        if label in VALID_LABELS[state]:
            continue
        assert _change(node, label=label) is False, (state, label)
        assert node.lifecycle_state == state
        assert f"'{label}' is not valid in state {state}" in node.last_transition_error
        TESTED.add((state, f"label {label}"))
    for name in TRIGGERS:
        if name in VALID_TRIGGERS[state]:
            continue
        assert getattr(node, f"trigger_{name}")() == TransitionCallbackReturn.FAILURE
        assert node.lifecycle_state == state and "is not valid" in node.last_transition_error
        TESTED.add((state, f"trigger_{name}"))


def _valid(node: PolicyNode, tid: int, how: str) -> None:
    before = node.lifecycle_state
    label = TRANSITION_NAMES[tid].split("_")[-1]
    if how == "id":
        assert _change(node, tid), node.last_error
    elif how == "label":
        assert _change(node, label=label), node.last_error
    else:
        assert getattr(node, f"trigger_{label}")() == TransitionCallbackReturn.SUCCESS
    assert node.lifecycle_state == VALID[(before, tid)]
    assert node.last_transition_error == ""
    TESTED.add((before, f"{how} {tid} (valid)"))


def test_every_pair_from_unconfigured_inactive_active(make_node) -> None:
    node = make_node("pairs_a")
    _check_invalid_everything(node)  # unconfigured
    _valid(node, Transition.TRANSITION_CONFIGURE, "id")
    _check_invalid_everything(node)  # inactive
    _valid(node, Transition.TRANSITION_ACTIVATE, "label")
    _check_invalid_everything(node)  # active
    _valid(node, Transition.TRANSITION_DEACTIVATE, "trigger")
    _valid(node, Transition.TRANSITION_CLEANUP, "id")
    _valid(node, Transition.TRANSITION_CONFIGURE, "trigger")
    _valid(node, Transition.TRANSITION_CLEANUP, "label")
    _valid(node, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN, "id")
    _check_invalid_everything(node)  # finalized


def test_shutdown_from_inactive_and_active_then_nothing_is_valid(make_node) -> None:
    node = make_node("pairs_b")
    _valid(node, Transition.TRANSITION_CONFIGURE, "label")
    _valid(node, Transition.TRANSITION_INACTIVE_SHUTDOWN, "trigger")
    _check_invalid_everything(node)
    node = make_node("pairs_c")
    _valid(node, Transition.TRANSITION_CONFIGURE, "trigger")
    _valid(node, Transition.TRANSITION_ACTIVATE, "id")
    _valid(node, Transition.TRANSITION_ACTIVE_SHUTDOWN, "id")


def test_activate_after_a_failed_configure_fails_with_a_reason(make_node) -> None:
    node = make_node("pairs_d")
    node.set_parameters([rclpy.parameter.Parameter("checkpoint", value="/no/such/ckpt")])
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert node.lifecycle_state == "unconfigured" and "/no/such/ckpt" in node.last_error
    assert _change(node, Transition.TRANSITION_ACTIVATE) is False
    assert "activate (id 3) is not valid in state unconfigured" in node.last_transition_error
    assert node.trigger_activate() == TransitionCallbackReturn.FAILURE
    status = node.diagnostics_values()[2]
    assert "is not valid" in status["last_transition_error"]


def test_every_pair_was_tested() -> None:
    states = ("unconfigured", "inactive", "active", "finalized")
    for state in states:
        for tid in ALL_IDS:
            if (state, tid) not in VALID:
                assert (state, f"id {tid}") in TESTED, (state, tid)
    for (state, tid), _after in VALID.items():
        assert any(k[0] == state and k[1].endswith(f" {tid} (valid)") for k in TESTED), (
            state,
            tid,
        )


def test_a_checkpoint_with_a_wrong_action_width_names_the_weight_shapes(
    make_node, tmp_path
) -> None:
    """config.yaml says 4 actions, the weights were trained for 3: configure fails naming the
    weight shapes (it used to say "set joint_names", which cannot fix it)."""
    ckpt = make_tiny_checkpoint(tmp_path / "ckpt")
    doc = yaml.safe_load((ckpt / "config.yaml").read_text())
    doc["policy"]["action_dim"] = 4
    (ckpt / "config.yaml").write_text(yaml.safe_dump(doc))
    node = make_node("pairs_width")
    node.set_parameters([rclpy.parameter.Parameter("checkpoint", value=str(ckpt))])
    assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert "the weights are for [3] action(s)" in node.last_error
    assert "'normalizer.safetensors:action_normalizer.min' [3]" in node.last_error
    assert "'model.safetensors:network.final_conv.1.weight' [3, " in node.last_error
    assert "action_dim=4" in node.last_error
    assert "set joint_names" not in node.last_error
