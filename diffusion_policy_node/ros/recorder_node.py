"""`recorder_node`: record topics into rosbag2 bags, one bag per episode, without `ros2 bag`.

    recorder_node --ros-args -p output_dir:=bags -p storage:=mcap \\
        -p topics:="[/camera/image_raw, /joint_states, /arm_controller/joint_trajectory]"

Topics are generic: `topics` lists them, `types` optionally gives their types
(`sensor_msgs/msg/Image`, ...; empty: taken from the ROS graph). A topic is subscribed once a
publisher of it is seen, with the publishers' reliability (best-effort if any publisher is
best-effort, as `ros2 bag record` adapts), and messages arrive as raw CDR bytes
(`raw=True`): nothing is deserialized or converted, the bytes go straight into the bag
(`data.bag_writer.BagWriter`, rosbags). Record times come from the node clock, i.e. simulation
time under `use_sim_time:=true`. On the system clock a message's record time is its receipt by
the middleware where rclpy reports it (Iron and newer: the node clock minus the time the
message waited in the executor's queue), so a busy executor does not make messages look staler
than they are. Messages received before
~/start are not recorded, and the bag writer is warmed up at start-up, so the first bag is as
fresh as the later ones.

Services (std_srvs/Trigger, replies are JSON):
  ~/start   open `<output_dir>/<bag_prefix>_<index:04d>` (the next free index from
            `start_index`) and record into it. Refused while some topic has no subscription yet
            (no publisher seen) unless `allow_missing_topics:=true`.
  ~/stop    close the bag (writes metadata.yaml); reply: bag, messages per topic.
  ~/status  recording, bag, messages per topic so far, subscribed / missing topics, and per
            topic how many publishers are connected (`matched`).
With `start_on_launch:=true` the first bag starts as soon as every topic is subscribed.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from rclpy.subscription import Subscription
from std_srvs.srv import Trigger

from diffusion_policy_node.data.bag_writer import STORAGE_FORMATS, BagWriter, BagWriterError
from diffusion_policy_node.ros.node_main import run_node
from diffusion_policy_node.ros.parameters import ParamSpec, declare_parameters

# rclpy passes the middleware's message info (received_timestamp, system clock) to a callback
# that takes two arguments (Iron and newer); Humble calls every callback with the message only.
MESSAGE_INFO = hasattr(Subscription, "CallbackType")
DEFAULT_TOPICS = ["/camera/image_raw", "/joint_states", "/arm_controller/joint_trajectory"]
PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("topics", "string_array", DEFAULT_TOPICS, "Topics to record."),
    ParamSpec("types", "string_array", [], "Message type per topic; empty: from the graph."),
    ParamSpec("output_dir", "string", "bags", "Folder that receives one bag folder per episode."),
    ParamSpec("bag_prefix", "string", "episode", "Bag folder name prefix: <prefix>_<index:04d>."),
    ParamSpec("start_index", "int", 0, "Index of the first bag (existing names are skipped)."),
    ParamSpec("storage", "string", "mcap", f"Storage format: {' | '.join(STORAGE_FORMATS)}."),
    ParamSpec("bag_version", "int", 8, "rosbag2 metadata version (8 or 9)."),
    ParamSpec("queue_depth", "int", 100, "Subscription queue depth."),
    ParamSpec(
        "allow_missing_topics", "bool", False, "Let ~/start record while a topic has no publisher."
    ),
    ParamSpec(
        "start_on_launch", "bool", False, "Start the first bag once every topic is subscribed."
    ),
)


def import_msg_class(msgtype: str) -> type:
    """The rclpy message class of `pkg/msg/Name` (ValueError when it is not installed)."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg":
        raise ValueError(f"message type {msgtype!r} must look like pkg/msg/Name")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"message type {msgtype} is not installed for Python ({exc}); install its package"
        ) from exc


def _msg_file(pkg: str, base: str) -> Path:
    """The installed `.msg` file of pkg/msg/base: ament index, else <sys.prefix>/share (venv)."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(pkg)) / "msg" / f"{base}.msg")
    except (LookupError, OSError, ValueError):
        pass  # no AMENT_PREFIX_PATH (plain virtualenv) or package not indexed
    candidates.append(Path(sys.prefix) / "share" / pkg / "msg" / f"{base}.msg")
    for path in candidates:
        if path.is_file():
            return path
    raise ValueError(
        f"no definition file for {pkg}/msg/{base} (looked in {[str(c) for c in candidates]}); "
        "install the message package or source its workspace"
    )


def msg_definitions(msgtype: str, known: Any) -> dict[str, str]:
    """`.msg` texts of `msgtype` and its nested types unknown to `known(msgtype) -> bool`, read
    from the installed packages' share folders."""
    from diffusion_policy_node.data.bag_writer import msgtype_dependencies

    out: dict[str, str] = {}
    todo = [msgtype]
    while todo:
        name = todo.pop()
        if name in out or known(name):
            continue
        pkg, _, base = name.split("/")
        out[name] = _msg_file(pkg, base).read_text()
        todo.extend(msgtype_dependencies(out[name], name))
    return out


