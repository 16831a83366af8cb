"""`dp-eval`: closed-loop evaluation of a checkpoint on the bundled MuJoCo arm, over ROS 2.

    dp-eval --episodes 20 --seed 1000                         # the bundled checkpoint
    dp-eval --checkpoint runs/sim/best --episodes 50 --out runs/sim/eval
    dp-eval --expert --episodes 20 --seed 1000                # the scripted expert, same seeds
    dp-eval --robot my_robot --checkpoint CKPT --episodes 5   # a running robot/sim (protocol)
    dp-eval --operator --checkpoint CKPT --time-limit 30      # a person resets and judges

Starts three processes that talk over ROS 2 topics and services, as on a robot: `sim_node`
(paused between episodes, sim time on /clock), `policy_node` (the checkpoint, `use_sim_time`,
started per episode) and the episode driver (`ros/eval_driver.py`). Episode i uses layout seed
`--seed + i`; the default seeds (1000...) are held out: `dp-collect` demonstrations use 0...N-1.

Output in --out:
  episodes.jsonl   one line per episode: seed, outcome, time, side passed, policy diagnostics
  summary.json     the summary below;  summary.png  outcomes, times to success, sides
  episodes.mp4     the camera view of the first --video-episodes episodes
  logs/            the node logs
The last stdout line is the summary as JSON: episodes, successes, success_rate, checkpoint,
mean time to success (sim s), collisions, failures (with the robot's failure_reasons), timeouts,
sides passed, the command delay (a trajectory's header.stamp, i.e. the policy's tick, to its
application in the sim, in sim ms),
the policy node's tick lateness on the sim clock, missed ticks and inference latency (node clock:
sim time, which runs at --real-time-factor x wall time), and the wall time. With
--compare-expert also the expert's success rate on the same seeds and the ratio.

On another robot (docs/episode_protocol.md): `--robot NAME` drives an already-running node
NAME that implements the episode protocol (`~/reset`, `~/unpause`, `~/report`; a `seed`
parameter if it has seeded layouts); no sim_node is started. `--operator` needs no services:
the terminal asks for the reset (Enter) and for success (y/n), an episode lasts --time-limit
wall seconds or until Enter. Both start a policy_node (`--sim-time` when the robot publishes
/clock) unless `--policy-node NAME` names a running one. Before any episode the driver checks
that the graph offers the checkpoint's camera topics, a JointState with every checkpoint joint
and a controller subscribed to each command topic, and stops naming what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from diffusion_policy_node.eval.collect import TASK_TOPICS, fill_task_defaults
from diffusion_policy_node.eval.graph_requirements import GraphRequirements, requirements_of
from diffusion_policy_node.eval.media import COUNTER_KEYS, plot_eval_summary, reason_suffix
from diffusion_policy_node.eval.operator import Ask, run_operator_driver, terminal_ask
from diffusion_policy_node.eval.processes import (
    add_episode_args,
    check_episode_args,
    driver_command,
    run_driver,
    sim_node_args,
    start_node,
    stop_node,
)
from diffusion_policy_node.policy.checkpoint import CheckpointError, read_config

SIM_NODE = "dp_eval_sim"
POLICY_NODE = "dp_eval_policy"
BUNDLED_MODEL = "sim_arm_diffusion"
# The bundled checkpoint of each sim task (models/<name>): the default --checkpoint.
BUNDLED_MODELS = {"reach": BUNDLED_MODEL, "pick_place": "ur5e_pick_place"}
PACKAGE = "diffusion_policy_node"
RUNNING_WAIT_S = 10.0  # for the services of a --robot / --policy-node that already runs


def bundled_checkpoint(name: str = BUNDLED_MODEL) -> Path:
    """`models/<name>` of this source tree, else of an installed package share (colcon)."""
    candidates = [Path(__file__).resolve().parents[2] / "models" / name]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / "models" / name)
    for path in candidates:
        if (path / "config.yaml").is_file():
            return path
    raise CheckpointError(
        f"bundled checkpoint models/{name} not found (looked in {', '.join(map(str, candidates))})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dp-eval",
        description="Closed-loop evaluation of a policy checkpoint on the MuJoCo arm over ROS 2.",
        epilog="Example: dp-eval --checkpoint runs/sim/best --episodes 20 --seed 1000",
    )
    who = parser.add_mutually_exclusive_group()
    who.add_argument(
        "--checkpoint",
        help="checkpoint folder (default: the bundled one of --task: "
        + ", ".join(f"models/{m} ({t})" for t, m in BUNDLED_MODELS.items())
        + ")",
    )
    who.add_argument("--expert", action="store_true", help="evaluate the scripted expert")
    parser.add_argument(
        "--compare-expert",
        action="store_true",
        help="also run the scripted expert on the same seeds and report the success ratio",
    )
    parser.add_argument("--episodes", type=int, default=20, help="episodes to run")
    parser.add_argument(
        "--seed", type=int, default=1000, help="layout seed of the first episode (held out)"
    )
    parser.add_argument("--out", help="output folder (default: runs/eval-<time>)")
    parser.add_argument(
        "--real-time-factor", type=float, default=1.0, help="simulation speed over wall time"
    )
    parser.add_argument(
        "--output-mode",
        choices=["", "chunk", "stream"],
        default="",
        help="policy_node output_mode ('': each action group as recorded)",
    )
    parser.add_argument(
        "--task",
        choices=sorted(TASK_TOPICS),
        default="reach",
        help="task of the sim_node dp-eval starts (default reach; pick_place: UR5e + "
        "gripper, two cameras, 20 s episodes)",
    )
    parser.add_argument(
        "--num-inference-steps", type=int, default=0, help="denoising steps (0: checkpoint's)"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--video-episodes", type=int, default=3, help="episodes in the mp4")
    parser.add_argument(
        "--policy-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="a policy_node parameter (repeatable), e.g. blend_mode:=ensemble or "
        "inference_delay_ms:=300",
    )
    robot = parser.add_argument_group("another robot (docs/episode_protocol.md)")
    where = robot.add_mutually_exclusive_group()
    where.add_argument(
        "--robot",
        metavar="NODE",
        default="",
        help="drive this running node through the episode protocol (no sim_node is started)",
    )
    where.add_argument(
        "--operator",
        action="store_true",
        help="no reset/success services: ask on the terminal (Enter to reset, y/n for success)",
    )
    robot.add_argument(
        "--urdf",
        metavar="FILE",
        help="the robot's URDF for the started policy_node's joint limits (its "
        "robot_description_file); not given: the node waits for /robot_description "
        "(robot_description_timeout) and fails naming it if it does not come",
    )
    robot.add_argument(
        "--policy-node",
        metavar="NODE",
        default="",
        help="use this running policy_node (its checkpoint must be --checkpoint) instead of "
        "starting one",
    )
    robot.add_argument(
        "--sim-time",
        action="store_true",
        help="--robot/--operator: run the started policy_node with use_sim_time (the robot "
        "publishes /clock)",
    )
    robot.add_argument(
        "--graph-timeout",
        type=float,
        default=5.0,
        help="seconds the topics and joints of the checkpoint may take to appear on the graph "
        f"(the services of --robot / --policy-node: at least {RUNNING_WAIT_S:g} s)",
    )
    add_episode_args(parser)
    parser.set_defaults(camera_rate=None, time_limit=None)  # per --task (collect.TASK_DEFAULTS)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    fill_task_defaults(args, keys=("camera_rate", "time_limit"))
    check_episode_args(args, max_real_time_factor=100)
    if (args.robot or args.operator) and (args.expert or args.compare_expert):
        raise ValueError(
            "--expert and --compare-expert need the bundled sim (not --robot/--operator)"
        )
    if args.sim_time and not (args.robot or args.operator):
        raise ValueError("--sim-time is for --robot/--operator (the bundled sim always uses it)")
    if args.policy_node and args.expert:
        raise ValueError("--policy-node with --expert: the expert needs no policy node")
    if not args.graph_timeout > 0:
        raise ValueError(f"--graph-timeout {args.graph_timeout}: must be > 0")
    if args.real_time_factor == 0 and not args.expert:
        raise ValueError(
            "--real-time-factor 0 (as fast as possible) is only for --expert: the policy "
            "computes in wall time, so the simulation must be paced"
        )
    if args.num_inference_steps < 0:
        raise ValueError(f"--num-inference-steps {args.num_inference_steps}: must be >= 0")
    if args.video_episodes < 0:
        raise ValueError(f"--video-episodes {args.video_episodes}: must be >= 0")
    for item in args.policy_param:
        name, sep, value = item.partition(":=")
        if not sep or not name or not value:
            raise ValueError(
                f"--policy-param {item!r}: expected NAME:=VALUE, e.g. blend_mode:=ensemble"
            )


def _median(values: Any) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.median(v)) if v else None


def _max(values: Any) -> float | None:
    v = [x for x in values if x is not None]
    return float(max(v)) if v else None


def _mean(values: Any) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _smoothness(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Jerk at chunk boundaries vs within chunks over the episodes (means of the episodes'
    means; the ratio of those), and the largest joint acceleration of any episode."""
    boundary = _mean(r.get("jerk_boundary_mean") for r in records)
    within = _mean(r.get("jerk_within_mean") for r in records)
    return {
        "jerk_boundary_mean": boundary,
        "jerk_within_mean": within,
        "jerk_ratio": boundary / within if boundary is not None and within else None,
        "jerk_ratio_median": _median(r.get("jerk_ratio") for r in records),
        "max_acc": _max(r.get("max_acc") for r in records),
    }


