"""The input side of `Controller` (runtime/controller.py), called from subscription callbacks
on any thread: the newest camera message per topic and the joint states merged by name are kept
under the input lock, with cheap stamp checks; the control thread takes them (`_ingest`) at
each tick. A base class of `Controller`, whose `__init__` sets the attributes used here."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffusion_policy_node.joint_states import JointStateError

from .observation_history import STATE_INPUT


class ControllerInputs:
    """`offer_image`, `offer_joint_state`, `offer_state`, `reject_input`, `note_input`."""

    def offer_image(self, topic: str, raw: Any, stamp: float) -> bool:
        """Keep `raw` as the newest message of camera `topic` (decoded on the next tick);
        False when its stamp is in the future or older than the newest (counted, warned).
        With the streaming encoder on (`worker.streams_frames`) the frame is also decoded here,
        in the caller's thread (a subscription callback, never the control thread), and handed
        to the worker, which encodes it before the chunk request that will use it."""
        ok = self._offer(topic, raw, stamp)
        worker = self.worker
        if (
            ok
            and getattr(worker, "streams_frames", False)
            and topic in self.settings.camera_topics
        ):
            try:
                rgb = self._decode(topic, raw)
            except ValueError:
                return ok  # the tick's decode rejects it and counts it
            worker.offer_frame(self.settings.camera_topics.index(topic), rgb)
        return ok

    def offer_state(self, positions: np.ndarray, stamp: float) -> bool:
        """Keep the joint positions (D,), in `settings.joint_names` order, stamped `stamp`."""
        names = self.joints.joint_names
        return self.offer_joint_state(names, positions, stamp)

    def offer_joint_state(
        self, names: Any, positions: Any, stamp: float, where: str = "joint state"
    ) -> bool:
        """Merge one JointState's `names`/`positions` stamped `stamp` (any subset of the
        joints, any order, extra joints ignored). False when refused: a repeated joint name
        (one unthrottled WARN per joint), inconsistent lengths or NaN/inf in a wanted joint
        (counted in `bad_joint_states`, throttled WARN), a stamp in the future or older than
        the joints' newest (`bad_stamps`, `out_of_order`)."""
        now = self.clock()
        max_age = self.settings.params.max_obs_age
        if stamp > now + max_age:
            with self._input_lock:
                self.counters["bad_stamps"] += 1
            self._log(
                "warning",
                f"{STATE_INPUT}: message stamped {stamp - now:.3f} s in the future, ignored "
                "(clock mismatch? check use_sim_time and the publisher's clock)",
                True,
            )
            return False
        with self._input_lock:
            try:
                merged = self.joints.offer(names, positions, stamp, where)
            except JointStateError as exc:
                self.counters["bad_joint_states"] += 1
                self._rejected[STATE_INPUT] = str(exc)
                new = [j for j in exc.joints if j not in self._warned_duplicates]
                self._warned_duplicates.update(exc.joints if exc.kind == "duplicate" else ())
                error = exc
            else:
                error = None
                if merged.out_of_order:
                    self.counters["out_of_order"] += 1
                if merged.updated and self.joints.complete:
                    self._rejected.pop(STATE_INPUT, None)
                    t = self.joints.oldest_stamp()
                    self._last_input_stamp[STATE_INPUT] = t
                    self._new_inputs[STATE_INPUT] = (self.joints.positions(), t)
        if error is None:
            if merged.out_of_order:
                self._log(
                    "warning",
                    f"{STATE_INPUT}: joint(s) {list(merged.out_of_order)} stamped before the "
                    "newest of each, ignored",
                    True,
                )
            return bool(merged.updated)
        if error.kind == "duplicate":
            if new:  # once per joint: a driver that always repeats it would flood the log
                self._log("warning", f"joint state rejected: {error}", False)
        else:
            self._log("warning", f"joint state rejected: {error}", True)
        return False

    def reject_input(self, counter: str, text: str, name: str | None = None) -> None:
        """A callback rejected a message (`bad_images`, `bad_joint_states`) of input `name` (a
        camera topic): count and warn; the hold reason says it was received but rejected."""
        with self._input_lock:
            self.counters[counter] += 1
            if name is not None:
                self._rejected[name] = text
        self._log("warning", text, True)

    def note_input(self, name: str, text: str | None) -> None:
        """Why input `name` may never arrive (e.g. a publisher of another message type on the
        camera topic), told in the hold reason while nothing was received; None clears it."""
        with self._input_lock:
            if text is None:
                self._notes.pop(name, None)
            else:
                self._notes[name] = text

    def _offer(self, name: str, value: Any, stamp: float) -> bool:
        now = self.clock()
        max_age = self.settings.params.max_obs_age
        with self._input_lock:
            if stamp > now + max_age:
                self.counters["bad_stamps"] += 1
                why = (
                    f"{name}: message stamped {stamp - now:.3f} s in the future, ignored (clock "
                    "mismatch? check use_sim_time and the publisher's clock)"
                )
            elif stamp < self._last_input_stamp.get(name, -np.inf):
                self.counters["out_of_order"] += 1
                why = (
                    f"{name}: message stamped {self._last_input_stamp[name] - stamp:.3f} s "
                    "before the newest, ignored"
                )
            else:
                self._last_input_stamp[name] = stamp
                self._new_inputs[name] = (value, stamp)
                self._rejected.pop(name, None)
                return True
        self._log("warning", why, True)
        return False

    def _ingest(self) -> None:
        """Decode the newest raw image(s) and push the newest state into the history."""
        with self._input_lock:
            inputs, self._new_inputs = self._new_inputs, {}
        for name, (value, stamp) in inputs.items():
            if name == STATE_INPUT:
                ok = self.history.update_state(value.astype(np.float32), stamp)
                if ok:
                    self._measured = value  # observed joints; _Path.measured picks its own
            else:
                try:
                    rgb = self._decode(name, value)
                except ValueError as exc:
                    self.reject_input("bad_images", f"image rejected: {exc}", name)
                    continue
                ok = self.history.update_image(name, rgb, stamp)
            if not ok:
                with self._input_lock:
                    self.counters["out_of_order"] += 1
