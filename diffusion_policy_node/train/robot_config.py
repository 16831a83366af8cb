"""`dp-config BAG... --out config/train/my_robot.yaml`: a starter training config from bags.

Reads the bags once (rosbags, no ROS needed) and writes a commented YAML that `dp-train`
takes as is:

- cameras: every sensor_msgs/Image and CompressedImage topic, with encoding, size and rate;
- the state: every joint of the sensor_msgs/JointState topic (by name, first-seen order; a name
  twice in one message is refused);
- the action groups: one per recorded command topic, i.e. per controller —
  a trajectory_msgs/JointTrajectory topic (its joint_names) or a std_msgs/Float64MultiArray
  topic (its values are matched, in JointState order, to the joints no trajectory commands;
  check that order). Observed joints that no topic commands stay in the state only (nothing
  commanded them in the demonstrations); without any command topic, one `source: next_state`
  group commands every joint;
- dt: the period of the fastest command topic; without commands, 0.1 s. Rates are message
  counts over the header-stamp time span (record time only for topics without stamps): record
  times bunch up when the recorder is busy, and their gaps mislead;
- policy: `preset: NAME` of config/policy/NAME.yaml (`--preset`, the one definition of sizes);
- train: threads and batch for this machine and the steps that fit `--minutes` (default 30) at
  the steps/s measured here with that preset (train/cost.py), printed with the estimate.

The file says where each value came from; edit it before training (drop a camera, rename a
group).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from diffusion_policy_node.action_groups import ActionGroup, check_groups
from diffusion_policy_node.data.bag_sources import BagReadError, find_bags, open_bag

from .config import policy_preset, policy_presets, run_config_from_dict
from .cost import (
    MIN_USEFUL_STEPS,
    MachinePlan,
    auto_preset,
    machine_plan,
    measure_steps_per_s,
    steps_for_budget,
)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
ARRAY = "std_msgs/msg/Float64MultiArray"
KINDS = (IMAGE, COMPRESSED, JOINT_STATE, TRAJECTORY, ARRAY)
DEFAULT_DT = 0.1
# Messages read per topic and bag for rates and contents (enough for a rate, cheap on long bags).
SAMPLE = 400
HEADER_FIRST = (IMAGE, COMPRESSED, JOINT_STATE, TRAJECTORY)  # std_msgs/Header is field 1


def cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp (ns) of a CDR message whose first field is a std_msgs/Header: after the
    4-byte encapsulation, int32 sec and uint32 nanosec (0 when unset or unreadable)."""
    if len(raw) < 12:
        return 0
    order = "little" if raw[1] & 1 else "big"
    sec = int.from_bytes(raw[4:8], order, signed=True)
    nanosec = int.from_bytes(raw[8:12], order)
    return sec * 1_000_000_000 + nanosec if sec > 0 else 0


@dataclass
class TopicInfo:
    """What the bags say about one topic."""

    topic: str
    msgtype: str
    count: int = 0
    intervals: int = 0  # sampled messages - 1, summed over bags
    span_ns: int = 0  # time from first to last sampled message, summed over bags
    stamped: bool = False  # the span is measured on header stamps
    names: list[str] = field(default_factory=list)  # joints (JointState, JointTrajectory)
    width: int = 0  # values of a Float64MultiArray
    detail: str = ""  # camera encoding and size

    @property
    def rate_hz(self) -> float | None:
        """Messages per second: sampled message count over their time span."""
        return self.intervals * 1e9 / self.span_ns if self.span_ns > 0 else None