def summarize(records: list[dict[str, Any]], policy: str, wall_s: float) -> dict[str, Any]:
    """The summary of the episode records (see the module docstring)."""
    n = len(records)
    successes = [r for r in records if r["success"]]
    last = records[-1] if records else {}
    summary: dict[str, Any] = {
        "policy": policy,
        "episodes": n,
        "successes": len(successes),
        "success_rate": len(successes) / n if n else 0.0,
        "collisions": sum(r["outcome"] == "collision" for r in records),
        "failures": sum(r["outcome"] == "failure" for r in records),
        "timeouts": sum(r["outcome"] == "timeout" for r in records),
        "mean_time_to_success_s": (
            float(np.mean([r["time"] for r in successes])) if successes else None
        ),
        "passed_left": sum(r.get("passed_side") == "left" for r in records),
        "passed_right": sum(r.get("passed_side") == "right" for r in records),
        "seeds": [records[0]["seed"], records[-1]["seed"]] if records else [],
        "command_delay_p50_ms": _median(r.get("command_delay_p50_ms") for r in records),
        "command_delay_max_ms": _max(r.get("command_delay_max_ms") for r in records),
        **_smoothness(records),
        "wall_s": round(wall_s, 1),
    }
    reasons = Counter(r["failure_reason"] for r in records if r.get("failure_reason"))
    if reasons:
        summary["failure_reasons"] = dict(reasons.most_common())
    # The policy node's own figures: percentiles over its life (the last record's), counters
    # summed over the episodes (each record holds its episode's increase). Its tick lateness is
    # measured on its clock, the sim clock here, which moves in /clock steps (5 ms at 200 Hz):
    # read it as "ticks ran within one /clock step"; wall-clock jitter is
    # bench/control_jitter.py's job.
    for key, name in (
        ("jitter_p50_ms", "sim_clock_jitter_p50_ms"),
        ("jitter_p99_ms", "sim_clock_jitter_p99_ms"),
        ("jitter_max_ms", "sim_clock_jitter_max_ms"),
        ("inference_latency_p50_ms", "inference_latency_p50_ms"),
        ("inference_latency_p90_ms", "inference_latency_p90_ms"),
    ):
        if last.get(key) is not None:
            summary[name] = last[key]
    for key in COUNTER_KEYS:
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            summary[key] = int(sum(values))
    return summary


