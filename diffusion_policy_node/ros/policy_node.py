"""`policy_node`: runs a Diffusion Policy checkpoint in closed loop (docs/policy_node.md).

    policy_node --ros-args -p checkpoint:=/path/to/ckpt [--params-file config/policy_node.yaml]

A managed (lifecycle) node, as ros2_control's controllers are. configure: read the parameters,
load and validate the checkpoint, read the robot's joint limits (ros/robot_description.py),
start and warm up the inference worker, subscribe, create one managed command publisher per
action group, start the control thread, set the parameters that default to "the checkpoint's"
to their effective values; any failure: FAILURE with the reason (logged, `~/status`
`last_error`), nothing published. activate: command. deactivate: hold (chunk mode: one empty
trajectory), the worker stays warm. cleanup: stop, free the worker, give the parameters back.
`autostart` (default true) configures at start-up and activates when `start_active` is true;
`~/start`, `~/stop`, `~/reset` are aliases of the transitions (ros/policy_node_services.py);
`~/status` and `/diagnostics` report (ros/policy_node_diagnostics.py).

This file is the ROS wrapper only: what happens on each tick (staleness and hold, chunk merge,
safety, what to publish, when to start inference) is `runtime.controller.Controller`
(ROS-free); the control thread is `ros/control_loop.py`. Inference runs in a child process by
default (`inference_process`) or on a thread. Subscription callbacks keep only the newest raw
camera message (BEST_EFFORT, depth 1: a flood costs one decode per tick); a wrong image size is
resized, a wrong encoding rejected (counted, throttled warning). JointStates are merged by name
from any number of publishers; an unset (zero) header stamp means the receive time.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
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

from diffusion_policy_node.action_groups import ActionGroup, indices_in
from diffusion_policy_node.policy.checkpoint import check_action_width, read_config
from diffusion_policy_node.policy.config import CAMERA_MSG_TYPES
from diffusion_policy_node.runtime.controller import STREAM, TRAJECTORY, Command, Controller
from diffusion_policy_node.runtime.limits import resolve_limits
from diffusion_policy_node.runtime.process_worker import start_worker
from diffusion_policy_node.runtime.settings import NodeSettings, resolve_settings

from .control_loop import ControlLoop
from .conversions import (
    check_image_msg,
    float64_array_msg,
    image_msg_to_rgb,
    is_zero_stamp,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_msg,
)
from .lifecycle_guard import GuardedTransitions
from .node_main import run_node
from .policy_node_diagnostics import PolicyNodeDiagnostics
from .policy_node_params import (
    PARAMETERS,
    current_parameters,
    declare,
    effective_values,
    read_params,
)
from .policy_node_services import PolicyNodeServices
from .robot_description import robot_description

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
SHUTDOWN_WORKER_WAIT_S = 0.2  # Ctrl-C/SIGTERM: the inference process is killed after this


class PolicyNode(GuardedTransitions, PolicyNodeServices, PolicyNodeDiagnostics, LifecycleNode):
    """The closed-loop policy node; see the module docstring."""

    def __init__(self, node_name: str = "policy_node", **kwargs: object) -> None:
        super().__init__(node_name, **kwargs)
        self._clock = self.get_clock()
        self.autostart, self.start_active = declare(self)  # wrong types fail here, at once
        self.settings: NodeSettings | None = None
        self.controller: Controller | None = None
        self.worker: Any = None
        self.policy_info: Any = None
        self.last_error = ""
        self._running = False
        self._loop: ControlLoop | None = None
        self._entities: list[Any] = []  # subscriptions, publisher: created by configure
        # per output kind: [(group, publisher, its columns in that kind's Command)]
        self._group_pubs: dict[str, list[tuple[ActionGroup, Any, Any]]] = {}
        self._unheard_since: dict[str, float] = {}
        self._type_warned: set[tuple[str, tuple[str, ...]]] = set()
        self._given_params: list[Parameter] = []  # values before configure set the effective
        self._setting_effective = False
        self._starting = False  # autostart's configure: a failure is node_main's FATAL line
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
        self._guard_transitions()  # an invalid transition fails with a reason, never raises

    @property
    def lifecycle_state(self) -> str:
        """unconfigured | inactive | active | finalized (or a transition state)."""
        return self._state_machine.current_state[1]

    # ------------------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load, check and warm up. SUCCESS -> inactive; FAILURE (the reason logged and in
        `last_error`, everything half-built released) -> unconfigured."""
        try:
            self._configure()
        except Exception as exc:
            self._release()
            self.last_error = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            if not self.context.ok():
                # Ctrl-C / SIGTERM during configure: shutting down, not a failure to report
                self.last_error = "interrupted by shutdown"
            elif not self._starting:  # at start-up the one FATAL line says it (node_main)
                self.get_logger().error(f"configure failed: {self.last_error}")
            return TransitionCallbackReturn.FAILURE
        self.last_error = ""
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        params = read_params(self)
        config, _ = read_config(params.checkpoint)  # clear CheckpointError, before loading
        check_action_width(params.checkpoint, config)  # before joints interpret the actions
        s = self.settings = resolve_settings(params, config)
        urdf, urdf_where = robot_description(self, params)
        self.worker, self.policy_info = start_worker(s.inference, clock=self.now_s)
        limits, sources = resolve_limits(
            s, self.policy_info.action_min, self.policy_info.action_max, urdf, urdf_where
        )
        origin = f"URDF from {urdf_where}" if urdf is not None else "no URDF"
        self.get_logger().info(f"joint limits ({origin}): {sources.describe()}")
        for text in sources.warnings:  # one per joint with limits weaker than a URDF's
            self.get_logger().warning(f"joint limits: {text}")
        self.controller = Controller(
            s,
            self.policy_info,
            self.worker,
            clock=self.now_s,
            publish=self._publish_command,
            decode=self._decode_image,
            log=self._log,
            respawn=self._respawn_worker,
            limits=limits,
        )
        self.controller.stop(self.now_s())  # configured = not commanding until activate
        warm = self.controller.warm_up()
        if warm is not None:
            self.get_logger().info(
                f"warm-up: {s.inference.warmup_runs} inference(s) on "
                f"{self.policy_info.device}, last {warm.latency_s * 1e3:.1f} ms"
            )
        self._wire(s)
        self._running = True
        self._loop = ControlLoop(
            self._clock,
            s.dt,
            tick=self.controller.tick,
            restart=self.controller.restart,
            logger=self.get_logger(),
            spin_lead_ms=params.spin_lead_ms,
            priority=params.control_priority,
        )
        self._loop.start()
        info = self.policy_info
        self._set_effective(
            effective_values(
                s, limits, info.num_inference_steps, info.precision, device=str(info.device)
            )
        )
        outputs = ", ".join(f"{g.name} {list(g.joints)} -> {g.topic} ({g.type})" for g in s.groups)
        self.get_logger().info(
            f"policy_node configured: {params.checkpoint} on {info.device} ({info.precision}) "
            f"({'process' if params.inference_process else 'thread'}), "
            f"{s.control_rate_hz:g} Hz, cameras {list(s.camera_topics)}, observed joints "
            f"{list(s.joint_names)}; commands: {outputs}"
        )

    def _set_effective(self, values: dict[str, Any]) -> None:
        """Set parameters to their effective values (remembering the given ones for cleanup)."""
        self._given_params = current_parameters(self, values)
        self._set_internal([Parameter(name, value=v) for name, v in values.items()])

    def _set_internal(self, params: list[Parameter]) -> None:
        self._setting_effective = True
        try:
            for result, param in zip(self.set_parameters(params), params, strict=True):
                if not result.successful:
                    self.get_logger().warning(
                        f"could not set parameter {param.name}: {result.reason}"
                    )
        finally:
            self._setting_effective = False

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start commanding. SUCCESS -> active."""
        ret = super().on_activate(state)  # the managed command publisher
        if ret == TransitionCallbackReturn.SUCCESS:
            self.get_logger().info(f"activate: {self.controller.start()}")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Hold: the stop message goes out while the publisher is still active; the worker
        stays warm. SUCCESS -> inactive."""
        self.get_logger().info(f"deactivate: {self.controller.stop(self.now_s())}")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the worker, the subscriptions and the publishers, and give the parameters
        back the values they had before configure set the effective ones (so the next
        configure derives them again, e.g. from another checkpoint). SUCCESS -> unconfigured."""
        self._release()
        given, self._given_params = self._given_params, []
        if given:
            self._set_internal(given)
        self.get_logger().info(
            "cleanup: checkpoint unloaded, parameters back to their given values"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Hold and release. SUCCESS -> finalized."""
        self._hold_and_release()
        self.get_logger().info(f"shutdown (from {state.label}): released, finalized")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: hold and release. SUCCESS -> unconfigured."""
        self._hold_and_release()
        self.get_logger().error("error processing: a transition raised; held, released")
        return TransitionCallbackReturn.SUCCESS

    def _hold_and_release(self, worker_wait: float = 5.0) -> None:
        if self.controller is not None and self.controller.active:
            self.controller.stop(self.now_s())
        self._release(worker_wait)

    def _wire(self, s: NodeSettings) -> None:
        """Subscriptions and the managed command publisher."""
        for topic, type_name in zip(s.camera_topics, s.camera_types, strict=True):
            msg_type = CompressedImage if type_name == CAMERA_MSG_TYPES[1] else Image
            self._entities.append(
                self.create_subscription(
                    msg_type,
                    topic,
                    lambda msg, topic=topic: self._on_image(msg, topic),
                    SENSOR_QOS,
                )
            )
        self._state_where = f"joint state topic {s.params.joint_state_topic}"
        self._entities.append(
            self.create_subscription(
                JointState, s.params.joint_state_topic, self._on_joint_state, SENSOR_QOS
            )
        )
        self._group_pubs = {TRAJECTORY: [], STREAM: []}
        for kind, joints in (
            (TRAJECTORY, self.controller.path_joints(TRAJECTORY)),
            (STREAM, self.controller.path_joints(STREAM)),
        ):
            for g in s.groups:
                if g.is_trajectory != (kind == TRAJECTORY):
                    continue
                msg_type = JointTrajectory if g.is_trajectory else Float64MultiArray
                pub = self.create_lifecycle_publisher(msg_type, g.topic, COMMAND_QOS)
                cols = indices_in(g.joints, joints, "the command")
                self._group_pubs[kind].append((g, pub, cols))

    def _release(self, worker_wait: float = 5.0) -> None:
        """Stop the control thread, close the worker (killed after `worker_wait` s if its
        inference is still running), drop subscriptions and the publisher."""
        self._running = False
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        if self.worker is not None:
            self.worker.close(timeout=worker_wait)
            self.worker = None
        for sub in self._entities:
            self.destroy_subscription(sub)
        self._entities = []
        for pubs in self._group_pubs.values():
            for _, pub, _ in pubs:
                self.destroy_lifecycle_publisher(pub)
        self._group_pubs = {}
        self._unheard_since = {}
        self.controller = None
        self.settings = None

    def _respawn_worker(self) -> None:
        """Replace a hung or dead inference worker on a thread of its own (the controller holds
        meanwhile): kill the old one, load and warm up a new one, hand it over."""
        old, settings, controller = self.worker, self.settings, self.controller

        def run() -> None:
            old.close(timeout=1.0)
            try:
                worker, _ = start_worker(settings.inference, clock=self.now_s)
                controller.warm_up(worker)
            except Exception as exc:
                self.get_logger().error(f"could not restart the inference worker: {exc}")
                return  # the controller keeps holding with the reason
            if not self._running or self.controller is not controller:
                worker.close(timeout=2.0)
                return
            self.worker = worker
            controller.replace_worker(worker)

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
        """Parameters are read at configure: changes are taken while unconfigured only."""
        names = [p.name for p in params if p.name != "use_sim_time"]
        if self._setting_effective:
            return SetParametersResult(successful=True)
        if names and self.lifecycle_state != "unconfigured":
            return SetParametersResult(
                successful=False,
                reason=f"policy_node reads {names} at configure; change them while "
                "unconfigured (cleanup first), then configure again",
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
            self.controller.reject_input("bad_images", f"image rejected: {exc}", topic)
            return
        self.controller.offer_image(topic, msg, self._stamp_of(msg.header.stamp))

    def _decode_image(self, topic: str, msg: Image | CompressedImage) -> object:
        return image_msg_to_rgb(msg, self.settings.image_size, f"camera topic {topic}")

    def _on_joint_state(self, msg: JointState) -> None:
        """Merged by name with the other publishers' joints (`Controller.offer_joint_state`)."""
        self.controller.offer_joint_state(
            msg.name, msg.position, self._stamp_of(msg.header.stamp), self._state_where
        )

    def _publish_command(self, command: Command) -> None:
        """The controller's publish sink (called with its lock held)."""
        pubs = self._group_pubs.get(command.kind)
        if not self._running or not self.context.ok() or not pubs:
            return  # shutting down (Ctrl-C/SIGTERM) or cleaned up: no publisher
        if command.times is None:
            msgs = [(pub, float64_array_msg(command.positions[cols])) for _, pub, cols in pubs]
        else:
            stamp = sec_to_stamp(command.stamp)
            times = command.times.tolist()
            vel, acc = command.velocities, command.accelerations
            msgs = [
                (
                    pub,
                    trajectory_msg(
                        group.joints,
                        stamp,
                        times,
                        command.positions[:, cols],
                        None if vel is None else vel[:, cols],
                        None if acc is None else acc[:, cols],
                    ),
                )
                for group, pub, cols in pubs
            ]
        for pub, msg in msgs:
            try:
                pub.publish(msg)
            except Exception:
                if self.context.ok():
                    raise
                return  # the context shut down (SIGINT/SIGTERM) while this tick ran

    def close(self) -> None:
        """Hold and release (Ctrl-C/SIGTERM in any state). The process is exiting: an inference
        in progress is not waited for (the child is killed after 0.2 s), so the node is gone
        well within `ros2 launch`'s patience and the 2 s an operator expects."""
        self._hold_and_release(worker_wait=SHUTDOWN_WORKER_WAIT_S)


def _make_node() -> PolicyNode:
    node = PolicyNode()
    # Shorter GIL hand-offs: the control thread waits at most ~1 ms for the interpreter when
    # it wakes while another thread runs Python (default 5 ms).
    sys.setswitchinterval(0.001)
    if not node.autostart:
        return node
    try:
        node._starting = True
        try:
            configured = node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        finally:
            node._starting = False
        if not configured:
            if not node.context.ok():  # SIGTERM / Ctrl-C during configure: a clean exit
                raise ExternalShutdownException()
            raise RuntimeError(node.last_error)
        if node.start_active:
            node.trigger_activate()
    except BaseException:  # a failed configure, or Ctrl-C during the warm-up
        node.close()
        node.destroy_node()
        raise
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