def inspect_bags(paths: list[str]) -> tuple[list[Path], dict[str, TopicInfo]]:
    """(bags, topic -> TopicInfo) for the topics dp-config understands."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    bags = find_bags(paths)
    topics: dict[str, TopicInfo] = {}
    for path in bags:
        bag = open_bag(path)
        try:
            wanted = {t for t, m in bag.topics.items() if m in KINDS}
            seen: Counter[str] = Counter()
            times: dict[str, list[int]] = {}  # header stamps (record times if unstamped)
            for conn, record_ns, raw in bag.messages(wanted):
                info = topics.setdefault(conn.topic, TopicInfo(conn.topic, conn.msgtype))
                if info.msgtype != conn.msgtype:
                    raise BagReadError(
                        f"bag {path} topic {conn.topic}: type {conn.msgtype}, but "
                        f"{info.msgtype} in another bag; record the same topics in every bag"
                    )
                info.count += 1
                seen[conn.topic] += 1
                if seen[conn.topic] > SAMPLE:
                    continue
                stamp = cdr_stamp_ns(raw) if conn.msgtype in HEADER_FIRST else 0
                times.setdefault(conn.topic, []).append(stamp or record_ns)
                info.stamped = info.stamped or bool(stamp)
                if seen[conn.topic] <= 20 or conn.msgtype == JOINT_STATE:
                    where = f"bag {path} topic {conn.topic} message {seen[conn.topic] - 1}"
                    _read_contents(info, store.deserialize_cdr(raw, conn.msgtype), where)
        finally:
            bag.close()
        for topic, ts in times.items():  # rates within one bag, not across bags
            if len(ts) > 1:
                topics[topic].intervals += len(ts) - 1
                topics[topic].span_ns += max(ts) - min(ts)
    return bags, topics


def _read_contents(info: TopicInfo, msg: Any, where: str) -> None:
    if info.msgtype in (JOINT_STATE, TRAJECTORY):
        names = list(msg.name if info.msgtype == JOINT_STATE else msg.joint_names)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            field_name = "name" if info.msgtype == JOINT_STATE else "joint_names"
            raise BagReadError(
                f"{where} field {field_name}: joint(s) {twice} appear more than once in one "
                "message; fix the publisher (a joint has one position)"
            )
        info.names += [n for n in names if n not in info.names]
    elif info.msgtype == ARRAY:
        info.width = max(info.width, len(msg.data))
    elif info.msgtype == IMAGE and not info.detail:
        info.detail = f"{msg.encoding} {msg.width}x{msg.height}"
    elif info.msgtype == COMPRESSED and not info.detail:
        info.detail = f"{msg.format}"


def _group_name(topic: str, taken: set[str]) -> str:
    """`/arm_controller/joint_trajectory` -> `arm`; `/gripper_controller/commands` ->
    `gripper`; unique and a valid group name."""
    first = topic.strip("/").split("/")[0]
    base = first.removesuffix("_controller") or "group"
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in base)
    if not base[0].isalpha():
        base = f"g_{base}"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


@dataclass
class Proposal:
    """The starter config dp-config writes, with notes on where each value came from."""

    bags: list[Path]
    cameras: list[TopicInfo]
    joint_state: TopicInfo
    groups: list[ActionGroup]
    dt: float
    notes: list[str]


def propose(bags: list[Path], topics: dict[str, TopicInfo]) -> Proposal:
    """Decide cameras, state, groups and dt; ValueError naming what the bags lack."""
    found = ", ".join(f"{t} ({i.msgtype})" for t, i in sorted(topics.items())) or "none"
    cameras = sorted(
        (i for i in topics.values() if i.msgtype in (IMAGE, COMPRESSED)), key=lambda i: i.topic
    )
    if not cameras:
        raise ValueError(
            f"no sensor_msgs/Image or CompressedImage topic in the bags (topics: {found})"
        )
    states = [i for i in topics.values() if i.msgtype == JOINT_STATE]
    if not states:
        raise ValueError(f"no sensor_msgs/JointState topic in the bags (topics: {found})")
    state = max(states, key=lambda i: (i.topic == "/joint_states", len(i.names)))
    notes = []
    if len(states) > 1:
        notes.append(f"several JointState topics {[s.topic for s in states]}: took {state.topic}")
    joints = list(state.names)
    groups: list[ActionGroup] = []
    taken: set[str] = set()
    covered: set[str] = set()
    for info in sorted(topics.values(), key=lambda i: i.topic):
        if info.msgtype != TRAJECTORY or not info.names:
            continue
        extra = [n for n in info.names if n not in joints]
        if extra:
            notes.append(f"{info.topic} commands {extra}, not in {state.topic}: left out")
        names = [n for n in info.names if n in joints and n not in covered]
        if not names:
            continue
        name = _group_name(info.topic, taken)
        taken.add(name)
        covered.update(names)
        groups.append(ActionGroup(name, tuple(names), info.topic, "JointTrajectory"))
    for info in sorted(topics.values(), key=lambda i: i.topic):
        if info.msgtype != ARRAY or info.width == 0:
            continue
        free = [j for j in joints if j not in covered]
        if len(free) < info.width:
            notes.append(
                f"{info.topic}: {info.width} value(s) but only {free} are not commanded by a "
                "trajectory topic: left out (add its group by hand)"
            )
            continue
        names = free[-info.width :] if info.width < len(free) else free
        name = _group_name(info.topic, taken)
        taken.add(name)
        covered.update(names)
        groups.append(ActionGroup(name, tuple(names), info.topic, "Float64MultiArray"))
        notes.append(
            f"{info.topic} (Float64MultiArray, {info.width} value(s)) matched to {names} by "
            "JointState order: check that this is the controller's joint order"
        )
    rest = [j for j in joints if j not in covered]
    if rest and groups:
        notes.append(
            f"joints {rest} are observed but no recorded topic commands them: state only "
            "(add an action group with their controller's topic to command them)"
        )
    elif rest:
        groups.append(
            ActionGroup(
                _group_name("/rest", taken),
                tuple(rest),
                "/rest_controller/commands",
                "JointTrajectory",
                "next_state",
            )
        )
        notes.append(
            f"no recorded command topic: the action is the next joint positions of {rest} "
            "(set the group's topic to their controller's command topic)"
        )
    check_groups(groups, joints, where="dp-config")
    periods = [
        1.0 / i.rate_hz
        for g in groups
        if g.source == "command"
        for i in [topics[g.topic]]
        if i.rate_hz
    ]
    if periods:
        dt = round(min(periods), 3)
        notes.append(f"dt {dt:g} s: the period of the fastest command topic")
    else:
        dt = DEFAULT_DT
        notes.append(f"dt {dt:g} s: no command rate measured (the default)")
    return Proposal(bags, cameras, state, groups, max(dt, 0.001), notes)


def _rate(info: TopicInfo) -> str:
    rate = info.rate_hz
    if not rate:
        return "rate unknown"
    return f"{rate:.1f} Hz" + ("" if info.stamped else " (record time: no header)")


@dataclass
class TrainPlan:
    """The train: section and what it costs here."""

    plan: MachinePlan
    steps: int
    steps_per_s: float
    how: str  # "measured here" or "given (--steps-per-s)"

    @property
    def minutes(self) -> float:
        return self.steps / self.steps_per_s / 60

    def lines(self) -> list[str]:
        p = self.plan
        every = max(100, self.steps // 10 // 100 * 100)
        threads = (
            f"  torch_threads: {p.torch_threads}"
            f"               # {p.cores} usable core(s): one thread per two cores"
        )
        return [
            f"  # {self.steps_per_s:.2f} steps/s {self.how} ({p.describe()}): "
            f"{self.steps} steps take about {self.minutes:.0f} min",
            f"  steps: {self.steps}",
            f"  batch_size: {p.batch_size}",
            f"  device: {p.device}",
            threads,
            f"  warmup_steps: {min(500, self.steps // 10)}",
            "  val_fraction: 0.1",
            f"  val_every: {every}",
            f"  checkpoint_every: {every}",
        ]


def render(p: Proposal, preset: str, train: TrainPlan) -> str:
    """The YAML text (hand-written so it can carry comments)."""
    lines = [
        f"# Written by dp-config from {len(p.bags)} bag(s) ({p.bags[0]}"
        + (", ..." if len(p.bags) > 1 else "")
        + "). Edit it, then:",
        "#   dp-train --config <this file> --data <bags...> --out runs/my_robot",
        "# policy: a size preset of config/policy/; data: which topics of the bags, on what time",
        "# grid; train: TrainConfig fields. Override any value with --set SECTION.FIELD=VALUE.",
        "# Notes:",
        *[f"#   - {n}" for n in p.notes],
        "policy:",
        f"  preset: {preset}   # config/policy/{preset}.yaml; fields added here override it:",
        *[f"  #   {k}: {_flow(v)}" for k, v in policy_preset(preset).items()],
        "data:",
        "  camera_topics:",
        *[
            f"    - {c.topic}   # {c.msgtype.split('/')[-1]} {c.detail}, {_rate(c)}"
            for c in p.cameras
        ],
        "  image_size: [96, 96]          # [height, width] every camera is resized to",
        f"  joint_state_topic: {p.joint_state.topic}   # {_rate(p.joint_state)}",
        f"  joint_names: [{', '.join(p.joint_state.names)}]   # the state (observed joints)",
        _timestamp_line(p),
        f"  dt: {p.dt:g}",
        "  episode_split: bag            # one bag per episode (recorder_node, dp-collect)",
        "  n_obs_steps: 2",
        "  horizon: 16",
        "  n_action_steps: 8",
        "  window_end: hold              # every step an observation, hold after the end",
        "  # One group per controller: the action vector is their joints concatenated;",
        "  # policy_node publishes each group to its topic (JointTrajectory: chunks for a",
        "  # joint_trajectory_controller; Float64MultiArray: one command per tick).",
        "  action_groups:",
    ]
    for g in p.groups:
        lines += [
            f"    - name: {g.name}",
            f"      joints: [{', '.join(g.joints)}]",
            f"      topic: {g.topic}",
            f"      type: {g.type}",
            f"      source: {g.source}"
            + ("   # recorded commands" if g.source == "command" else "   # state one step later"),
        ]
    lines += ["train:", *train.lines()]
    return "\n".join(lines) + "\n"


def _timestamp_line(p: Proposal) -> str:
    """Header stamps; a recorded command topic without a header (Float64MultiArray) is mapped
    onto the header clock by the bag reader (data/timebase.py), and the config says so."""
    unstamped = [g.topic for g in p.groups if g.source == "command" and not g.is_trajectory]
    if unstamped:
        return (
            "  timestamp_source: header      # header stamps; "
            f"{', '.join(unstamped)} (no header) mapped onto them"
        )
    return "  timestamp_source: header      # message header stamps (record time: the receipt)"


def _flow(value: Any) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def plan_training(
    p: Proposal,
    preset: str,
    minutes: float,
    steps_per_s: float | None = None,
    machine: MachinePlan | None = None,
) -> TrainPlan:
    """Threads and batch for this machine and the steps that fit `minutes`, at `steps_per_s`
    or at the rate measured here for the preset and the bags' shapes."""
    machine = machine or machine_plan()
    if steps_per_s is None:
        doc = yaml.safe_load(render(p, preset, TrainPlan(machine, 1000, 1.0, "")))
        run = run_config_from_dict(doc, where="dp-config")
        steps_per_s, how = measure_steps_per_s(run.policy, machine), "measured here"
    else:
        how = "given (--steps-per-s)"
    return TrainPlan(machine, steps_for_budget(steps_per_s, minutes), steps_per_s, how)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-config",
        description="Inspect demonstration bags and write a starter training config (cameras, "
        "joints, one action group per recorded controller topic, dt from the command rate).",
        epilog="Example: dp-config bags/ --out config/train/my_robot.yaml",
    )
    parser.add_argument("bags", nargs="+", help="bag folders, storage files or folders of bags")
    parser.add_argument("--out", required=True, help="YAML file to write")
    parser.add_argument(
        "--preset",
        choices=["auto", *sorted(policy_presets())],
        default="auto",
        help="model size: a preset of config/policy/; auto (default): small on CUDA, demo on "
        "a CPU (the bundled checkpoints' size, trains in about 30 min on 2 cores)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="training time to plan for on this machine (default 30): steps = measured "
        "steps/s x minutes",
    )
    parser.add_argument(
        "--steps-per-s",
        type=float,
        help="skip the measurement (a few training steps, ~10-60 s on a CPU) and plan with "
        "this rate",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"dp-config: error: {out} exists (use --force to overwrite)", file=sys.stderr)
        return 2
    try:
        bags, topics = inspect_bags(args.bags)
        proposal = propose(bags, topics)
        machine = machine_plan()
        if args.preset == "auto":
            args.preset = auto_preset(machine)
        if args.steps_per_s is None:
            print(f"dp-config: measuring training steps/s of preset {args.preset} ...",
                  file=sys.stderr)  # fmt: skip
        train = plan_training(proposal, args.preset, args.minutes, args.steps_per_s, machine)
    except ValueError as exc:  # BagReadError included
        print(f"dp-config: error: {exc}", file=sys.stderr)
        return 1
    text = render(proposal, args.preset, train)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    print(f"dp-config: wrote {out} ({len(proposal.groups)} action group(s))", file=sys.stderr)
    print(
        f"dp-config: expected {train.steps_per_s:.2f} training steps/s ({train.how}; "
        f"{train.plan.describe()}): {train.steps} steps, about {train.minutes:.0f} min",
        file=sys.stderr,
    )
    if train.steps_per_s * args.minutes * 60 < MIN_USEFUL_STEPS:
        print(
            f"dp-config: warning: fewer than {MIN_USEFUL_STEPS} steps fit {args.minutes:g} min "
            f"with preset {args.preset} here; a policy rarely works with so few. Use "
            + ("" if args.preset == "demo" else "a smaller preset (--preset demo), ")
            + "more --minutes, a less busy machine, or a GPU.",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