# Tasks whose sim_node publishes the robot's URDF on /robot_description (ros/sim_node.py
# ROBOT_DESCRIPTIONS). The policy node dp-eval starts beside its own sim waits this long for it
# (the sim may take longer to come up than the node's default); the other tasks have no URDF:
# the node runs on the demonstrated range (robot_description_topic ''). A --robot's URDF: --urdf
# FILE, else the node waits for its robot_description_topic and fails naming it.
TASKS_WITH_URDF = ("pick_place",)
OWN_SIM_DESCRIPTION_WAIT_S = 30.0


def _policy_node_args(args: argparse.Namespace, checkpoint: Path, sim_time: bool) -> list[str]:
    own_sim = not (args.robot or args.operator)
    wait = own_sim and args.task in TASKS_WITH_URDF
    if args.urdf:
        urdf = ["-p", f"robot_description_file:={Path(args.urdf).resolve()}"]
    elif wait:
        urdf = ["-p", f"robot_description_timeout:={OWN_SIM_DESCRIPTION_WAIT_S}"]
    elif own_sim:
        urdf = ["-p", "robot_description_topic:=''"]
    else:
        urdf = []
    return [
        "-r", f"__node:={POLICY_NODE}",
        "-p", f"checkpoint:={checkpoint.resolve()}",
        "-p", f"use_sim_time:={'true' if sim_time else 'false'}",
        "-p", "start_active:=false",
        *(["-p", f"output_mode:={args.output_mode}"] if args.output_mode else []),
        "-p", f"num_inference_steps:={args.num_inference_steps}",
        "-p", f"device:={args.device}",
        *urdf,
        *(a for item in args.policy_param for a in ("-p", item)),
    ]  # fmt: skip


