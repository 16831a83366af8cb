"""`dp-config BAG... --out config/train/my_robot.yaml`: a starter training config from bags.

Reads the bags once (rosbags, no ROS needed) and writes a commented YAML that `dp-train`
takes as is:

- cameras: every sensor_msgs/Image and CompressedImage topic, with encoding, size and rate;
- the state: every joint of the sensor_msgs/JointState topic (by name, first-seen order);
- the action groups: one per recorded command topic, i.e. per controller —
  a trajectory_msgs/JointTrajectory topic (its joint_names) or a std_msgs/Float64MultiArray
  topic (its values are matched, in JointState order, to the joints no trajectory commands;
  check that order) — and `source: next_state` for observed joints that no topic commands;
- dt: the period of the command topics (median, rounded to 1 ms); without commands, 0.1 s.

The file says where each value came from; edit it before training (drop a camera, rename a
group, choose the policy size).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffusion_policy_node.action_groups import ActionGroup, check_groups
from diffusion_policy_node.data.bag_sources import BagReadError, find_bags, open_bag

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
JOINT_STATE = "sensor_msgs/msg/JointState"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
ARRAY = "std_msgs/msg/Float64MultiArray"
KINDS = (IMAGE, COMPRESSED, JOINT_STATE, TRAJECTORY, ARRAY)
DEFAULT_DT = 0.1
# Messages read per topic for rates and contents (enough for a rate, cheap on long bags).
SAMPLE = 400


@dataclass
class TopicInfo:
    """What the bags say about one topic."""

    topic: str
    msgtype: str
    count: int = 0
    gaps: list[int] = field(default_factory=list)  # ns between sampled messages of one bag
    last: int | None = None  # record time of the previous message in the current bag
    names: list[str] = field(default_factory=list)  # joints (JointState, JointTrajectory)
    width: int = 0  # values of a Float64MultiArray
    detail: str = ""  # camera encoding and size

    @property
    def rate_hz(self) -> float | None:
        gaps = [g for g in self.gaps if g > 0]
        return 1e9 / statistics.median(gaps) if gaps else None


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
                if info.last is not None:
                    info.gaps.append(record_ns - info.last)
                info.last = record_ns
                if seen[conn.topic] <= 20 or conn.msgtype == JOINT_STATE:
                    _read_contents(info, store.deserialize_cdr(raw, conn.msgtype))
        finally:
            bag.close()
        for info in topics.values():  # rates within one bag, not across bags
            info.last = None
    return bags, topics


def _read_contents(info: TopicInfo, msg: Any) -> None:
    if info.msgtype in (JOINT_STATE, TRAJECTORY):
        names = list(msg.name if info.msgtype == JOINT_STATE else msg.joint_names)
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
    if rest:
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
            f"joints {rest} are observed but no recorded topic commands them: a next_state "
            "group (set its topic to that controller's command topic, or delete the group "
            "and those joints if they are passive)"
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
    return f"{rate:.1f} Hz" if rate else "rate unknown"


def render(p: Proposal, preset: str) -> str:
    """The YAML text (hand-written so it can carry comments)."""
    lines = [
        f"# Written by dp-config from {len(p.bags)} bag(s) ({p.bags[0]}"
        + (", ..." if len(p.bags) > 1 else "")
        + "). Edit it, then:",
        "#   dp-train --config <this file> --data <bags...> --out runs/my_robot",
        "# policy: PolicyConfig fields (the size); data: which topics of the bags, on what time",
        "# grid; train: TrainConfig fields. Override any value with --set SECTION.FIELD=VALUE.",
        "# Notes:",
        *[f"#   - {n}" for n in p.notes],
        "policy:",
        *_POLICY[preset],
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
    lines += ["train:", *_TRAIN]
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


_POLICY = {
    "small": [
        "  policy_type: diffusion",
        "  crop_shape: [84, 84]",
        "  encoder_width: 32            # ResNet-18 stem width (64: the standard ResNet-18)",
        "  down_dims: [64, 128, 256]    # U-Net width (paper: [512, 1024, 2048])",
        "  num_inference_steps: 10       # DDIM steps per chunk",
    ],
    "paper": [
        "  policy_type: diffusion",
        "  crop_shape: [84, 84]",
        "  encoder_width: 64",
        "  down_dims: [512, 1024, 2048]",
        "  num_inference_steps: 10",
    ],
}
_TRAIN = [
    "  steps: 20000",
    "  batch_size: 64",
    "  device: auto",
    "  torch_threads: null            # null: torch's default (all cores); set it on a shared CPU",
    "  val_fraction: 0.1",
    "  checkpoint_every: 2000",
]


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
        "--preset", choices=sorted(_POLICY), default="small", help="policy size (default small)"
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
    except ValueError as exc:  # BagReadError included
        print(f"dp-config: error: {exc}", file=sys.stderr)
        return 1
    text = render(proposal, args.preset)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    print(f"dp-config: wrote {out} ({len(proposal.groups)} action group(s))", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