class RecorderNode(Node):
    """See the module docstring."""

    def __init__(self, node_name: str = "recorder_node") -> None:
        super().__init__(node_name)
        g = declare_parameters(self, PARAMS)
        types = g["types"]
        self.topics = [str(t) for t in g["topics"]]
        if not self.topics or len(set(self.topics)) != len(self.topics):
            raise ValueError(f"parameter topics={self.topics}: need unique topic names")
        if types and len(types) != len(self.topics):
            raise ValueError(
                f"parameter types has {len(types)} entries for {len(self.topics)} topics; "
                "give one type per topic or none"
            )
        if g["storage"] not in STORAGE_FORMATS:
            raise ValueError(
                f"parameter storage={g['storage']!r}: expected one of {sorted(STORAGE_FORMATS)}"
            )
        if g["bag_version"] not in (8, 9):
            raise ValueError(f"parameter bag_version={g['bag_version']}: expected 8 or 9")
        if int(g["start_index"]) < 0 or int(g["queue_depth"]) < 1:
            raise ValueError("parameters start_index >= 0 and queue_depth >= 1 are required")
        self.declared_types = dict(zip(self.topics, types, strict=False))
        self.output_dir = Path(g["output_dir"]).expanduser()
        self.prefix = str(g["bag_prefix"])
        self.next_index = int(g["start_index"])
        self.storage = str(g["storage"])
        self.bag_version = int(g["bag_version"])
        self.depth = int(g["queue_depth"])
        self.allow_missing = bool(g["allow_missing_topics"])
        self.start_pending = bool(g["start_on_launch"])
        for msgtype in self.declared_types.values():
            import_msg_class(msgtype)  # fail at start-up, not on first message
        self.types: dict[str, str] = {}  # subscribed topic -> type
        self._subs: dict[str, Any] = {}  # topic -> subscription
        self.writer: BagWriter | None = None
        self.opened_wall_ns = 0  # system time at which the current bag was asked for
        self.definitions: dict[str, dict[str, str]] = {}  # msgtype -> .msg texts it needs
        self.bags: list[str] = []
        self.warm_up()
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_service(Trigger, "~/status", self._on_status)
        # Steady clock: under use_sim_time a paused simulation would stop a ROS-time timer.
        self.create_timer(0.2, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._discover()
        self.get_logger().info(
            f"recorder_node: topics {self.topics} -> {self.output_dir}/{self.prefix}_NNNN "
            f"({self.storage})"
        )

    # ---------------------------------------------------------------- subscriptions
    def missing_topics(self) -> list[str]:
        return [t for t in self.topics if t not in self.types]

    def _discover(self) -> None:
        for topic in self.missing_topics():
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            graph_types = sorted({i.topic_type for i in infos})
            msgtype = self.declared_types.get(topic)
            if msgtype is None:
                if len(graph_types) != 1:
                    self.get_logger().error(
                        f"{topic}: publishers disagree on the type {graph_types}; set `types`",
                        throttle_duration_sec=10.0,
                    )
                    continue
                msgtype = graph_types[0]
            elif msgtype not in graph_types:
                self.get_logger().error(
                    f"{topic}: declared type {msgtype} but publishers offer {graph_types}",
                    throttle_duration_sec=10.0,
                )
                continue
            best_effort = any(
                i.qos_profile.reliability == QoSReliabilityPolicy.BEST_EFFORT for i in infos
            )
            qos = QoSProfile(
                depth=self.depth,
                reliability=QoSReliabilityPolicy.BEST_EFFORT
                if best_effort
                else QoSReliabilityPolicy.RELIABLE,
                durability=QoSDurabilityPolicy.VOLATILE,
            )
            self._subs[topic] = self.create_subscription(
                import_msg_class(msgtype), topic, self._callback(topic), qos, raw=True
            )
            self.types[topic] = msgtype
            self.get_logger().info(
                f"subscribed {topic} [{msgtype}] ({'best effort' if best_effort else 'reliable'})"
            )
        if self.start_pending and not self.missing_topics():
            self.start_pending = False
            try:
                self.start_bag()
            except (BagWriterError, OSError, ValueError) as exc:
                self.get_logger().error(f"start_on_launch: cannot start recording: {exc}")

    def warm_up(self) -> None:
        """Open and delete a throwaway bag: the first real bag then opens as fast as the later
        ones (the first open builds the typestore and storage plugin, ~0.1-0.5 s during which
        the executor would queue messages)."""
        folder = Path(tempfile.mkdtemp(prefix="recorder_warm_up_"))
        try:
            writer = BagWriter(folder / "bag", storage=self.storage, version=self.bag_version)
            writer.add_topic("/warm_up", "std_msgs/msg/String")
            writer.close()
        except (BagWriterError, OSError, ValueError) as exc:
            self.get_logger().warn(
                f"bag writer warm-up failed ({exc}); the first bag opens slower"
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def record_time_ns(self, info: dict[str, Any] | None) -> int | None:
        """The message's record time on the node clock, None if it arrived before ~/start."""
        now = self.get_clock().now().nanoseconds
        if info is None:
            return now
        received = int(info.get("received_timestamp", 0))
        if received <= 0:
            return now
        if received < self.opened_wall_ns:
            return None  # queued before the bag was asked for
        if self.get_clock().ros_time_is_active:
            return now  # simulation time need not pace the wall clock the wait is measured on
        return now - max(time.time_ns() - received, 0)

    def _callback(self, topic: str) -> Any:
        def record(data: bytes, info: dict[str, Any] | None) -> None:
            writer = self.writer
            if writer is not None:
                t = self.record_time_ns(info)
                if t is not None:
                    writer.write(topic, t, data)

        if MESSAGE_INFO:
            return record
        return lambda data: record(data, None)

    # ---------------------------------------------------------------- bags
    def start_bag(self) -> dict[str, Any]:
        """Open the next bag; returns {"bag": path, "index": i, "topics": [...]}."""
        if self.writer is not None:
            raise BagWriterError(f"already recording {self.writer.path}; call ~/stop first")
        missing = self.missing_topics()
        if missing and not self.allow_missing:
            raise BagWriterError(
                f"no publisher seen yet for {missing}; start their publishers (or set "
                "allow_missing_topics:=true) and retry"
            )
        while (self.output_dir / f"{self.prefix}_{self.next_index:04d}").exists():
            self.next_index += 1
        path = self.output_dir / f"{self.prefix}_{self.next_index:04d}"
        self.opened_wall_ns = time.time_ns()
        writer = BagWriter(path, storage=self.storage, version=self.bag_version)
        try:
            for topic, msgtype in self.types.items():
                if not writer.knows(msgtype):
                    if msgtype not in self.definitions:
                        self.definitions[msgtype] = msg_definitions(msgtype, writer.knows)
                    writer.register_definitions(self.definitions[msgtype])
                writer.add_topic(topic, msgtype)
        except (BagWriterError, OSError, ValueError):
            writer.close()
            raise
        self.writer = writer
        index = self.next_index
        self.next_index += 1
        self.get_logger().info(f"recording {path}")
        return {"bag": str(path), "index": index, "topics": writer.topics}

    def stop_bag(self) -> dict[str, Any]:
        """Close the current bag; returns {"bag": path, "messages": {topic: n}}."""
        writer = self.writer
        if writer is None:
            raise BagWriterError("not recording; call ~/start first")
        self.writer = None
        counts = writer.close()
        self.bags.append(str(writer.path))
        self.get_logger().info(f"closed {writer.path}: {counts}")
        return {"bag": str(writer.path), "messages": counts}

    def _on_start(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        try:
            resp.message = json.dumps(self.start_bag())
            resp.success = True
        except (BagWriterError, OSError, ValueError) as exc:
            resp.success, resp.message = False, str(exc)
        return resp

    def _on_stop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        try:
            resp.message = json.dumps(self.stop_bag())
            resp.success = True
        except (BagWriterError, OSError) as exc:
            resp.success, resp.message = False, str(exc)
        return resp

    def _on_status(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        writer = self.writer
        resp.success = True
        resp.message = json.dumps(
            {
                "recording": writer is not None,
                "bag": None if writer is None else str(writer.path),
                "messages": {} if writer is None else dict(writer.message_counts),
                "subscribed": dict(self.types),
                # publishers connected to each subscription (not only seen on the graph)
                "matched": {t: sub.get_publisher_count() for t, sub in self._subs.items()},
                "missing": self.missing_topics(),
                "bags": list(self.bags),
            }
        )
        return resp

    def close(self) -> None:
        if self.writer is not None:
            self.stop_bag()


def main(argv: list[str] | None = None) -> int:
    # close(): an interrupted recording still gets its metadata.yaml
    return run_node(
        RecorderNode,
        "recorder_node",
        argv,
        fatal=(ValueError, BagWriterError),
        on_exit=RecorderNode.close,
        description=__doc__,
        parameters=PARAMS,
    )


if __name__ == "__main__":
    sys.exit(main())