def run_episodes(
    args: argparse.Namespace,
    checkpoint: Path | None,
    image_size: tuple[int, int],
    out: Path,
    real_time_factor: float,
    video_episodes: int,
    require: GraphRequirements | None = None,
    ask: Ask | None = None,
) -> tuple[list[dict[str, Any]], str | None, str | None]:
    """Start the nodes, run the episodes, stop the nodes: (records, video path, error)."""
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    expert = checkpoint is None
    own_sim = not (args.robot or args.operator)
    procs = []
    if own_sim:
        sim_args = sim_node_args(
            SIM_NODE,
            expert=expert,
            real_time_factor=real_time_factor,
            camera_rate=args.camera_rate,
            image_size=image_size,
            time_limit=args.time_limit,
            seed=args.seed,
        )
        sim_args += ["-p", f"task:={args.task}"]
        if require is not None:  # running (not paused) until the first reset: joint states
            sim_args += ["-p", "start_paused:=false"]  # flow for the graph check
        procs.append(start_node("sim_node", sim_args, logs / "sim_node.log"))
    policy = "" if expert else (args.policy_node.strip("/") or POLICY_NODE)
    if checkpoint is not None and not args.policy_node:
        sim_time = own_sim or args.sim_time
        procs.append(
            start_node(
                "policy_node",
                _policy_node_args(args, checkpoint, sim_time),
                logs / "policy_node.log",
            )
        )
    # every camera side by side in the video
    camera = ",".join(require.cameras) if require is not None else "/camera/image_raw"
    # Nodes that are already running answer at once, once discovered (discovery: seconds).
    running_wait = max(RUNNING_WAIT_S, args.graph_timeout)
    driver_cmd = driver_command(
        "eval_driver", args, args.robot.strip("/") or SIM_NODE,
        "--policy", policy,
        "--camera-topic", camera,
        "--camera-rate", str(args.camera_rate),
        "--video", str(out / "episodes.mp4") if video_episodes else "",
        "--video-episodes", str(video_episodes),
        "--graph-timeout", str(args.graph_timeout),
        *(["--robot-wait", str(running_wait)] if args.robot else []),
        *(["--policy-wait", str(running_wait)] if args.policy_node else []),
        *(["--require", require.to_json()] if require is not None else []),
        *(["--operator", "--episode-time", str(args.time_limit)] if args.operator else []),
    )  # fmt: skip
    who = "expert" if expert else "policy"

    def report(record: dict[str, Any]) -> dict[str, Any]:
        time_s = record.get("time")
        print(
            f"{who} episode {record['episode']} seed {record['seed']}: "
            f"{record['outcome']}{reason_suffix(record)} "
            f"({time_s if time_s is None else f'{time_s:.2f}'} s, passed "
            f"{record.get('passed_side') or '-'})",
            file=sys.stderr,
            flush=True,
        )
        return record

    try:
        if args.operator:
            records, final, error = run_operator_driver(
                driver_cmd, logs, out / "episodes.jsonl", report, ask or terminal_ask
            )
        else:
            records, final, error = run_driver(driver_cmd, logs, out / "episodes.jsonl", report)
    finally:
        for proc in procs:
            stop_node(proc)
    video = None if final is None else final.get("video")
    if error is not None:
        error = f"{error} (node logs in {logs})"
    return records, video, error


