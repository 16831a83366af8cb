"""What policy_node reports on /diagnostics and `~/status`: the controller's values plus the
lifecycle state, command topics nobody subscribes to, and camera topics whose publishers send
another message type than the node subscribes with. A base class of `PolicyNode`
(ros/policy_node.py), which sets the attributes used here."""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from .conversions import diagnostic_status

UNHEARD_S = 2.0  # active without a subscriber on a command topic this long: WARN


class PolicyNodeDiagnostics:
    """`diagnostics_values` and the 1 Hz `/diagnostics` publication."""

    def diagnostics_values(self) -> tuple[str, str, dict[str, object]]:
        """(state, reason, values): the controller's, plus the lifecycle state."""
        controller, lifecycle = self.controller, self.lifecycle_state
        if controller is None:
            reason = f"configure failed: {self.last_error}" if self.last_error else ""
            values: dict[str, object] = {"state": lifecycle, "hold_reason": reason}
            state = lifecycle
        else:
            state, reason, values = controller.diagnostics_values()
            unheard = self._unheard_topics()
            if unheard and not reason:
                reason = (
                    f"nobody subscribes to {', '.join(unheard)} (for {UNHEARD_S:.0f} s or "
                    "more): is each controller running, and is output_topics its command "
                    "topic?"
                )
            values["output_subscribers"] = {
                g.topic: pub.get_subscription_count()
                for pubs in self._group_pubs.values()
                for g, pub, _ in pubs
            }
        values["lifecycle"] = lifecycle
        values["last_error"] = self.last_error
        values["last_transition_error"] = self.last_transition_error
        return state, reason, values

    def _unheard_topics(self) -> list[str]:
        """Command topics the active node has been publishing to without a subscriber for
        UNHEARD_S or more (a wrong topic would otherwise look like a healthy node)."""
        now = time.monotonic()
        out = []
        active = self.lifecycle_state == "active"
        for pubs in self._group_pubs.values():
            for group, pub, _ in pubs:
                if not active or pub.get_subscription_count() > 0:
                    self._unheard_since.pop(group.topic, None)
                    continue
                since = self._unheard_since.setdefault(group.topic, now)
                if now - since >= UNHEARD_S:
                    out.append(group.topic)
        return out

    def _check_camera_types(self) -> None:
        """A publisher of another message type on a camera topic never reaches the node (DDS
        matches by type): WARN once naming the topic and both types, and say it in the hold
        reason while no image arrived."""
        s, controller = self.settings, self.controller
        if s is None or controller is None:
            return
        for topic, want in zip(s.camera_topics, s.camera_types, strict=True):
            try:
                infos = self.get_publishers_info_by_topic(topic)
            except Exception:  # a shutting-down context: nothing to check
                return
            others = sorted({i.topic_type for i in infos} - {want})
            if not others:
                controller.note_input(topic, None)
                continue
            source = (
                "recorded in the checkpoint"
                if s.camera_types_recorded
                else ("taken from the topic name (the checkpoint does not record it)")
            )
            text = (
                f"camera topic {topic} has a publisher of {', '.join(others)} but the node "
                f"subscribes with {want} ({source}); those messages never arrive. Publish "
                f"{want} there, or remap camera_topics to a topic of that type"
            )
            controller.note_input(topic, text)
            if (topic, tuple(others)) not in self._type_warned:
                self._type_warned.add((topic, tuple(others)))
                self.get_logger().warning(text)

    def _publish_diagnostics(self) -> None:
        self._check_camera_types()
        state, reason, values = self.diagnostics_values()
        if reason.startswith("nobody subscribes"):
            self.get_logger().warning(reason, throttle_duration_sec=30.0)
        # WARN: holding, a failed configure, or active with a reason (an overrun)
        level = DiagnosticStatus.WARN if state == "holding" or reason else DiagnosticStatus.OK
        msg = DiagnosticArray()
        msg.header.stamp = self._clock.now().to_msg()
        msg.status = [
            diagnostic_status(
                f"{self.get_name()}: policy",
                level,
                f"{state}: {reason}" if reason else state,
                values,
                hardware_id=self.policy_info.device if self.policy_info else "",
            )
        ]
        self._diag_pub.publish(msg)
