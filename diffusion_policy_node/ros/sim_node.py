"""`sim_node`: a bundled MuJoCo robot as a ROS 2 robot, like Gazebo + ros2_control.

    sim_node --ros-args -p real_time_factor:=1.0 -p camera_rate_hz:=30.0
    sim_node --ros-args --params-file config/robots/ur5e_gripper/sim_node.yaml

`task` picks the robot and task (`sim.engine.TASKS`): "reach" (default; the 3-joint arm of
`sim.ArmTask`, one overhead camera) or "pick_place" (`sim.PickPlaceTask`: a UR5e with a
parallel gripper, a scene and a wrist camera, pick a cube into the bin a coloured cue selects).

Publishes (all stamped with simulation time, which starts at 1 s and never jumps back):
  /joint_states          sensor_msgs/JointState (position, velocity, names), joint_state_rate_hz;
                         pick_place: the six UR joints and gripper_finger_joint
  /camera/image_raw      sensor_msgs/Image rgb8, image_width x image_height, at camera_rate_hz
                         (reach; pick_place: `camera_topics`, default /scene_camera/image_raw
                         and /wrist_camera/image_raw, frame_id = the camera's name)
  /clock                 rosgraph_msgs/Clock at clock_rate_hz (run other nodes with use_sim_time)
  /robot_description     std_msgs/String, transient local (like robot_state_publisher), once:
                         pick_place's URDF (description/urdf/ur5e_gripper.urdf, with its joint
                         limits); reach has no URDF and publishes nothing there
Follows:
  /arm_controller/joint_trajectory       trajectory_msgs/JointTrajectory, with the semantics of
      ros2_control's joint_trajectory_controller (`runtime.TrajectoryFollower`; a new trajectory
      starts from the current *desired* position, like `interpolate_from_desired_state: true`;
      header.stamp 0 = start on receipt, otherwise in simulation time)
  /forward_position_controller/commands  std_msgs/Float64MultiArray: joint position targets
      applied at once (forward_command_controller); the newest command of either kind wins.
  /gripper_controller/commands  std_msgs/Float64MultiArray, one value (pick_place):
      gripper_finger_joint's position target (0 closed .. 0.04 m open), applied at once.
Services (std_srvs/Trigger):
  ~/reset    new episode from the `seed` parameter, then `seed` += 1 (set `seed` with
             `ros2 param set` / SetParameters before a reset to choose it; the node starts with
             an episode of the initial `seed`). std_srvs has no seeded reset, hence the
             parameter. Reply: JSON with episode_seed, episode_start (sim time, s) and side
             (expert mode; pick_place: the grasp mode). The arm restarts at home; the current
             trajectory is dropped.
  ~/report   JSON: success, collided, done, time (s since reset), episode_seed, side,
             sim_time, paused, real_time_factor (measured), episodes, task; pick_place also
             target_bin, wrong_bin, dropped; the smoothness of the executed targets
             (eval/smoothness.py: motion_samples, chunk_boundaries, max_acc, jerk_*).
  ~/pause, ~/unpause   stop / continue physics (while paused only /clock is republished,
             unchanged, every 0.1 s wall time).

Time: one thread steps the physics in `physics_dt` steps, renders and publishes, keeping
simulation time at `real_time_factor` x wall time (1.0 = real time; larger for data collection;
0 = as fast as possible). When the machine cannot keep up, simulation time runs slower (no
catch-up bursts); `~/report` shows the achieved factor. Publications happen at the first physics
step at or after their due time, so stamps are multiples of `physics_dt`.

Expert mode (`expert:=true`): the task's scripted expert (`sim.ScriptedExpert`,
`sim.PickPlaceExpert`) drives the arm every `control_dt` and its commands are published on the
command topic (JointTrajectory with one point at `control_dt`, or Float64MultiArray with
`expert_output:=stream`; pick_place also the gripper topic, one value per control step), so a
recorder captures them as the action source; external commands are ignored.
`pause_on_done:=true` pauses the simulation when an episode ends (after publishing the final
state), `start_paused:=true` starts paused: dp-collect uses both so every bag holds exactly one
episode.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from lifecycle_msgs.srv import GetState
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diffusion_policy_node.eval.smoothness import recorded_smoothness
from diffusion_policy_node.ros.conversions import (
    float64_array_msg,
    rgb_to_image_msg,
    stamp_to_sec,
    trajectory_msg,
    trajectory_points_from_msg,
)
from diffusion_policy_node.ros.node_main import run_node
from diffusion_policy_node.ros.parameters import ParamSpec, declare_parameters
from diffusion_policy_node.sim.engine import NS, TASKS, SimEngine, configs_from_parameters
from diffusion_policy_node.sim.ur5e_description import ur5e_gripper_urdf

# Trajectory start stamps further than this from simulation time get a warning (use_sim_time?).
STAMP_WARN_S = 30.0


def ns_to_stamp(ns: int) -> Time:
    return Time(sec=int(ns // NS), nanosec=int(ns % NS))


# Each task's URDF, published on robot_description_topic (reach has none).
ROBOT_DESCRIPTIONS = {"pick_place": ur5e_gripper_urdf}
DEFAULT_CAMERA_TOPICS = {"pick_place": TASKS["pick_place"].camera_topics}

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "task", "string", "reach", f"Robot and task: {' | '.join(TASKS)} (sim.engine.TASKS)."
    ),
    ParamSpec(
        "seed",
        "int",
        0,
        "Layout seed of the next ~/reset (incremented after each reset).",
        (0, 2**31 - 1),
    ),
    ParamSpec(
        "real_time_factor", "double", 1.0, "Simulation speed / wall speed; 0: as fast as possible."
    ),
    ParamSpec("joint_state_rate_hz", "double", 100.0, "JointState rate (simulation time)."),
    ParamSpec("camera_rate_hz", "double", 30.0, "Camera rate (simulation time)."),
    ParamSpec("clock_rate_hz", "double", 200.0, "/clock rate (simulation time)."),
    ParamSpec("image_width", "int", 96, "Camera image width (px)."),
    ParamSpec("image_height", "int", 96, "Camera image height (px)."),
    ParamSpec("physics_dt", "double", 0.002, "Physics step (s)."),
    ParamSpec("control_dt", "double", 0.1, "Expert command period (s); the data set's dt."),
    ParamSpec(
        "time_limit",
        "double",
        0.0,
        "Episode length (s of simulation time); 0: the task's default (reach 10, pick_place 20).",
    ),
    ParamSpec(
        "expert", "bool", False, "Drive the arm with the scripted expert and publish its commands."
    ),
    ParamSpec(
        "expert_output",
        "string",
        "trajectory",
        "Expert commands as trajectory (JointTrajectory) | stream.",
    ),
    ParamSpec("pause_on_done", "bool", False, "Pause when an episode ends."),
    ParamSpec("start_paused", "bool", False, "Start paused (~/unpause to run)."),
    ParamSpec(
        "start_when_active",
        "string",
        "",
        "A lifecycle node (e.g. /policy_node): paused until it is active, so the first "
        "episode starts when the policy does (or at ~/unpause); empty: start at once.",
    ),
    ParamSpec("joint_state_topic", "string", "/joint_states", "JointState output topic."),
    ParamSpec("camera_topic", "string", "/camera/image_raw", "Image output topic (reach)."),
    ParamSpec(
        "camera_topics",
        "string_array",
        [],
        "Image topics of a multi-camera task, in its camera order; empty: "
        "/scene_camera/image_raw, /wrist_camera/image_raw (pick_place).",
    ),
    ParamSpec(
        "trajectory_topic",
        "string",
        "/arm_controller/joint_trajectory",
        "JointTrajectory command topic.",
    ),
    ParamSpec(
        "stream_topic",
        "string",
        "/forward_position_controller/commands",
        "Float64MultiArray command topic.",
    ),
    ParamSpec(
        "gripper_topic",
        "string",
        "/gripper_controller/commands",
        "Float64MultiArray gripper command topic (pick_place).",
    ),
    ParamSpec(
        "robot_description_topic",
        "string",
        "/robot_description",
        "URDF output topic (transient local; tasks with a URDF).",
    ),
    ParamSpec("frame_id", "string", "camera", "header.frame_id of the images (reach)."),
    ParamSpec(
        "qos_depth",
        "int",
        10,
        "Publisher history depth (raise it so slow recorders lose nothing).",
    ),
)
# Read once at start-up; only `seed` may change while running.
STARTUP_ONLY = frozenset(spec.name for spec in PARAMS) - {"seed"}


class SimNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "sim_node") -> None:
        super().__init__(node_name)
        g = declare_parameters(self, PARAMS)
        self._start_when_active = str(g["start_when_active"]).strip()
        if self._start_when_active:
            g = {**g, "start_paused": True}
        self.settings, self.task_config = configs_from_parameters(g)
        self._seed = int(g["seed"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        depth = self.settings.qos_depth
        reliable = QoSProfile(depth=depth, reliability=QoSReliabilityPolicy.RELIABLE)
        task = self.settings.task
        task_class = TASKS[task].task
        self.arm_joints: tuple[str, ...] = tuple(task_class.joint_names)
        self.has_gripper = bool(getattr(task_class, "has_gripper", False))
        self._js_pub = self.create_publisher(JointState, g["joint_state_topic"], reliable)
        self._img_pub = None  # a one-camera task (reach): camera_topic
        self._camera_pubs: dict[str, Any] = {}  # a multi-camera task: camera_topics
        cameras = tuple(task_class.camera_names)
        if len(cameras) == 1:
            self._img_pub = self.create_publisher(Image, g["camera_topic"], reliable)
        else:
            topics = tuple(g["camera_topics"]) or DEFAULT_CAMERA_TOPICS[task]
            if len(topics) != len(cameras):
                raise ValueError(
                    f"parameter camera_topics={list(topics)!r}: task {task!r} has "
                    f"{len(cameras)} cameras {list(cameras)}, give one topic each"
                )
            self._camera_pubs = {
                cam: self.create_publisher(Image, topic, reliable)
                for cam, topic in zip(cameras, topics, strict=True)
            }
        self._clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(depth=10))
        self.robot_description = ROBOT_DESCRIPTIONS[task]() if task in ROBOT_DESCRIPTIONS else None
        if self.robot_description is not None:
            latched = QoSProfile(
                depth=1,
                reliability=QoSReliabilityPolicy.RELIABLE,
                durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
            )
            self._description_pub = self.create_publisher(
                String, g["robot_description_topic"], latched
            )
            self._description_pub.publish(String(data=self.robot_description))
        self.trajectory_topic = str(g["trajectory_topic"])
        self.stream_topic = str(g["stream_topic"])
        self.gripper_topic = str(g["gripper_topic"])
        self._jt_pub = self._f64_pub = self._gripper_pub = None
        if self.settings.expert and self.has_gripper:
            self._gripper_pub = self.create_publisher(
                Float64MultiArray, self.gripper_topic, reliable
            )
        elif self.has_gripper:
            self.create_subscription(Float64MultiArray, self.gripper_topic, self._on_gripper, 10)
        if self.settings.expert:
            if self.settings.expert_output == "trajectory":
                self._jt_pub = self.create_publisher(
                    JointTrajectory, self.trajectory_topic, reliable
                )
            else:
                self._f64_pub = self.create_publisher(
                    Float64MultiArray, self.stream_topic, reliable
                )
        else:
            self.create_subscription(
                JointTrajectory, self.trajectory_topic, self._on_trajectory, 10
            )
            self.create_subscription(Float64MultiArray, self.stream_topic, self._on_stream, 10)
        self.engine: SimEngine | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._sim_thread, name="sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(60.0):
            raise RuntimeError("sim_node: the simulation thread did not start within 60 s")
        if self.error is not None:
            raise RuntimeError(f"sim_node: simulation failed to start: {self.error}")
        for name, handler in (
            ("reset", self._on_reset),
            ("report", self._on_report),
            ("pause", self._pause_handler("pause")),
            ("unpause", self._pause_handler("unpause")),
        ):
            self.create_service(Trigger, f"~/{name}", handler)
        self._watch_timer = None
        if self._start_when_active:
            self._watch_start(self._start_when_active)
        s = self.settings
        self.get_logger().info(
            f"sim_node: task {task}, {self.task_config.image_width}x"
            f"{self.task_config.image_height} camera(s) {list(cameras)} "
            f"at {s.camera_rate_hz:g} Hz, joint states at {s.joint_state_rate_hz:g} Hz, "
            f"real_time_factor={s.real_time_factor:g}, expert={s.expert}, paused={s.start_paused}"
            + (
                f" until {self._start_when_active} is active (or ~/unpause)"
                if self._start_when_active
                else ""
            )
        )

    def _watch_start(self, node_name: str) -> None:
        """Poll `node_name`'s lifecycle state (GetState, every 0.5 s wall time) and unpause
        once it is active: the first episode's time starts with the policy, not with its
        ~20 s start-up. Stops watching once the sim runs (also after an ~/unpause)."""
        client = self.create_client(GetState, f"{node_name.rstrip('/')}/get_state")
        pending: list[Any] = []

        def poll() -> None:
            engine = self.engine
            if engine is None or not engine.paused:
                self._watch_timer.cancel()
                return
            if pending and not pending[0].done():
                return
            pending.clear()
            if client.service_is_ready():
                future = client.call_async(GetState.Request())
                future.add_done_callback(on_state)
                pending.append(future)

        def on_state(future: Any) -> None:
            result = future.result()
            engine = self.engine
            if result is None or engine is None or result.current_state.label != "active":
                return
            if engine.paused:
                engine.submit("unpause")
                self.get_logger().info(f"{node_name} is active: the first episode starts")
            self._watch_timer.cancel()

        steady = RosClock(clock_type=ClockType.STEADY_TIME)
        self._watch_timer = self.create_timer(0.5, poll, clock=steady)

    # ---------------------------------------------------------------- sim thread
    def _sim_thread(self) -> None:
        try:
            self.engine = SimEngine(
                self.task_config,
                self.settings,
                {
                    "joint_state": self._publish_joint_state,
                    "image": self._publish_image,
                    "images": self._publish_images,
                    "clock": self._publish_clock,
                    "gripper": self._publish_gripper,
                    "trajectory": self._publish_trajectory,
                    "stream": self._publish_stream,
                    "log": self._log,
                },
                seed=self._seed,
            )
        except Exception as exc:  # reported by the constructor on the main thread
            self.error = exc
            self._ready.set()
            return
        self._seed += 1  # the constructor ran the first episode with it
        self._ready.set()
        try:
            self.engine.run(self._stop)
        except Exception as exc:
            if not self.context.ok():  # shutdown (Ctrl-C) invalidated the publishers: normal
                return
            self.error = exc
            self.get_logger().fatal(f"simulation thread died: {exc!r}; shutting down")
            rclpy.try_shutdown(context=self.context)  # ends executor.spin in main
        finally:
            self.engine.close()

    def _publish_joint_state(
        self, ns: int, names: list[str], pos: np.ndarray, vel: np.ndarray
    ) -> None:
        msg = JointState()
        msg.header.stamp = ns_to_stamp(ns)
        msg.name = names
        msg.position = pos.tolist()
        msg.velocity = vel.tolist()
        self._js_pub.publish(msg)

    def _publish_image(self, ns: int, rgb: np.ndarray) -> None:
        if self._img_pub is not None:
            self._img_pub.publish(rgb_to_image_msg(rgb, ns_to_stamp(ns), self.settings.frame_id))

    def _publish_images(self, ns: int, images: dict[str, np.ndarray]) -> None:
        stamp = ns_to_stamp(ns)
        for camera, rgb in images.items():
            self._camera_pubs[camera].publish(rgb_to_image_msg(rgb, stamp, camera))

    def _publish_gripper(self, ns: int, positions: np.ndarray) -> None:
        if self._gripper_pub is not None:
            self._gripper_pub.publish(float64_array_msg(positions))

    def _publish_clock(self, ns: int) -> None:
        self._clock_pub.publish(Clock(clock=ns_to_stamp(ns)))

    def _publish_trajectory(
        self, ns: int, names: list[str], tfs: np.ndarray, positions: np.ndarray
    ) -> None:
        if self._jt_pub is not None:
            self._jt_pub.publish(trajectory_msg(names, ns_to_stamp(ns), tfs, positions))

    def _publish_stream(self, ns: int, positions: np.ndarray) -> None:
        if self._f64_pub is not None:
            self._f64_pub.publish(float64_array_msg(positions))

    def _log(self, level: str, text: str) -> None:
        logger = self.get_logger()
        (logger.warning if level == "warn" else logger.info)(text)

    # ---------------------------------------------------------------- callbacks
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        for p in params:
            if p.name == "seed":
                self._seed = int(p.value)
            elif p.name in STARTUP_ONLY:
                return SetParametersResult(
                    successful=False, reason=f"{p.name} is read at start-up only; restart the node"
                )
        return SetParametersResult(successful=True)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        want = list(self.arm_joints)
        if not msg.points and not msg.joint_names:  # an empty message (hold) needs no names
            times, positions, vel, acc = np.zeros(0), np.zeros((0, len(want))), None, None
        else:
            try:
                _, times, positions, vel, acc = trajectory_points_from_msg(msg, want)
            except ValueError as exc:
                self.get_logger().warning(f"{self.trajectory_topic}: {exc}; trajectory rejected")
                return
        stamp = stamp_to_sec(msg.header.stamp)
        engine = self.engine
        if engine is None:
            return
        if stamp and abs(stamp - engine.now_ns / NS) > STAMP_WARN_S:
            self.get_logger().warning(
                f"{self.trajectory_topic}: header.stamp {stamp:.3f} s is far from simulation "
                f"time {engine.now_ns / NS:.3f} s; is the sender running with use_sim_time?",
                throttle_duration_sec=5.0,
            )
        try:
            engine.submit(
                "trajectory", (times.tolist(), positions, stamp or None, vel, acc), wait=5.0
            )
        except (ValueError, TimeoutError) as exc:
            self.get_logger().warning(f"{self.trajectory_topic}: trajectory rejected: {exc}")

    def _on_stream(self, msg: Float64MultiArray) -> None:
        self._submit_positions("stream", self.stream_topic, self.arm_joints, msg)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        self._submit_positions("gripper", self.gripper_topic, ("gripper_finger_joint",), msg)

    def _submit_positions(
        self, channel: str, topic: str, joints: tuple[str, ...], msg: Float64MultiArray
    ) -> None:
        """A Float64MultiArray of one finite position per joint in `joints` to the engine's
        `channel`; anything else is rejected with a (throttled) warning."""
        values = np.asarray(msg.data, dtype=np.float64)
        n = len(joints)
        if values.shape != (n,) or not np.all(np.isfinite(values)):
            self.get_logger().warning(
                f"{topic}: expected {n} finite position(s) for {list(joints)}, "
                f"got {values.tolist()}; command rejected",
                throttle_duration_sec=2.0,
            )
            return
        if self.engine is not None:
            self.engine.submit(channel, values)

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        seed = self._seed
        try:
            result = self._running_engine().submit("reset", seed, wait=10.0)
        except (ValueError, TimeoutError) as exc:
            resp.success, resp.message = False, str(exc)
            return resp
        self.set_parameters([Parameter("seed", value=seed + 1)])
        resp.success, resp.message = True, json.dumps(result)
        return resp

    def _on_report(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        engine = self._running_engine()
        report = {**engine.report(), **recorded_smoothness(engine.motion)}
        resp.success, resp.message = True, json.dumps(report)
        return resp

    def _pause_handler(self, kind: str) -> Callable[[Trigger.Request, Trigger.Response], Any]:
        def handler(_req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
            try:
                resp.message = json.dumps(self._running_engine().submit(kind, wait=10.0))
                resp.success = True
            except TimeoutError as exc:
                resp.success, resp.message = False, str(exc)
            return resp

        return handler

    def _running_engine(self) -> SimEngine:
        if self.engine is None or self.error is not None:
            raise RuntimeError(f"sim_node: the simulation is not running ({self.error!r})")
        return self.engine

    def shutdown(self, timeout: float = 8.0) -> bool:
        """Stop the simulation thread; False (with its stack on stderr) if it did not stop."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        frame = sys._current_frames().get(self._thread.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no frame)"
        print(f"sim_node: simulation thread still running after {timeout} s:\n{stack}",
              file=sys.stderr, flush=True)  # fmt: skip
        return False


def _stop_simulation(node: SimNode) -> int:
    """run_node's on_exit: stop the simulation thread; exit code 1 when it had failed."""
    code = 0 if node.error is None else 1
    if not node.shutdown():
        # A thread stuck in native code (seen once: offscreen GL teardown) must not keep a
        # Ctrl-C'd node alive; its stack is on stderr for diagnosis.
        sys.stdout.flush()
        os._exit(code)
    return code


def main(argv: list[str] | None = None) -> int:
    return run_node(
        SimNode,
        "sim_node",
        argv,
        fatal=(ValueError, RuntimeError),
        on_exit=_stop_simulation,
        description=__doc__,
        parameters=PARAMS,
    )


if __name__ == "__main__":
    sys.exit(main())
