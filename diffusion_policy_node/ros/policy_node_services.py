"""policy_node's Trigger services (`~/start`, `~/stop`, `~/reset`, `~/status`): aliases of
its lifecycle transitions, and the diagnostics values as JSON. A base class of `PolicyNode`
(ros/policy_node.py), which creates the services and sets the attributes used here."""

from __future__ import annotations

import json

from rclpy.lifecycle import TransitionCallbackReturn
from std_srvs.srv import Trigger


class PolicyNodeServices:
    """The services' callbacks; see the module docstring."""

    def _transition(self, name: str) -> bool:
        """Run a lifecycle transition from an alias service; True on SUCCESS."""
        trigger = {"activate": self.trigger_activate, "deactivate": self.trigger_deactivate}
        return trigger[name]() == TransitionCallbackReturn.SUCCESS

    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """Alias of activate (from inactive); when active, the timing statistics restart."""
        state = self.lifecycle_state
        if state == "inactive":
            resp.success = self._transition("activate")
            resp.message = "started" if resp.success else "activate failed"
        elif state == "active":
            resp.success, resp.message = True, self.controller.start()
        else:
            resp.success, resp.message = False, f"cannot start: the node is {state}"
        self.get_logger().info(f"~/start: {resp.message}")
        return resp

    def _srv_stop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """Alias of deactivate (from active)."""
        if self.lifecycle_state == "active":
            resp.success = self._transition("deactivate")
            resp.message = "stopped" if resp.success else "deactivate failed"
        else:
            resp.success, resp.message = True, "already stopped"
        self.get_logger().info(f"~/stop: {resp.message}")
        return resp

    def _srv_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """Deactivate, reset history, schedule and policy, activate again (a new episode); in
        inactive only the reset."""
        state = self.lifecycle_state
        if state not in ("active", "inactive"):
            resp.success, resp.message = False, f"cannot reset: the node is {state}"
            return resp
        if state == "active":
            self._transition("deactivate")
        self.controller.reset(self.now_s())
        resp.success = state == "inactive" or self._transition("activate")
        resp.message = "history, schedule and policy reset"
        self.get_logger().info(f"~/reset: {resp.message}")
        return resp

    def _srv_status(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """The /diagnostics values as one JSON object (for scripts such as dp-eval)."""
        _, _, values = self.diagnostics_values()
        resp.success, resp.message = True, json.dumps(values)
        return resp
