"""`policy_node`: runs a Diffusion Policy checkpoint in closed loop (design.md §4–§5).

    policy_node --ros-args -p checkpoint:=/path/to/ckpt [--params-file config/policy_node.yaml]

This file is the ROS wrapper only: it declares the parameters, subscribes to the cameras and the
joint state, converts messages, publishes commands and diagnostics, offers the services and runs
the control thread. What happens on each tick (staleness and hold, chunk merge, safety, what to
publish, when to start inference) is `runtime.controller.Controller`, which is ROS-free.

Threads and processes: the control loop runs on its own thread, sleeping until the next grid
time `anchor + k*dt` of the node clock (sim time under `use_sim_time`; woken by /clock jumps),
so no subscription, service or executor overhead can delay it; everything else (subscriptions,
services, diagnostics, /clock) is served by a single-threaded executor whose callbacks are
short. Inference runs in a child process by default (`inference_process`; its Python cannot
hold this process's GIL) or on a worker thread.

Subscription callbacks only keep the newest *raw* camera message (after cheap checks of
encoding and stamp order), so a 1920x1080 flood at 60 Hz costs one decode per tick; camera
subscriptions use BEST_EFFORT depth 1 so memory stays bounded. A wrong image *size* is resized
(the data pipeline resizes the same way); a wrong *encoding* is rejected (counted, throttled
warning). JointStates missing a joint or holding NaN are rejected. An unset (zero) header stamp
means the receive time.

Services `~/start`, `~/stop`, `~/reset` and `~/status` (std_srvs/Trigger; `~/status` answers
the diagnostics values as JSON); `/diagnostics` at 1 Hz on a steady timer (so it still reports
when sim time does not advance).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (
    QoSDurabilityPolicy,
    QoSHistoryPolicy,
    QoSProfile,
    QoSReliabilityPolicy,
)
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.policy.checkpoint import read_config
from diffusion_policy_node.runtime.controller import Command, Controller
from diffusion_policy_node.runtime.process_worker import start_worker
from diffusion_policy_node.runtime.settings import NodeSettings, resolve_settings

from .conversions import (
    JointStateSelector,
    check_image_msg,
    diagnostic_status,
    float64_array_msg,
    image_msg_to_rgb,
    is_zero_stamp,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_msg,
)
from .node_main import run_node
from .params import PARAMETERS, declare_and_read

SENSOR_QOS = QoSProfile(
    history=QoSHistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=QoSReliabilityPolicy.BEST_EFFORT,
    durability=QoSDurabilityPolicy.VOLATILE,
)
COMMAND_QOS = QoSProfile(depth=10)
DESCRIPTION = """Runs a Diffusion Policy checkpoint in closed loop: camera images and joint states
in, action chunks (JointTrajectory) or per-tick commands (Float64MultiArray) out, at the
checkpoint's control rate. Services ~/start ~/stop ~/reset ~/status; health on /diagnostics.

    policy_node --ros-args -p checkpoint:=/path/to/ckpt [--params-file config/policy_node.yaml]
