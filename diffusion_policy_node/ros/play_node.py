"""`dp-play BAG...`: publish a recorded bag's topics over ROS 2 with /clock, to dry-run nodes.

    dp-play demos/bags/episode_0003                       # all topics, real time, with /clock
    dp-play BAG --rate 0.5 --loop --topics /camera/image_raw /joint_states
    dp-play BAG --compare models/sim_arm_diffusion --out runs/play   # dry-run policy_node

Every message is published as the exact CDR bytes stored in the bag (the first message of each
topic is deserialized once into the installed rclpy type, so a type mismatch stops playback
with the topic's name). /clock (rosgraph_msgs/Clock) carries the bag's record time: run other
nodes with `use_sim_time:=true` and they follow the recording (a recorder_node bag of a sim run
holds sim time, so the header stamps and the clock agree). The clock is published at
--clock-hz (wall) and, before each message, at that message's record time, so it never lags
what was published; it only jumps back between bags (or loops), which nodes with sim time treat
as a new episode. A /clock topic in the bag is not replayed (this player is the clock).
Services (std_srvs/Trigger): ~/pause, ~/unpause (--start-paused waits for ~/unpause).

--compare CHECKPOINT: the checkpoint's command topics (its action groups) are not replayed;
dp-play starts a policy_node with the checkpoint and use_sim_time (or, with --attach NAME,
uses one already running), waits until it is active and subscribed, plays the bag once and
records the commands it publishes, each with its receive time on the playback clock. The
recorded actions are read from the bag with the checkpoint's data settings (`dp-replay`'s
grid), and the node's commands are sampled at the same times, as its controller would execute
them (train/replay.py `compare_node_commands`): MAE/RMSE per joint on stderr, compare.json and
compare.png (the `dp-replay` figure) in --out, the summary as JSON on the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from std_srvs.srv import Trigger

from diffusion_policy_node.data.bag_sources import BagReadError, OpenBag, find_bags, open_bag
from diffusion_policy_node.ros.recorder_node import import_msg_class

NS = 1_000_000_000
CLOCK_TOPIC = "/clock"
PAUSED_CLOCK_S = 0.1  # while paused or waiting, the unchanged clock is republished this often


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-play",
        description=__doc__,
        epilog="Example: dp-play demos/bags/episode_0003 --compare models/sim_arm_diffusion",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="dp-play [options] BAG [BAG ...] [--ros-args ...]",
    )
    parser.add_argument("bags", nargs="+", help="bag folders or storage files, played in order")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed over wall time")
    parser.add_argument("--loop", action="store_true", help="play the bags again and again")
    parser.add_argument("--topics", nargs="+", default=None, help="topics to play (default all)")
    parser.add_argument("--clock-hz", type=float, default=100.0, help="/clock rate (wall Hz)")
    parser.add_argument("--delay", type=float, default=0.0, help="wall seconds before playing")
    parser.add_argument("--start-paused", action="store_true", help="wait for ~/unpause")
    parser.add_argument("--node-name", default="dp_play", help="this player's node name")
    cmp = parser.add_argument_group("comparison with a policy node (--compare)")
    cmp.add_argument("--compare", metavar="CHECKPOINT", help="compare a policy node's commands")
    cmp.add_argument(
        "--attach",
        metavar="NODE",
        default="",
        help="use this running policy node (its checkpoint must be CHECKPOINT) instead of "
        "starting one",
    )
    cmp.add_argument(
        "--policy-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="a parameter of the started policy_node (repeatable)",
    )
    cmp.add_argument(
        "--urdf",
        metavar="FILE",
        help="the robot's URDF for the started policy_node's joint limits (its "
        "robot_description_file); not given: the node waits for /robot_description (played "
        "from the bag or published beside it) and fails naming it if it does not come",
    )
    cmp.add_argument("--data-config", help="DataConfig YAML (default: the checkpoint's meta.data)")
    cmp.add_argument("--out", help="output folder (default: runs/play-<time>)")
    cmp.add_argument(
        "--ready-timeout", type=float, default=120.0, help="wall s for the policy node to be ready"
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    """ValueError naming the option."""
    if not args.rate > 0:
        raise ValueError(f"--rate {args.rate}: must be > 0")
    if not args.clock_hz > 0:
        raise ValueError(f"--clock-hz {args.clock_hz}: must be > 0")
    if args.delay < 0:
        raise ValueError(f"--delay {args.delay}: must be >= 0")
    if args.compare and args.loop:
        raise ValueError("--compare plays the bags once; drop --loop")
    if args.compare and args.start_paused:
        raise ValueError("--compare starts playing once the policy node is ready; drop "
                         "--start-paused")  # fmt: skip
    if (
        args.attach or args.policy_param or args.data_config or args.out or args.urdf
    ) and not args.compare:
        raise ValueError(
            "--attach, --policy-param, --urdf, --data-config and --out need --compare"
        )
    for item in args.policy_param:
        name, sep, value = item.partition(":=")
        if not sep or not name or not value:
            raise ValueError(f"--policy-param {item!r}: expected NAME:=VALUE")


class BagPlayer:
    """Publishes the selected topics of bags, paced on the wall clock, with /clock."""

    def __init__(
        self,
        node: Node,
        bags: Sequence[Path],
        topics: Sequence[str] | None,
        rate: float,
        clock_hz: float,
        exclude: Sequence[str] = (),
    ) -> None:
        self.node = node
        self.bag_paths = list(bags)
        self.rate = float(rate)
        self.clock_period = 1.0 / float(clock_hz)
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._paused = False
        self._bag0 = 0  # bag time (ns) at wall time _wall0
        self._wall0 = time.monotonic()
        self._frozen_ns: int | None = None  # while paused/waiting: the clock stands here
        self.clock_ns = 0  # last /clock published
        self.counts: dict[str, int] = {}
        types = self._scan(topics, set(exclude))
        self.topics = sorted(types)
        self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))
        self.publishers = {
            t: node.create_publisher(import_type(t, m), t, QoSProfile(depth=100))
            for t, m in types.items()
        }
        node.create_service(Trigger, "~/pause", self._on_pause)
        node.create_service(Trigger, "~/unpause", self._on_unpause)

    def _scan(self, topics: Sequence[str] | None, exclude: set[str]) -> dict[str, str]:
        """topic -> msgtype over all bags; checks the selection and the first messages."""
        found: dict[str, str] = {}
        self.start_ns: int | None = None
        for path in self.bag_paths:
            bag = open_bag(path)
            try:
                for topic, msgtype in bag.topics.items():
                    known = found.setdefault(topic, msgtype)
                    if known != msgtype:
                        raise BagReadError(
                            f"bag {path} topic {topic}: type {msgtype}, but {known} in an "
                            "earlier bag; play them separately"
                        )
                if self.start_ns is None:
                    starts = [p.reader.start_time for p in bag.parts if p.reader.message_count]
                    self.start_ns = min(starts) if starts else None
            finally:
                bag.close()
        self.bag_topics = dict(found)  # every topic of the bags, played or not
        if topics is not None:
            unknown = sorted(set(topics) - set(found))
            if unknown:
                raise ValueError(
                    f"--topics {unknown} not in the bag(s) (they have {sorted(found)})"
                )
            found = {t: found[t] for t in topics}
        found.pop(CLOCK_TOPIC, None)
        for t in exclude:
            found.pop(t, None)
        if not found:
            raise ValueError("no topic left to play")
        self._check_first_messages(found)
        return found

    def _check_first_messages(self, types: dict[str, str]) -> None:
        """Deserialize the first message of each topic into its rclpy type (exact bytes)."""
        pending = set(types)
        for path in self.bag_paths:
            if not pending:
                return
            bag = open_bag(path)
            try:
                for topic in sorted(pending):
                    first = bag.first_message(topic)
                    if first is None:
                        continue
                    pending.discard(topic)
                    try:
                        deserialize_message(first[2], import_type(topic, types[topic]))
                    except Exception as exc:
                        raise ValueError(
                            f"bag {path} topic {topic}: its first message does not "
                            f"deserialize as {types[topic]} ({exc})"
                        ) from exc
            finally:
                bag.close()

    # -------------------------------------------------------------- the playback clock
    def now_ns(self) -> int:
        """The playback clock now (the bag time being played)."""
        with self._lock:
            if self._frozen_ns is not None:
                return self._frozen_ns
            return self._bag0 + int((time.monotonic() - self._wall0) * self.rate * NS)

    def freeze(self, t_ns: int) -> None:
        """Stand the clock at t_ns (until `run_from`)."""
        with self._lock:
            self._frozen_ns = int(t_ns)

    def run_from(self, t_ns: int) -> None:
        """Let the clock run from t_ns now."""
        with self._lock:
            self._bag0, self._wall0, self._frozen_ns = int(t_ns), time.monotonic(), None

    def publish_clock(self, t_ns: int) -> None:
        self.clock_ns = int(t_ns)
        self._clock_pub.publish(Clock(clock=_stamp(t_ns)))

    def hold(self, t_ns: int, seconds: float | None, until: Any = None) -> bool:
        """Publish the standing clock t_ns for `seconds` wall time or until `until()` is true;
        False when stopped."""
        self.freeze(t_ns)
        end = None if seconds is None else time.monotonic() + seconds
        while not self.stop_event.is_set():
            self.publish_clock(t_ns)
            if until is not None and until():
                return True
            if end is not None and time.monotonic() >= end:
                return True
            time.sleep(
                PAUSED_CLOCK_S if end is None else min(PAUSED_CLOCK_S, end - time.monotonic())
            )
        return False

    def _on_pause(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            if not self._paused and self._frozen_ns is None:
                now = self._bag0 + int((time.monotonic() - self._wall0) * self.rate * NS)
                self._frozen_ns = max(now, self.clock_ns)
            self._paused = True
            resp.success, resp.message = (
                True,
                json.dumps({"paused": True, "time_ns": self._frozen_ns}),
            )
        return resp

    def _on_unpause(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self._paused = False
            resp.success, resp.message = True, json.dumps({"paused": False})
        return resp

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    # -------------------------------------------------------------- playing
    def wait_unpaused(self) -> bool:
        """While paused: republish the standing clock; then run on from it."""
        if not self.paused:
            return True
        t = self.now_ns()
        while self.paused:
            if self.stop_event.is_set():
                return False
            self.publish_clock(t)
            time.sleep(PAUSED_CLOCK_S)
        self.run_from(t)
        return True

    def _wait_until(self, t_ns: int) -> bool:
        """Publish /clock at clock_hz until the playback clock reaches t_ns; False if stopped."""
        next_clock = time.monotonic()
        while True:
            if self.stop_event.is_set():
                return False
            if self.paused and not self.wait_unpaused():
                return False
            now_ns = self.now_ns()
            if now_ns >= t_ns:
                return True
            wall = time.monotonic()
            if wall >= next_clock:
                self.publish_clock(max(now_ns, self.clock_ns))
                next_clock = wall + self.clock_period
            due = wall + (t_ns - now_ns) / (self.rate * NS)
            time.sleep(max(0.0, min(due, next_clock) - time.monotonic()))

    def play_bag(self, path: Path) -> bool:
        """Play one bag from its first message; False if stopped."""
        bag: OpenBag = open_bag(path)
        try:
            started = False
            for conn, t_ns, raw in bag.messages(set(self.publishers)):
                if not started:  # the clock starts here (back, after a loop or an earlier bag)
                    self.run_from(t_ns)
                    self.publish_clock(t_ns)
                    started = True
                if not self._wait_until(t_ns):
                    return False
                if t_ns > self.clock_ns:
                    self.publish_clock(t_ns)
                self.publishers[conn.topic].publish(bytes(raw))
                self.counts[conn.topic] = self.counts.get(conn.topic, 0) + 1
            if started:
                self.freeze(self.clock_ns)
            return True
        finally:
            bag.close()

    def play(self, loop: bool) -> bool:
        """All bags in order (again and again with `loop`); False if stopped."""
        while True:
            for path in self.bag_paths:
                if not self.play_bag(path):
                    return False
            if not loop:
                return True


def import_type(topic: str, msgtype: str) -> type:
    try:
        return import_msg_class(msgtype)
    except ValueError as exc:
        raise ValueError(f"topic {topic}: {exc}") from exc


def _stamp(t_ns: int) -> Any:
    from builtin_interfaces.msg import Time

    return Time(sec=int(t_ns // NS), nanosec=int(t_ns % NS))


def run(args: argparse.Namespace, ros_args: list[str]) -> dict[str, Any] | None:
    """Play (and compare); returns the comparison report with --compare."""
    t0 = time.monotonic()
    bags = find_bags(args.bags)
    if args.compare:
        from diffusion_policy_node.ros.play_compare import CommandRecorder, Comparison
    comparison = Comparison(args, bags) if args.compare else None
    exclude = [g.topic for g in comparison.groups] if comparison else []
    if comparison and args.topics:
        overlap = sorted(set(args.topics) & set(exclude))
        if overlap:
            raise ValueError(
                f"--topics {overlap}: the policy node publishes these with --compare; they are "
                "compared, not played"
            )
    rclpy.init(args=[sys.argv[0], *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node(args.node_name)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    player: BagPlayer | None = None
    try:
        player = BagPlayer(node, bags, args.topics, args.rate, args.clock_hz, exclude)
        recorder = CommandRecorder(node, player, comparison.groups) if comparison else None
        spinner.start()
        print(
            f"dp-play: {len(bags)} bag(s), topics {player.topics}, rate {args.rate:g}"
            + (f", comparing /{comparison.policy_name}" if comparison else ""),
            file=sys.stderr,
            flush=True,
        )
        if comparison is not None:
            comparison.start_policy()
            comparison.wait_ready(node, player)
        if args.delay and not player.hold(player.start_ns or 0, args.delay):
            return None
        if args.start_paused:
            player._on_pause(Trigger.Request(), Trigger.Response())
            player.freeze(player.start_ns or 0)
            print("dp-play: paused; call ~/unpause to play", file=sys.stderr, flush=True)
            if not player.wait_unpaused():
                return None
        player.play(args.loop)
        if comparison is None:
            return None
        player.hold(player.clock_ns, 0.5)  # commands still in flight
        return comparison.report(recorder, player, time.monotonic() - t0)
    finally:
        if player is not None:
            player.stop_event.set()
        if comparison is not None:
            comparison.stop_policy()
        executor.shutdown(timeout_sec=2.0)
        if spinner.is_alive():
            spinner.join(timeout=2.0)
        node.destroy_node()
        rclpy.try_shutdown()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Console entry point; `--help` without ROS. Exit 0 (also on Ctrl-C/SIGTERM of a plain
    playback), 2 on bad arguments or bags, 1 when the comparison failed, 130 when Ctrl-C ended
    a comparison."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    args = build_parser().parse_args(argv[:cut])
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up as Ctrl-C does
    try:
        check_args(args)
        report = run(args, argv[cut:])
    except KeyboardInterrupt:  # the end of a plain (looping) playback; no report with --compare
        return 130 if args.compare else 0
    except ValueError as exc:  # BagReadError, CheckpointError included
        print(f"dp-play: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"dp-play: {exc}", file=sys.stderr)
        return 1
    if report is not None:
        from diffusion_policy_node.train.replay import error_lines

        for line in error_lines(report["per_joint"]):
            print(line, file=sys.stderr)
        print(
            f"dp-play: compared {report['compared']}/{report['steps']} steps, MAE "
            f"{report['mae']:.5f}, RMSE {report['rmse']:.5f}, figure {report['png']}",
            file=sys.stderr,
        )
        print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
