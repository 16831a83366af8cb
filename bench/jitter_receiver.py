"""Receiver side of bench/control_jitter.py: what a controller in another process sees.

An rclpy subscriber in its own process timestamps every command it receives (wall clock,
`time.time()`, the clock the policy node stamps trajectories with) and, on request, measures
them against ONE ideal grid `anchor + k*dt` that is never re-snapped:

  stream mode (Float64MultiArray per tick): the arrival time of each command;
  chunk mode (JointTrajectory per chunk): the time the executed point changes, as a
    JTC-like controller executes the plans: point j of a trajectory becomes current at
    stamp + time_from_start_j if its message arrived before that time; a newer message
    replaces the points from its arrival on. A slot no received plan covers in time is
    missed; a plan whose grid has shifted (re-snapped) shows as lateness.

The anchor is the earliest event minus its grid index, so lateness >= 0 is the delay behind the
best event of the window. A grid slot with no event is a missed tick. Served over stdin/stdout
with bench/_common.py's protocol: {"op": "start"} clears and starts the window, {"op": "stop"}
ends it and answers {"p50_ms", "p99_ms", "max_ms", "missed_ticks", "events", ...}.

    .venv/bin/python bench/jitter_receiver.py --topic /bench/commands --mode stream --rate 30
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

try:  # run as a script: bench/ is on sys.path
    from _common import executed_point_times, grid_lateness, serve
except ImportError:  # imported as bench.jitter_receiver
    from bench._common import executed_point_times, grid_lateness, serve


class Receiver:
    def __init__(self, topic: str, mode: str) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("jitter_receiver", context=self.context)
        self.lock = threading.Lock()
        self.recording = False
        self.arrivals: list[float] = []
        self.trajectories: list[tuple[float, np.ndarray]] = []
        if mode == "stream":
            self.node.create_subscription(Float64MultiArray, topic, self._on_stream, 100)
        else:
            self.node.create_subscription(JointTrajectory, topic, self._on_chunk, 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_stream(self, _msg: Float64MultiArray) -> None:
        now = time.time()
        with self.lock:
            if self.recording:
                self.arrivals.append(now)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = time.time()
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        times = np.array(
            [stamp + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        )
        with self.lock:
            if self.recording:
                self.arrivals.append(now)
                self.trajectories.append((now, times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--mode", choices=["stream", "chunk"], required=True)
    parser.add_argument("--rate", type=float, required=True)
    args = parser.parse_args()
    dt = 1.0 / args.rate
    rx = Receiver(args.topic, args.mode)

    def start() -> dict:
        with rx.lock:
            rx.arrivals.clear()
            rx.trajectories.clear()
            rx.recording = True
        return {"started": time.time()}

    def stop() -> dict:
        with rx.lock:
            rx.recording = False
            arrivals = np.array(rx.arrivals)
            trajectories = list(rx.trajectories)
        if args.mode == "stream":
            events = arrivals
        else:
            events = executed_point_times(trajectories)
            end = arrivals[-1] if arrivals.size else 0.0
            events = events[events <= end]  # points still in the future are not executed yet
        lateness, missed = grid_lateness(np.sort(events), dt)
        reply: dict = {"events": int(lateness.size), "messages": int(arrivals.size)}
        reply["missed_ticks"] = missed
        if lateness.size:
            ms = lateness * 1e3
            reply.update(
                p50_ms=round(float(np.percentile(ms, 50)), 3),
                p99_ms=round(float(np.percentile(ms, 99)), 3),
                max_ms=round(float(ms.max()), 3),
            )
        if args.mode == "chunk" and trajectories:
            # How far ahead of its first point's time a plan arrives (negative: late).
            lead = [float(times[0] - arrival) for arrival, times in trajectories if times.size]
            reply["plan_lead_p50_ms"] = round(float(np.median(lead)) * 1e3, 2)
            reply["plan_lead_min_ms"] = round(float(np.min(lead)) * 1e3, 2)
            # Points whose time had passed when their message arrived: published in the past.
            reply["past_points"] = int(sum(int((t < a).sum()) for a, t in trajectories))
        return reply

    try:
        serve({"receiver": args.mode, "topic": args.topic}, {"start": start, "stop": stop})
    finally:
        rx.executor.shutdown(timeout_sec=2.0)
        rx.spinner.join(2.0)  # a spin thread alive at exit ends in std::terminate
        rx.node.destroy_node()
        rclpy.try_shutdown(context=rx.context)


if __name__ == "__main__":
    main()