"""
WARN_THROTTLE_S = 5.0


class PolicyNode(Node):
    """The closed-loop policy node; see the module docstring."""

    def __init__(self, node_name: str = "policy_node", **kwargs: object) -> None:
        super().__init__(node_name, **kwargs)
        self._clock = self.get_clock()
        params = declare_and_read(self)
        config, _ = read_config(params.checkpoint)  # clear CheckpointError, before loading
        self.settings: NodeSettings = resolve_settings(params, config)
        self._running = True
        self.worker, self.policy_info = start_worker(self.settings.inference, clock=self.now_s)
        try:
            self.controller = Controller(
                self.settings,
                self.policy_info,
                self.worker,
                clock=self.now_s,
                publish=self._publish_command,
                decode=self._decode_image,
                log=self._log,
                respawn=self._respawn_worker,
            )
            self._warm_up()
            self._wire()
        except BaseException:
            self.worker.close(timeout=2.0)
            raise
        self._start_control_thread()
        s = self.settings
        self.get_logger().info(
            f"policy_node ready: {params.checkpoint} on {self.policy_info.device} "
            f"({'process' if params.inference_process else 'thread'}), "
            f"{s.control_rate_hz:g} Hz, "
            f"{params.output_mode} mode -> {s.output_topic}, cameras {list(s.camera_topics)}, "
            f"joints {list(s.joint_names)}, {'active' if self.controller.active else 'stopped'}"
        )

    def _warm_up(self) -> None:
        warm = self.controller.warm_up()
        if warm is not None:
            self.get_logger().info(
                f"warm-up: {self.settings.inference.warmup_runs} inference(s) on "
                f"{self.policy_info.device}, last {warm.latency_s * 1e3:.1f} ms"
            )

    def _wire(self) -> None:
        """Subscriptions, publishers, services and the diagnostics timer."""
        s = self.settings
        for topic in s.camera_topics:
            msg_type = CompressedImage if topic.rstrip("/").endswith("/compressed") else Image
            self.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._on_image(msg, topic), SENSOR_QOS
            )
        self._selector = JointStateSelector(s.joint_names)
        self._state_where = f"joint state topic {s.params.joint_state_topic}"
        self.create_subscription(
            JointState, s.params.joint_state_topic, self._on_joint_state, SENSOR_QOS
        )
        msg_type = JointTrajectory if s.chunk_mode else Float64MultiArray
        self._cmd_pub = self.create_publisher(msg_type, s.output_topic, COMMAND_QOS)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for name, handler in (
            ("start", self._srv_start),
            ("stop", self._srv_stop),
            ("reset", self._srv_reset),
            ("status", self._srv_status),
        ):
            self.create_service(Trigger, f"~/{name}", handler)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, clock=self._steady)

    def _start_control_thread(self) -> None:
        """The control loop: its own thread on the node clock (see the module docstring)."""
        self._wake = threading.Condition()
        self._jumped_back = False
        self._jump_handle = self._clock.create_jump_callback(
            JumpThreshold(
                min_forward=Duration(nanoseconds=1),
                min_backward=Duration(nanoseconds=-1),
                on_clock_change=True,
            ),
            post_callback=self._on_time_jump,
        )
        self._control_thread = threading.Thread(
            target=self._control_loop, name="dp-control", daemon=True
        )
        self._control_thread.start()

    def _respawn_worker(self) -> None:
        """Replace a hung or dead inference worker on a thread of its own (the controller holds
        meanwhile): kill the old one, load and warm up a new one, hand it over."""
        old = self.worker

        def run() -> None:
            old.close(timeout=1.0)
            try:
                worker, _ = start_worker(self.settings.inference, clock=self.now_s)
                self.controller.warm_up(worker)
            except Exception as exc:
                self.get_logger().error(f"could not restart the inference worker: {exc}")
                return  # the controller keeps holding with the reason
            if not self._running:
                worker.close(timeout=2.0)
                return
            self.worker = worker
            self.controller.replace_worker(worker)

        threading.Thread(target=run, name="dp-respawn", daemon=True).start()

    # ------------------------------------------------------------------------------ helpers
    def now_s(self) -> float:
        """Node clock (sim time under use_sim_time) in float seconds."""
        return self._clock.now().nanoseconds * 1e-9

    def _log(self, level: str, text: str, throttle: bool) -> None:
        """The controller's log. rclpy keys a logger call's severity and filters by its call
        site (file and line), so every (level, throttle) pair needs a line of its own."""
        logger = self.get_logger()
        if throttle:
            if level == "error":
                logger.error(text, throttle_duration_sec=WARN_THROTTLE_S)
            elif level == "warning":
                logger.warning(text, throttle_duration_sec=WARN_THROTTLE_S)
            else:
                logger.info(text, throttle_duration_sec=WARN_THROTTLE_S)
        elif level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        """Parameters are read once at start-up: refuse changes instead of ignoring them."""
        names = [p.name for p in params if p.name != "use_sim_time"]
        if names:
            return SetParametersResult(
                successful=False,
                reason=f"policy_node reads {names} at start-up only; restart the node to change",
            )
        return SetParametersResult(successful=True)

    def _stamp_of(self, header_stamp: object) -> float:
        """Header stamp in seconds; an unset (zero) stamp means the receive time."""
        return self.now_s() if is_zero_stamp(header_stamp) else stamp_to_sec(header_stamp)

    # ------------------------------------------------------------------------------ messages
    def _on_image(self, msg: Image | CompressedImage, topic: str) -> None:
        try:
            check_image_msg(msg, f"camera topic {topic}")
        except ValueError as exc:
            self.controller.reject_input("bad_images", f"image rejected: {exc}")
            return
        self.controller.offer_image(topic, msg, self._stamp_of(msg.header.stamp))

    def _decode_image(self, topic: str, msg: Image | CompressedImage) -> object:
        return image_msg_to_rgb(msg, self.settings.image_size, f"camera topic {topic}")

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            positions = self._selector.select(msg, self._state_where)
        except ValueError as exc:
            self.controller.reject_input("bad_joint_states", f"joint state rejected: {exc}")
            return
        self.controller.offer_state(positions, self._stamp_of(msg.header.stamp))

    def _publish_command(self, command: Command) -> None:
        """The controller's publish sink (called with its lock held)."""
        if not self._running or not self.context.ok():
            return  # shutting down (Ctrl-C/SIGTERM): publishers are going away
        if command.times is None:
            self._cmd_pub.publish(float64_array_msg(command.positions))
            return
        self._cmd_pub.publish(
            trajectory_msg(
                self.settings.joint_names,
                sec_to_stamp(command.stamp),
                command.times.tolist(),
                command.positions,
            )
        )

    # ------------------------------------------------------------------------------ control
    def _on_time_jump(self, jump: object) -> None:
        """Clock jump callback (every /clock update under sim time, and clock changes)."""
        with self._wake:
            if jump.delta.nanoseconds < 0 or jump.clock_change in (  # type: ignore[attr-defined]
                ClockChange.ROS_TIME_ACTIVATED,
                ClockChange.ROS_TIME_DEACTIVATED,
            ):
                self._jumped_back = True
            self._wake.notify_all()

    def _wait_until(self, target: float) -> bool:
        """Sleep until the node clock reaches `target`; False when the clock jumped back (or
        its source changed) or the node is closing."""
        lead = self.settings.params.spin_lead_ms * 1e-3
        while self._running:
            with self._wake:
                if self._jumped_back:
                    self._jumped_back = False
                    return False
                remaining = target - self.now_s()
                if remaining <= 0:
                    return True
                if self._clock.ros_time_is_active:
                    # Sim time advances only with /clock messages, which notify us; the real-time
                    # timeout only guards against a missed notification.
                    self._wake.wait(0.1)
                    continue
                if remaining > lead:
                    self._wake.wait(remaining - lead)
                    continue
            # The last `lead` seconds: busy-wait (outside the lock), so that the thread is
            # already on a CPU at the tick instead of waiting to be scheduled after a wake-up.
            end = time.perf_counter() + remaining
            while time.perf_counter() < end and self._running:
                pass
        return False

    def _control_loop(self) -> None:
        """Ticks at anchor + k*dt (node clock); an overrun skips grid points, never bunches."""
        self._set_priority(self.settings.params.control_priority)
        dt = self.settings.dt
        while self._running and self._clock.ros_time_is_active and self.now_s() == 0.0:
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
                self.get_logger().warning("node clock jumped back: restarting the episode")
                self.controller.restart(anchor)
                continue
            t_start = self.now_s()
            skipped = int((t_start - ideal) / dt + 1e-9)
            if self._clock.ros_time_is_active and skipped * dt > 1.0:
                anchor, k, ideal, skipped = t_start - dt, 1, t_start, 0  # sim time leapt
            k += skipped
            ideal += skipped * dt
            self.controller.tick(ideal, t_start, skipped)

    def _set_priority(self, priority: int) -> None:
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(
                threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority)
            )
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(
                f"control_priority {priority}: cannot use SCHED_FIFO ({exc}); running with "
                "normal scheduling (grant rtprio, e.g. in /etc/security/limits.conf)"
            )

    def _set_priority(self, priority: int) -> None:
        if priority <= 0:
            return
        try:
            os.sched_setscheduler(
                threading.get_native_id(), os.SCHED_FIFO, os.sched_param(priority)
            )
        except (OSError, AttributeError) as exc:
            self.get_logger().warning(
                f"control_priority {priority}: cannot use SCHED_FIFO ({exc}); running with "
                "normal scheduling (grant rtprio, e.g. in /etc/security/limits.conf)"
            )

    # ------------------------------------------------------------------------------ services
    def _srv_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = True, self.controller.start()
        self.get_logger().info(f"~/start: {resp.message}")
        return resp

    def _srv_stop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        resp.success, resp.message = True, self.controller.stop(self.now_s())
        self.get_logger().info(f"~/stop: {resp.message}")
        return resp

    def _srv_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self.controller.reset(self.now_s())
        resp.success, resp.message = True, "history, schedule and policy reset"
        self.get_logger().info(f"~/reset: {resp.message}")
        return resp

    def _srv_status(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """The /diagnostics values as one JSON object (for scripts such as dp-eval)."""
        _, _, values = self.controller.diagnostics_values()
        resp.success, resp.message = True, json.dumps(values)
        return resp

    def _publish_diagnostics(self) -> None:
        state, reason, values = self.controller.diagnostics_values()
        # WARN: holding, or active with a reason (an overrun)
        level = DiagnosticStatus.WARN if state == "holding" or reason else DiagnosticStatus.OK
        msg = DiagnosticArray()
        msg.header.stamp = self._clock.now().to_msg()
        msg.status = [
            diagnostic_status(
                f"{self.get_name()}: policy",
                level,
                f"{state}: {reason}" if reason else state,
                values,
                hardware_id=self.policy_info.device,
            )
        ]
        self._diag_pub.publish(msg)

    def close(self) -> None:
        """Stop the control thread and the inference worker (bounded waits)."""
        self._running = False
        with self._wake:
            self._wake.notify_all()
        if self._control_thread.is_alive():
            self._control_thread.join(2.0)
        self.worker.close(timeout=5.0)


def _make_node() -> PolicyNode:
    node = PolicyNode()
    # Shorter GIL hand-offs: the control thread waits at most ~1 ms for the interpreter when
    # it wakes while another thread runs Python (default 5 ms).
    sys.setswitchinterval(0.001)
    return node


def main(argv: list[str] | None = None) -> int:
    """Console entry point; 0 on Ctrl-C/SIGTERM, 1 on a start-up error, `--help` without ROS."""
    return run_node(
        _make_node,
        "policy_node",
        argv,
        fatal=(ValueError, RuntimeError, OSError),
        on_exit=lambda node: node.close(),
        description=DESCRIPTION,
        parameters=PARAMETERS,
    )


if __name__ == "__main__":
    sys.exit(main())
