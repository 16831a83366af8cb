"""The control thread of `policy_node`: ticks on the node clock at `anchor + k*dt`.

It sleeps until the next grid time of the ROS clock (sim time under `use_sim_time`, where it is
woken by every /clock jump), so no subscription, service or executor overhead can delay it. On
the wall clock it sleeps until `spin_lead_ms` before the tick and busy-waits the rest, so it is
already on a CPU at the tick. An overrun skips grid points, never bunches ticks; a clock that
jumps back (a simulation restart) starts a new grid and a new episode.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from rclpy.clock import Clock, ClockChange, JumpThreshold
from rclpy.duration import Duration


class ControlLoop:
    """Calls `tick(ideal, t_start, skipped)` once per grid point of `clock`, on its own thread;
    `restart(now)` when the clock jumped back. `start()` / `stop()`."""

    def __init__(
        self,
        clock: Clock,
        dt: float,
        tick: Callable[[float, float, int], None],
        restart: Callable[[float], None],
        logger: Any,
        spin_lead_ms: float = 1.0,
        priority: int = 0,
    ) -> None:
        self.clock = clock
        self.dt = float(dt)
        self._tick = tick
        self._restart = restart
        self._logger = logger
        self._lead = spin_lead_ms * 1e-3
        self._priority = priority
        self._running = False
        self._wake = threading.Condition()
        self._jumped_back = False
        self._jump_handle: Any = None
        self._thread: threading.Thread | None = None

    def now_s(self) -> float:
        return self.clock.now().nanoseconds * 1e-9

    def start(self) -> None:
        self._running = True
        self._jump_handle = self.clock.create_jump_callback(
            JumpThreshold(
                min_forward=Duration(nanoseconds=1),
                min_backward=Duration(nanoseconds=-1),
                on_clock_change=True,
            ),
            post_callback=self._on_time_jump,
        )
        self._thread = threading.Thread(target=self._run, name="dp-control", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop ticking (the tick in progress finishes); bounded wait."""
        self._running = False
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._jump_handle is not None:
            self._jump_handle.unregister()
            self._jump_handle = None

    def _on_time_jump(self, jump: Any) -> None:
        """Clock jump callback (every /clock update under sim time, and clock changes)."""
        with self._wake:
            if jump.delta.nanoseconds < 0 or jump.clock_change in (
                ClockChange.ROS_TIME_ACTIVATED,
                ClockChange.ROS_TIME_DEACTIVATED,
            ):
                self._jumped_back = True
            self._wake.notify_all()

    def _wait_until(self, target: float) -> bool:
        """Sleep until the clock reaches `target`; False when the clock jumped back (or its
        source changed) or the loop is stopping."""
        while self._running:
            with self._wake:
                if self._jumped_back:
                    self._jumped_back = False
                    return False
                remaining = target - self.now_s()
                if remaining <= 0:
                    return True
                if self.clock.ros_time_is_active:
                    # Sim time advances only with /clock messages, which notify us; the real-time
                    # timeout only guards against a missed notification.
                    self._wake.wait(0.1)
                    continue
                if remaining > self._lead:
                    self._wake.wait(remaining - self._lead)
                    continue
            # The last `lead` seconds: busy-wait (outside the lock), so that the thread is
            # already on a CPU at the tick instead of waiting to be scheduled after a wake-up.
            end = time.perf_counter() + remaining
            while time.perf_counter() < end and self._running:
                pass
        return False

    def _run(self) -> None:
        self._set_priority()
        dt = self.dt
        while self._running and self.clock.ros_time_is_active and self.now_s() == 0.0:
            with self._wake:  # sim time: wait for the first /clock message
                self._wake.wait(0.1)
        anchor = self.now_s()
        k = 0
        while self._running:
            k += 1
            ideal = anchor + k * dt
            if not self._wait_until(ideal):
                if not self._running:
                    break
                anchor, k = self.now_s(), 0  # clock jumped back (sim restart): new grid
                self._logger.warning("node clock jumped back: restarting the episode")
                self._restart(anchor)
                continue
            t_start = self.now_s()
            skipped = int((t_start - ideal) / dt + 1e-9)
            if self.clock.ros_time_is_active and skipped * dt > 1.0:
                anchor, k, ideal, skipped = t_start - dt, 1, t_start, 0  # sim time leapt
            k += skipped
            ideal += skipped * dt
            self._tick(ideal, t_start, skipped)

    def _set_priority(self) -> None:
        if self._priority <= 0:
            return
        try:
            os.sched_setscheduler(
                threading.get_native_id(), os.SCHED_FIFO, os.sched_param(self._priority)
            )
        except (OSError, AttributeError) as exc:
            self._logger.warning(
                f"control_priority {self._priority}: cannot use SCHED_FIFO ({exc}); running "
                "with normal scheduling (grant rtprio, e.g. in /etc/security/limits.conf)"
            )
