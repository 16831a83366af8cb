"""Lifecycle transitions that are invalid for the current state fail with a reason, never raise.

rclpy's `LifecycleNode` hands every `~/change_state` request (and every `trigger_*` call) to
rcl's state machine, which raises `RCLError: Transition is not registered` for a transition the
current state does not have (activate while unconfigured, e.g. after a failed configure;
deactivate while inactive; anything after shutdown; ros2/rclpy#1209, still so in the Jazzy
wheels). Raised in a service callback, that error ends the executor's spin and the node with
it, so a lifecycle manager that retries takes the node down.

`GuardedTransitions` (a mixin placed before `LifecycleNode`) checks each request against the
state machine's available transitions first: an invalid one is refused (the service answers
`success: false`, `trigger_*` returns FAILURE), logged as a WARN with the reason, and kept in
`last_transition_error` (the node reports it in ~/status). Checks and transitions run under one
lock, so a request that arrives while another transition runs is judged on the state it leaves.
"""

from __future__ import annotations

import threading
from typing import Any

from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.lifecycle import TransitionCallbackReturn

TRANSITION_NAMES: dict[int, str] = {
    int(value): name[len("TRANSITION_") :].lower()
    for name, value in vars(Transition).items()
    if name.startswith("TRANSITION_") and isinstance(value, int)
}
# The transitions a client may ask for (lifecycle_msgs/Transition), by primary state.
SHUTDOWN_OF = {
    "unconfigured": Transition.TRANSITION_UNCONFIGURED_SHUTDOWN,
    "inactive": Transition.TRANSITION_INACTIVE_SHUTDOWN,
    "active": Transition.TRANSITION_ACTIVE_SHUTDOWN,
}


def transition_name(transition_id: int) -> str:
    return f"{TRANSITION_NAMES.get(transition_id, 'unknown')} (id {transition_id})"


class GuardedTransitions:
    """Mixin for a `LifecycleNode`: see the module docstring. Call `_guard_transitions()` at the
    end of `__init__`."""

    last_transition_error: str = ""

    def _guard_transitions(self) -> None:
        self._transition_lock = threading.RLock()
        self.last_transition_error = ""
        service = getattr(self, "_service_change_state", None)
        if service is not None:  # rclpy's handler runs after the check
            self._unguarded_change_state = service.callback
            service.callback = self._on_change_state_guarded

    def transition_refusal(self, transition_id: int | None, asked: str = "") -> str | None:
        """Why `transition_id` cannot run in the current state (None: it can). `asked` names
        the request when it came as a label that matched no transition."""
        state = self._state_machine.current_state[1]  # type: ignore[attr-defined]
        available = {int(t[0]): t[1] for t in self._state_machine.available_transitions}  # type: ignore[attr-defined]
        if transition_id is not None and transition_id in available:
            return None
        what = asked or transition_name(int(transition_id))
        valid = [f"{label} (id {tid})" for tid, label in available.items()] or ["none"]
        return (
            f"lifecycle transition {what} is not valid in state {state}; valid there: "
            f"{', '.join(valid)}"
        )

    def _refuse(self, reason: str) -> TransitionCallbackReturn:
        self.last_transition_error = reason
        self.get_logger().warning(reason)  # type: ignore[attr-defined]
        return TransitionCallbackReturn.FAILURE

    def _guarded(self, transition_id: int, run: Any) -> TransitionCallbackReturn:
        with self._transition_lock:
            reason = self.transition_refusal(transition_id)
            if reason is not None:
                return self._refuse(reason)
            self.last_transition_error = ""
            return run()

    def _on_change_state_guarded(
        self, req: ChangeState.Request, resp: ChangeState.Response
    ) -> ChangeState.Response:
        with self._transition_lock:
            transition_id: int | None = int(req.transition.id)
            asked = ""
            if req.transition.label:
                asked = f"{req.transition.label!r}"
                matches = [
                    int(t[0])
                    for t in self._state_machine.available_transitions  # type: ignore[attr-defined]
                    if t[1] == req.transition.label
                ]
                transition_id = matches[0] if matches else None
            reason = self.transition_refusal(transition_id, asked)
            if reason is not None:
                self._refuse(reason)
                resp.success = False
                return resp
            self.last_transition_error = ""
            return self._unguarded_change_state(req, resp)

    # The direct calls (autostart, ~/start, ~/stop, ~/reset, tests) go through the same check.
    def trigger_configure(self) -> TransitionCallbackReturn:
        return self._guarded(Transition.TRANSITION_CONFIGURE, super().trigger_configure)  # type: ignore[misc]

    def trigger_cleanup(self) -> TransitionCallbackReturn:
        return self._guarded(Transition.TRANSITION_CLEANUP, super().trigger_cleanup)  # type: ignore[misc]

    def trigger_activate(self) -> TransitionCallbackReturn:
        return self._guarded(Transition.TRANSITION_ACTIVATE, super().trigger_activate)  # type: ignore[misc]

    def trigger_deactivate(self) -> TransitionCallbackReturn:
        return self._guarded(Transition.TRANSITION_DEACTIVATE, super().trigger_deactivate)  # type: ignore[misc]

    def trigger_shutdown(self) -> TransitionCallbackReturn:
        state = self._state_machine.current_state[1]  # type: ignore[attr-defined]
        transition_id = SHUTDOWN_OF.get(state, Transition.TRANSITION_ACTIVE_SHUTDOWN)
        return self._guarded(transition_id, super().trigger_shutdown)  # type: ignore[misc]
