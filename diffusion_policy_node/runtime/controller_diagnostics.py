"""What `Controller` (runtime/controller.py) reports: its state and reason, the safety
filter's clamp counts and the values of /diagnostics and ~/status. A base class of
`Controller`, whose `__init__` sets the attributes used here."""

from __future__ import annotations

import numpy as np

from .timing import TickTiming


class ControllerDiagnostics:
    """`state`, `path_joints`, `clamp_counts`, `diagnostics_values`."""

    def state(self) -> tuple[str, str]:
        """(state, reason): active | holding | stopped. An active controller whose schedule ran
        dry before the next chunk arrived reports the overrun as its reason (a warning)."""
        if not self.active:
            return "stopped", ""
        if self.holding:
            return "holding", self.hold_reason
        if self.overrun:
            return "active", "overrun: the next chunk is late, executing the rest of the horizon"
        return "active", ""

    def path_joints(self, kind: str) -> tuple[str, ...]:
        """The joints (columns) of the Commands of `kind` (TRAJECTORY/STREAM); () if none."""
        path = self.paths.get(kind)
        return path.joints if path is not None else ()

    def clamp_counts(self) -> dict[str, int]:
        """Safety filter counts: totals (commands changed), and per commanded joint."""
        paths = list(self.paths.values())
        out = {
            "position_clamps": sum(p.safety.position_clamp_count for p in paths),
            "velocity_clamps": sum(p.safety.velocity_clamp_count for p in paths),
            "nonfinite_commands": sum(p.safety.nonfinite_count for p in paths),
        }
        for p in paths:
            for i, joint in enumerate(p.joints):
                out[f"position_clamps[{joint}]"] = int(p.safety.position_clamps[i])
                out[f"velocity_clamps[{joint}]"] = int(p.safety.velocity_clamps[i])
        return out

    def diagnostics_values(self) -> tuple[str, str, dict[str, object]]:
        """(state, reason, values) for /diagnostics and ~/status. Only copies are taken under
        the lock (the tick waits for it); statistics are computed afterwards."""
        with self._lock:
            state, reason = self.state()
            overrun = self.overrun
            ages = self.history.ages(self.clock())
            with self._input_lock:
                counters = dict(self.counters)
            timing = self.timing.snapshot()
            obs_to_cmd = list(self.obs_to_cmd)
            clamps = self.clamp_counts()
        values: dict[str, object] = {
            "state": state,
            "hold_reason": reason if state == "holding" else "",
            "overrun": overrun,
        }
        lat = self.worker.latency_stats()
        values["inference_latency_p50_ms"] = None if lat.p50 is None else lat.p50 * 1e3
        values["inference_latency_p90_ms"] = None if lat.p90 is None else lat.p90 * 1e3
        values["inference_count"] = self.worker.completed_count
        values["inference_errors"] = self.worker.error_count
        values.update(TickTiming.summarize(timing))
        if obs_to_cmd:
            values["obs_to_cmd_p50_ms"] = float(np.percentile(obs_to_cmd, 50) * 1e3)
            values["obs_to_cmd_max_ms"] = float(np.max(obs_to_cmd) * 1e3)
        for name, age in ages.items():
            values[f"obs_age_ms[{name}]"] = None if age is None else age * 1e3
        values.update(counters)
        values.update(clamps)
        values["device"] = self.info.device
        values["precision"] = self.info.precision
        values["matmul_kernels"] = self.info.matmul_kernels
        values["output_mode"] = self.settings.output_mode
        values["control_rate_hz"] = self.settings.control_rate_hz
        return state, reason, values
