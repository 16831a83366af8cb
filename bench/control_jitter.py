"""Control-loop timing of policy_node while CPU inference runs back to back.

For each case (policy config x control rate x output mode) the bench writes a random-weight
checkpoint, starts `fake_sensors` (96x96 rgb8 at 30 Hz, JointState at 100 Hz) and `policy_node`
(stopped, `inference_margin` 10 s so every tick finds the worker idle and starts the next
inference at once: inference runs back to back), calls `~/start`, lets it run, and reads the
node's own /diagnostics, where the node measures every tick against its ideal grid
`anchor + k*dt` on the node clock. A receiver in another process (bench/jitter_receiver.py)
measures what a controller sees over the same window: arrivals (stream mode) or the times the
executed point changes (chunk mode) against one fixed grid, never re-snapped, and the grid
slots with nothing new (missed). One JSON line for the machine, then one per case:

    rx_p50_ms / rx_p99_ms / rx_max_ms, rx_missed_ticks, rx_events (receiver side, see
    jitter_receiver.py), rx_plan_lead_p50_ms / rx_plan_lead_min_ms (chunk mode: how long
    before its first point a plan arrives), rx_past_points (chunk mode: trajectory points
    whose time had passed when their message arrived: published in the past),
    config, rate_hz, output_mode, p50_ms / p99_ms / max_ms (lateness of each publish vs the
    grid: the moment `publish` returned; every tick in stream mode, the ticks that send a new
    trajectory in chunk mode: published_ticks), tick_start_p50_ms / tick_start_p99_ms (lateness
    of the control thread's wake-up), tick_done_p99_ms (end of the tick's work: sampling the
    observation, handing it to the inference process),
    missed_ticks, ticks,
    obs_to_cmd_ms (p50: newest input stamp of the observation -> first command from its chunk),
    inference_p50_ms, chunks, dry_ticks, overruns (the plan used up before the next chunk:
    the rest of the horizon executes), recv_jitter_p99_ms (stream mode: |interval - dt| of
    the commands as received by this process, DDS included), cpu_node_pct (% of one core),
    cpu_sensors_pct, loadavg (1 min, at the end: other work on the machine shows up here),
    busy (CPU-bound neighbour processes running during the case, `--busy`)

    .venv/bin/python bench/control_jitter.py                       # small+paper, 10/30/50 Hz
    .venv/bin/python bench/control_jitter.py --configs small --rates 30 --modes stream,chunk
    .venv/bin/python bench/control_jitter.py --rates 30 --param control_priority:=50
    .venv/bin/python bench/control_jitter.py --configs small --rates 10 --modes chunk --busy 1
    .venv/bin/python bench/control_jitter.py --param control_priority:=50 --receiver-priority 60

What limits the figures (measured on a 2-core CPU; docs/benchmarks.md has the runs): the Python
work of a tick is ~0.5 ms, most of it in rclpy's `publish` (Fast DDS serialises and sends in the
calling thread); the rest is OS scheduling. When other processes load the machine, the control
thread waits for a core: p99 then grows to 5-30 ms unless the control thread runs with
SCHED_FIFO (`control_priority`), which brings it back to ~2.5 ms. Inference in a child process
(the default) keeps the DDIM loop's Python off the node's GIL and the node at ~10-15 % of a
core; with inference in a thread the control thread still gets the GIL within the node's 1 ms
switch interval, and the two measured close in p99 (the machine's other load dominated).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Trigger

try:  # run as a script: bench/ is on sys.path
    from _common import Child, Neighbours, busy_levels, machine_line
except ImportError:  # imported as bench.control_jitter
    from bench._common import Child, Neighbours, busy_levels, machine_line

from diffusion_policy_node.policy.checkpoint import save_checkpoint
from diffusion_policy_node.policy.config import PolicyConfig
from diffusion_policy_node.policy.modeling import DiffusionPolicy

REPO = Path(__file__).resolve().parents[1]
JOINTS = ["joint1", "joint2", "joint3"]
NODE = "jitter_policy_node"
STREAM_TOPIC = "/bench/commands"


def make_checkpoint(
    config_name: str, rate_hz: float, folder: Path, horizon: int | None = None
) -> Path:
    data = yaml.safe_load((REPO / "config" / "policy" / f"{config_name}.yaml").read_text())
    data.update(state_dim=3, action_dim=3, joint_names=JOINTS, dt=1.0 / rate_hz)
    if horizon is not None:
        data["horizon"] = horizon
    data["camera_topics"] = ["/camera/image_raw"]
    config = PolicyConfig.from_dict(data, where=config_name)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config)
    policy.set_normalizer_stats([-1.0] * 3, [1.0] * 3, [-1.0] * 3, [1.0] * 3)
    return save_checkpoint(policy, folder)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Probe:
    """Bench-side rclpy node: /diagnostics of the policy node, command receive times."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("control_jitter_bench", context=self.context)
        self.diag: list[tuple[float, dict[str, str]]] = []
        self.received: list[float] = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.node.create_subscription(
            Float64MultiArray, STREAM_TOPIC, lambda _m: self.received.append(time.monotonic()), 50
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"{NODE}: policy":
                self.diag.append((time.monotonic(), {kv.key: kv.value for kv in status.values}))

    def next_diag(self, timeout: float = 10.0) -> dict[str, str]:
        start = time.monotonic()
        while time.monotonic() < start + timeout:
            fresh = [d for t, d in list(self.diag) if t > start]
            if fresh:
                return fresh[0]
            time.sleep(0.05)
        raise TimeoutError("no /diagnostics from the policy node")

    def trigger(self, name: str) -> None:
        client = self.node.create_client(Trigger, name)
        if not client.wait_for_service(timeout_sec=30.0):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + 10.0
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not future.result().success:
            raise RuntimeError(f"{name} failed")
        self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _num(d: dict[str, str], key: str) -> float | None:
    value = d.get(key, "")
    return round(float(value), 3) if value not in ("", "nan") else None


def run_case(args: argparse.Namespace, config: str, rate: float, mode: str, tmp: Path) -> dict:
    ckpt = make_checkpoint(config, rate, tmp / f"{config}_{rate:g}", args.horizon)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    log = open(tmp / f"{config}_{rate:g}_{mode}.log", "w")  # noqa: SIM115
    sensors = subprocess.Popen(
        [sys.executable, "-m", "diffusion_policy_node.ros.testing.fake_sensors", "--ros-args",
         "-p", "image_width:=96", "-p", "image_height:=96", "-p", "rate_hz:=30.0"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    topic = STREAM_TOPIC if mode == "stream" else "/bench/joint_trajectory"
    node = subprocess.Popen(
        [sys.executable, "-m", "diffusion_policy_node.ros.policy_node", "--ros-args",
         "-r", f"__node:={NODE}", "-p", f"checkpoint:={ckpt}", "-p", f"output_mode:={mode}",
         "-p", f"output_topic:={topic}", "-p", "start_active:=false",
         "-p", "inference_margin:=10.0", "-p", f"torch_threads:={args.torch_threads}",
         "-p", "warmup_runs:=1", "-p", "max_obs_age:=2.0",
         "-p", "robot_description_topic:=''",  # no URDF: the demonstrated range as limits
         *[a for p in args.param for a in ("-p", p)]],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    # A real controller (ros2_control's controller_manager) runs SCHED_FIFO: --receiver-priority
    # gives the receiver process (all its threads, DDS included) that too.
    rt = ["chrt", "-f", str(args.receiver_priority)] if args.receiver_priority else []
    receiver = Child(
        "receiver",
        [*rt, sys.executable, str(Path(__file__).with_name("jitter_receiver.py")),
         "--topic", topic, "--mode", mode, "--rate", str(rate)],
        env=env,
    )  # fmt: skip
    probe = Probe()
    try:
        deadline = time.monotonic() + 120
        while True:  # node up and inputs arriving
            d = probe.next_diag(timeout=120)
            if d.get("obs_age_ms[/camera/image_raw]") and d.get("obs_age_ms[joint_state]"):
                break
            if time.monotonic() > deadline or node.poll() is not None:
                raise RuntimeError(f"policy node not ready (see {log.name})")
        probe.trigger(f"/{NODE}/start")
        time.sleep(args.settle)
        probe.received.clear()
        cpu0 = cpu_seconds(node.pid), cpu_seconds(sensors.pid), time.monotonic()
        probe.trigger(f"/{NODE}/start")  # already active: restarts the timing statistics
        receiver.request(op="start")
        d0 = probe.next_diag()
        time.sleep(args.seconds)
        rx = receiver.request(op="stop")
        d = probe.next_diag()
        cpu1 = cpu_seconds(node.pid), cpu_seconds(sensors.pid), time.monotonic()
        received = np.array(probe.received)
    finally:
        probe.close()
        receiver.close()
        for proc in (node, sensors):
            proc.send_signal(signal.SIGINT)
        for proc in (node, sensors):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
    wall = cpu1[2] - cpu0[2]
    row = {
        "config": config,
        "rate_hz": rate,
        "output_mode": mode,
        "rx_p50_ms": rx.get("p50_ms"),
        "rx_p99_ms": rx.get("p99_ms"),
        "rx_max_ms": rx.get("max_ms"),
        "rx_missed_ticks": rx["missed_ticks"],
        "rx_events": rx["events"],
        "rx_messages": rx["messages"],
        "rx_plan_lead_p50_ms": rx.get("plan_lead_p50_ms"),
        "rx_plan_lead_min_ms": rx.get("plan_lead_min_ms"),
        "rx_past_points": rx.get("past_points"),
        "horizon": args.horizon,
        "receiver_priority": args.receiver_priority,
        "p50_ms": _num(d, "jitter_p50_ms"),
        "p99_ms": _num(d, "jitter_p99_ms"),
        "max_ms": _num(d, "jitter_max_ms"),
        "tick_start_p50_ms": _num(d, "tick_start_p50_ms"),
        "tick_start_p99_ms": _num(d, "tick_start_p99_ms"),
        "tick_done_p99_ms": _num(d, "tick_done_p99_ms"),
        "published_ticks": int(d["published_ticks"]),
        "missed_ticks": int(d["missed_ticks"]),
        "ticks": int(d["timed_ticks"]),
        "obs_to_cmd_ms": _num(d, "obs_to_cmd_p50_ms"),
        "inference_p50_ms": _num(d, "inference_latency_p50_ms"),
        "chunks": int(d["chunks"]) - int(d0["chunks"]),
        "dry_ticks": int(d["dry_ticks"]) - int(d0["dry_ticks"]),
        "overruns": int(d["overruns"]) - int(d0["overruns"]),
        "cpu_node_pct": round(100 * (cpu1[0] - cpu0[0]) / wall, 1),
        "cpu_sensors_pct": round(100 * (cpu1[1] - cpu0[1]) / wall, 1),
        "torch_threads": args.torch_threads,
        "loadavg": os.getloadavg()[0],
    }
    if mode == "stream" and received.size > 2:
        dev = np.abs(np.diff(received) - 1.0 / rate) * 1e3
        row["recv_jitter_p99_ms"] = round(float(np.percentile(dev, 99)), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="small,paper")
    parser.add_argument("--rates", default="10,30,50")
    parser.add_argument("--modes", default="stream,chunk")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per case")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before the window")
    parser.add_argument(
        "--torch-threads", type=int, default=0, help="node parameter torch_threads (0: default)"
    )
    parser.add_argument(
        "--busy",
        default="0",
        help="N: each case idle and then with N CPU-bound neighbour processes running; or a "
        "comma list of neighbour counts",
    )
    parser.add_argument(
        "--horizon", type=int, default=None, help="override the config's horizon (steps)"
    )
    parser.add_argument(
        "--receiver-priority",
        type=int,
        default=0,
        help="run the receiver under SCHED_FIFO with this priority (chrt -f; needs the "
        "privilege), as a real-time controller would; 0: normal scheduling",
    )
    parser.add_argument(
        "--param", action="append", default=[], help="extra node parameter name:=value"
    )
    args = parser.parse_args()
    levels = busy_levels(args.busy)
    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 30))  # e.g. ROS_DOMAIN_ID=41
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    print(json.dumps(machine_line()), flush=True)
    with tempfile.TemporaryDirectory(prefix="control_jitter_") as tmp:
        for config in args.configs.split(","):
            for rate in (float(r) for r in args.rates.split(",")):
                for mode in args.modes.split(","):
                    for busy in levels:
                        with Neighbours(busy):
                            row = {"busy": busy, **run_case(args, config, rate, mode, Path(tmp))}
                        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