def evaluate(args: argparse.Namespace, ask: Ask | None = None) -> dict[str, Any]:
    """Run the episodes (and the expert's, with --compare-expert); returns the summary (also the
    last stdout line of `main`)."""
    t0 = time.monotonic()
    checkpoint: Path | None = None
    image_size: tuple[int, int] = (96, 96)
    require = None
    if not args.expert:
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else bundled_checkpoint(BUNDLED_MODELS.get(args.task, BUNDLED_MODEL))
        )
        config, meta = read_config(checkpoint)  # CheckpointError before any process starts
        image_size = config.image_size
        require = requirements_of(config, meta)
    out = Path(args.out or f"runs/eval-{time.strftime('%Y%m%d-%H%M%S')}")
    records, video, error = run_episodes(
        args,
        checkpoint,
        image_size,
        out,
        args.real_time_factor,
        args.video_episodes,
        require=require,
        ask=ask,
    )
    policy_name = "expert" if checkpoint is None else str(checkpoint)
    summary = summarize(records, policy_name, time.monotonic() - t0)
    summary["checkpoint"] = None if checkpoint is None else str(checkpoint)
    summary["mode"] = "robot" if args.robot else "operator" if args.operator else "sim"
    if args.robot:
        summary["robot"] = args.robot
    summary["requested"] = args.episodes
    summary["video"] = video
    summary["out"] = str(out)
    if records:
        summary["png"] = str(plot_eval_summary(records, summary, out / "summary.png"))
    if error is None and args.compare_expert and checkpoint is not None:
        # The expert needs no wall-clock pacing: as fast as possible, same seeds.
        expert_records, _, error = run_episodes(args, None, image_size, out / "expert", 0.0, 0)
        expert = summarize(expert_records, "expert", 0.0)
        summary["expert_episodes"] = expert["episodes"]
        summary["expert_success_rate"] = expert["success_rate"]
        if expert["success_rate"] > 0:
            summary["ratio_to_expert"] = round(summary["success_rate"] / expert["success_rate"], 3)
        summary["wall_s"] = round(time.monotonic() - t0, 1)
    if error is not None:
        summary["error"] = error
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def headline(summary: dict[str, Any]) -> str:
    """One human-readable line of the summary."""
    parts = [
        f"success {summary['successes']}/{summary['episodes']} "
        f"({100 * summary['success_rate']:.0f}%)"
    ]
    if "expert_success_rate" in summary:
        parts.append(f"expert {100 * summary['expert_success_rate']:.0f}% on the same seeds")
        if "ratio_to_expert" in summary:
            parts.append(f"ratio {summary['ratio_to_expert']:.2f}")
    if summary.get("mean_time_to_success_s") is not None:
        parts.append(f"mean time to success {summary['mean_time_to_success_s']:.2f} s")
    if summary.get("inference_latency_p50_ms") is not None:
        parts.append(f"inference p50 {summary['inference_latency_p50_ms']:.0f} ms")
    if summary.get("command_delay_p50_ms") is not None:
        delay = f"command delay p50 {summary['command_delay_p50_ms']:.0f} ms"
        if summary.get("command_delay_max_ms") is not None:
            delay += f" (max {summary['command_delay_max_ms']:.0f})"
        parts.append(delay)
    if summary.get("wall_s") is not None:
        parts.append(f"wall {summary['wall_s']:.0f} s")
    if summary.get("video"):
        parts.append(f"video {summary['video']}")
    return "dp-eval: " + " | ".join(parts)


def main(argv: list[str] | None = None, ask: Ask | None = None) -> int:
    """Console entry point; `ask` replaces the terminal prompts of --operator (tests)."""
    args = build_parser().parse_args(argv)
    try:
        _check_args(args)
        summary = evaluate(args, ask=ask)
    except ValueError as exc:  # CheckpointError included
        print(f"dp-eval: {exc}", file=sys.stderr)
        return 2
    error = summary.get("error")
    if error is not None and not summary.get("episodes"):
        # Nothing ran (e.g. the graph check failed): the reason, not "success 0/0".
        print(f"dp-eval: error: {error}", file=sys.stderr, flush=True)
    else:
        print(headline(summary), file=sys.stderr, flush=True)
        if error is not None:
            print(f"dp-eval: error after {summary['episodes']} episode(s): {error}",
                  file=sys.stderr, flush=True)  # fmt: skip
    print(json.dumps(summary), flush=True)
    return 1 if error is not None else 0


if __name__ == "__main__":
    sys.exit(main())
