"""Bag -> training cache throughput, next to plain `rosbags` deserialization of the same bag.

Generates a realistic demonstration bag (default: 640x480 rgb8 camera at 30 Hz for 20 s, joint
states at 200 Hz in shuffled order, JointTrajectory commands at 10 Hz), then times
  - raw: rosbags Reader + deserialize_cdr of every message (what any bag consumer pays), and
  - cache: `build_cache` (read, pick the frames the 10 Hz grid needs, decode, resize to the
    training size, resample joints/commands, write the memory-mappable arrays).
Each is the median of --runs runs. The bag is read from the page cache (it was just written).
One JSON line per storage format; `ratio` = cache frames/s over raw frames/s.

`--memory-minutes M...` instead measures ingest memory: for each M it writes an M-minute bag
(default 96x96 rgb8 camera at 30 Hz), runs `build_cache` in a child process and samples the
child's RssAnon (/proc/PID/status) every 2 ms: one JSON line per bag with the peak anonymous RSS
and the ingest speed, then one line with the ratio of the largest to the smallest peak (the
goal: < 1.2, i.e. memory independent of the episode length).

    .venv/bin/python bench/ingest.py                    # mcap, 640x480, 20 s
    .venv/bin/python bench/ingest.py --storage sqlite3 mcap --seconds 10
    .venv/bin/python bench/ingest.py --memory-minutes 10 20 --width 96 --height 96
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from diffusion_policy_node.data.bag_reader import bag_files
from diffusion_policy_node.data.cache import build_cache
from diffusion_policy_node.data.config import DataConfig

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
CAMERA = "/camera/image_raw"
JOINTS_TOPIC = "/joint_states"
COMMAND_TOPIC = "/arm_controller/joint_trajectory"
T0 = 1_700_000_000_000_000_000


def _header(t_ns: int) -> object:
    T = TYPESTORE.types
    stamp = T["builtin_interfaces/msg/Time"](sec=int(t_ns // 10**9), nanosec=int(t_ns % 10**9))
    return T["std_msgs/msg/Header"](stamp=stamp, frame_id="camera")


def write_demo_bag(
    path: Path,
    seconds: float = 20.0,
    width: int = 640,
    height: int = 480,
    camera_hz: float = 30.0,
    joint_hz: float = 200.0,
    command_hz: float = 10.0,
    joints: tuple[str, ...] = ("joint1", "joint2", "joint3"),
    storage: str = "mcap",
    seed: int = 0,
) -> dict:
    """Write a demonstration bag; returns counts. Joints follow smooth sinusoids, the image is a
    gradient with a square that moves with the arm (so frames differ), commands lead the state.
    Messages are generated and written in record order, one at a time (long bags fit in memory)."""
    T = TYPESTORE.types
    rng = np.random.default_rng(seed)
    D = len(joints)
    phase = rng.uniform(0, 2 * np.pi, D)

    def q(t: float) -> np.ndarray:
        return 0.8 * np.sin(0.7 * t * (1 + np.arange(D) * 0.3) + phase)

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)], -1)
    base = base.astype(np.uint8)
    side = max(4, min(60, width // 6, height // 6))
    n_frames = int(seconds * camera_hz)
    n_joint = int(seconds * joint_hz)
    n_cmd = int(seconds * command_hz)

    def images() -> Iterator[tuple[int, str, str, object]]:
        for f in range(n_frames):
            t_ns = T0 + round(f / camera_hz * 1e9)
            img = base.copy()
            cx = int((0.5 + 0.4 * np.sin(q(f / camera_hz)[0])) * (width - side))
            cy = int((0.5 + 0.4 * np.sin(q(f / camera_hz)[-1])) * (height - side))
            img[cy : cy + side, cx : cx + side] = (230, 40, 40)
            msg = T["sensor_msgs/msg/Image"](
                header=_header(t_ns),
                height=height,
                width=width,
                encoding="rgb8",
                is_bigendian=0,
                step=width * 3,
                data=img.reshape(-1),
            )
            yield (t_ns + 5_000_000, CAMERA, "sensor_msgs/msg/Image", msg)

    def joint_states() -> Iterator[tuple[int, str, str, object]]:
        for m in range(n_joint):
            t = m / joint_hz
            t_ns = T0 + round(t * 1e9)
            order = rng.permutation(D)
            msg = T["sensor_msgs/msg/JointState"](
                header=_header(t_ns),
                name=[joints[i] for i in order],
                position=q(t)[order].astype(np.float64),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            yield (t_ns + 1_000_000, JOINTS_TOPIC, "sensor_msgs/msg/JointState", msg)

    def commands() -> Iterator[tuple[int, str, str, object]]:
        for m in range(n_cmd):
            t = m / command_hz
            t_ns = T0 + round(t * 1e9)
            points = []
            for k in range(1, 5):
                tfs = round(k * 0.1 * 1e9)
                points.append(
                    T["trajectory_msgs/msg/JointTrajectoryPoint"](
                        positions=q(t + 0.1 * k + 0.2).astype(np.float64),
                        velocities=np.zeros(0),
                        accelerations=np.zeros(0),
                        effort=np.zeros(0),
                        time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=tfs),
                    )
                )
            msg = T["trajectory_msgs/msg/JointTrajectory"](
                header=_header(t_ns), joint_names=list(joints), points=points
            )
            yield (t_ns + 2_000_000, COMMAND_TOPIC, "trajectory_msgs/msg/JointTrajectory", msg)

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for record_ns, topic, msgtype, msg in heapq.merge(
            images(), joint_states(), commands(), key=lambda e: e[0]
        ):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TYPESTORE)
            writer.write(conns[topic], record_ns, TYPESTORE.serialize_cdr(msg, msgtype))
    return {"frames": n_frames, "joint_states": n_joint, "commands": n_cmd}


def data_config(joints: tuple[str, ...] = ("joint1", "joint2", "joint3"), **kw) -> DataConfig:
    values = dict(
        camera_topics=[CAMERA],
        image_size=(96, 96),
        joint_state_topic=JOINTS_TOPIC,
        joint_names=list(joints),
        command_topic=COMMAND_TOPIC,
        dt=0.1,
        n_obs_steps=2,
        horizon=16,
        n_action_steps=8,
    )
    values.update(kw)
    return DataConfig(**values)


def raw_read(path: Path) -> float:
    """Seconds to read and deserialize every message with plain rosbags."""
    start = time.perf_counter()
    with Reader(path) as reader:
        for conn, _, raw in reader.messages():
            TYPESTORE.deserialize_cdr(raw, conn.msgtype)
    return time.perf_counter() - start


# The ingest run whose memory is measured: a fresh interpreter, like dp-train's.
_CHILD = """
import json, sys, time
from diffusion_policy_node.data.cache import build_cache
from diffusion_policy_node.data.config import DataConfig
bag, cache, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
start = time.perf_counter()
info = build_cache(bag, DataConfig(**config), cache)
print(json.dumps({"seconds": time.perf_counter() - start, "steps": info.n_steps}))
"""


def _rss_anon_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_ingest(bag: Path, cache: Path, config: DataConfig) -> dict:
    """build_cache in a child process; its peak RssAnon (sampled every 2 ms) and duration."""
    values = config.to_dict()
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(bag), str(cache), json.dumps(values)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=cache.parent,  # not the repo: PYTHONPATH may point at another checkout to compare
    )
    peak = 0
    while proc.poll() is None:
        kb = _rss_anon_kb(proc.pid)
        if kb is not None:
            peak = max(peak, kb)
        time.sleep(0.002)
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"ingest child failed ({proc.returncode}): {out}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_anon_mb"] = round(peak / 1024, 1)
    return result


def memory_bench(args: argparse.Namespace, work: Path) -> None:
    peaks = []
    for minutes in args.memory_minutes:
        bag = work / f"demo_{minutes:g}min"
        shutil.rmtree(bag, ignore_errors=True)
        t = time.perf_counter()
        counts = write_demo_bag(bag, minutes * 60, args.width, args.height)
        write_s = time.perf_counter() - t
        size_mb = sum(f.stat().st_size for f in bag_files(bag)) / 1e6
        cache = work / f"cache_{minutes:g}min"
        result = measure_ingest(bag, cache, data_config(image_size=(96, 96)))
        shutil.rmtree(cache, ignore_errors=True)
        if not args.workdir:
            shutil.rmtree(bag, ignore_errors=True)
        peaks.append(result["peak_rss_anon_mb"])
        print(
            json.dumps(
                {
                    "bench": "ingest_memory",
                    "minutes": minutes,
                    "image": f"{args.width}x{args.height} rgb8 @30Hz",
                    "frames": counts["frames"],
                    "bag_mb": round(size_mb, 1),
                    "cache_steps": result["steps"],
                    "peak_rss_anon_mb": result["peak_rss_anon_mb"],
                    "ingest_s": round(result["seconds"], 1),
                    "frames_per_s": round(counts["frames"] / result["seconds"], 1),
                    "write_s": round(write_s, 1),
                }
            ),
            flush=True,
        )
    if len(peaks) > 1:
        print(
            json.dumps(
                {
                    "bench": "ingest_memory_ratio",
                    "minutes": args.memory_minutes,
                    "peak_rss_anon_mb": peaks,
                    "largest_over_smallest": round(max(peaks) / min(peaks), 3),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", nargs="+", default=["mcap"], choices=["mcap", "sqlite3"])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--memory-minutes",
        type=float,
        nargs="+",
        default=None,
        metavar="M",
        help="measure peak ingest memory for bags of these lengths instead",
    )
    parser.add_argument("--workdir", default=None, help="where to write the bag (default: tmp)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dp_ingest_"))
    try:
        if args.memory_minutes:
            memory_bench(args, work)
            return
        for storage in args.storage:
            bag = work / f"demo_{storage}"
            shutil.rmtree(bag, ignore_errors=True)
            t = time.perf_counter()
            counts = write_demo_bag(bag, args.seconds, args.width, args.height, storage=storage)
            write_s = time.perf_counter() - t
            size_mb = sum(f.stat().st_size for f in bag_files(bag)) / 1e6
            config = data_config()
            raw_s, cache_s = [], []
            for run in range(args.runs):
                raw_s.append(raw_read(bag))
                t = time.perf_counter()
                info = build_cache(bag, config, work / f"cache_{storage}_{run}")
                cache_s.append(time.perf_counter() - t)
                shutil.rmtree(work / f"cache_{storage}_{run}", ignore_errors=True)
            raw, cache = statistics.median(raw_s), statistics.median(cache_s)
            frames = counts["frames"]
            print(
                json.dumps(
                    {
                        "bench": "ingest",
                        "storage": storage,
                        "image": f"{args.width}x{args.height} rgb8 @30Hz",
                        "seconds": args.seconds,
                        "frames": frames,
                        "messages": sum(counts.values()),
                        "bag_mb": round(size_mb, 1),
                        "cache_steps": info.n_steps,
                        "cache_image_size": list(config.image_size),
                        "frames_per_s": round(frames / cache, 1),
                        "mb_per_s": round(size_mb / cache, 1),
                        "raw_read_frames_per_s": round(frames / raw, 1),
                        "raw_read_mb_per_s": round(size_mb / raw, 1),
                        "ratio": round(raw / cache, 2),
                        "cache_s_runs": [round(s, 3) for s in cache_s],
                        "raw_read_s_runs": [round(s, 3) for s in raw_s],
                        "write_s": round(write_s, 1),
                    }
                ),
                flush=True,
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
