"""Request -> chunk latency and CPU cost of the streaming encoder, on and off.

A camera at `--camera-hz` offers a new frame (random pixels) to an `InferenceWorker` as it
arrives, exactly as policy_node's camera callback does (`Controller.offer_image` ->
`offer_frame`); a control tick at `--rate-hz` samples the newest frame and state into the
observation window, and every `n_action_steps` ticks a chunk is requested from that window
(receding horizon, as the node does when inference is faster than a chunk). The ticks are half
a camera period after a frame, the mean age of the newest frame. With the streaming encoder
(parameter `stream_encoder`) the worker encodes each frame when it arrives, so the request
finds its frames encoded; without it, the request encodes the whole window.

Each case runs in its own process (the node's inference child is one too), cases alternate
(off, on, off, on, ...) so both see the same machine load. Per case: p50/p99 request -> chunk
latency (worker clock, as /diagnostics reports it), CPU seconds per second of the process
(all its threads, `time.process_time`), frames encoded per second, cache hits per request.

    .venv/bin/python bench/streaming_encoder.py                  # bundled checkpoints + small
    .venv/bin/python bench/streaming_encoder.py --models small --seconds 20 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:  # run as a script: bench/ is on sys.path
    from _common import machine_line, percentile
except ImportError:  # imported as bench.streaming_encoder
    from bench._common import machine_line, percentile

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("sim_arm_diffusion", "ur5e_pick_place")


def load(model: str):
    """A bundled checkpoint (models/<name>) or a random-weight preset (config/policy/<name>)."""
    import torch

    from diffusion_policy_node.policy.checkpoint import load_checkpoint
    from diffusion_policy_node.runtime.settings import PolicyNodeParams

    defaults = PolicyNodeParams(checkpoint="unused")
    if (REPO / "models" / model).is_dir():
        return load_checkpoint(
            REPO / "models" / model,
            device=torch.device("cpu"),
            acceleration=defaults.acceleration,
            precision=defaults.precision,
        )
    import yaml

    from diffusion_policy_node.policy.accel.precision import apply_precision
    from diffusion_policy_node.policy.config import PolicyConfig
    from diffusion_policy_node.policy.modeling import DiffusionPolicy

    data = yaml.safe_load((REPO / "config" / "policy" / f"{model}.yaml").read_text())
    data.update(state_dim=2, action_dim=2)
    torch.manual_seed(0)
    policy = DiffusionPolicy(PolicyConfig.from_dict(data, where=model)).eval()
    policy.set_inference("ddim", 10)
    apply_precision(policy, defaults.precision, torch.device("cpu"))
    policy.enable_acceleration(defaults.acceleration)
    return policy


def child(args: argparse.Namespace) -> None:
    import numpy as np

    from diffusion_policy_node.policy.constants import OBS_IMAGES, OBS_STATE
    from diffusion_policy_node.runtime.inference_worker import InferenceWorker

    policy = load(args.child)
    c = policy.config
    h, w = c.image_size
    rng = np.random.default_rng(0)
    worker = InferenceWorker(policy, stream_encoder=args.stream, name="bench-inference")
    state = rng.uniform(-1, 1, (1, c.n_obs_steps, c.state_dim)).astype(np.float32)
    window = [rng.integers(0, 256, (c.n_cameras, h, w, 3), np.uint8)] * c.n_obs_steps

    def obs() -> dict:
        images = np.stack([f.transpose(0, 3, 1, 2) for f in window[-c.n_obs_steps :]])[None]
        return {OBS_IMAGES: np.ascontiguousarray(images), OBS_STATE: state}

    worker.warm_up(obs(), n=2)
    frame_dt, tick_dt = 1.0 / args.camera_hz, 1.0 / args.rate_hz
    newest = window[-1]
    latencies: list[float] = []
    t0 = time.monotonic()
    c0 = time.process_time()
    encoded0 = worker.frames.encoded if worker.frames else 0
    hits0 = worker.frames.hits if worker.frames else 0
    next_frame, next_tick, tick = t0, t0 + frame_dt / 2, 0
    while time.monotonic() < t0 + args.seconds:
        now = time.monotonic()
        if now >= next_frame:  # a camera frame arrives
            newest = rng.integers(0, 256, (c.n_cameras, h, w, 3), np.uint8)
            for camera in range(c.n_cameras):
                worker.offer_frame(camera, newest[camera])
            next_frame += frame_dt
        if now >= next_tick:  # a control tick samples the newest frame
            window = [*window[1:], newest]
            if tick % c.n_action_steps == 0 and not worker.busy:
                worker.submit(obs(), now)
            tick += 1
            next_tick += tick_dt
        result = worker.poll()
        if result is not None:
            if not result.ok:
                raise RuntimeError(result.error)
            latencies.append(result.latency_s)
        time.sleep(max(0.0, min(next_frame, next_tick) - time.monotonic()))
    worker.wait(60.0)
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    frames = worker.frames
    row = {
        "model": args.child,
        "stream_encoder": args.stream,
        "requests": len(latencies),
        "latency_p50_ms": round(statistics.median(latencies) * 1e3, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1e3, 2),
        "cpu_s_per_s": round(cpu / wall, 3),
        "frames_encoded_per_s": round(((frames.encoded if frames else 0) - encoded0) / wall, 1),
        "hits_per_request": round((frames.hits - hits0) / max(1, len(latencies)), 2)
        if frames
        else 0,
        "n_obs_steps": c.n_obs_steps,
        "n_cameras": c.n_cameras,
        "threads": __import__("torch").get_num_threads(),
        "seconds": round(wall, 1),
    }
    worker.close()
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join([*BUNDLED, "small"]))
    parser.add_argument("--seconds", type=float, default=12.0, help="per case and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--rate-hz", type=float, default=10.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(json.dumps(machine_line()), flush=True)
    for model in args.models.split(","):
        rows: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.rounds):
            for stream in (False, True):
                cmd = [sys.executable, __file__, "--child", model, "--seconds", str(args.seconds)]
                cmd += ["--camera-hz", str(args.camera_hz), "--rate-hz", str(args.rate_hz)]
                cmd += ["--stream"] if stream else []
                load0 = os.getloadavg()[0]
                out = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(f"{model} stream={stream} failed:\n{out.stderr[-3000:]}")
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                rows[stream].append(row)
                print(json.dumps(row), flush=True)
        summary = {"model": model, "summary": True}
        for stream, name in ((False, "off"), (True, "on")):
            r = rows[stream]
            summary[f"latency_p50_ms_{name}"] = round(
                statistics.median(x["latency_p50_ms"] for x in r), 2
            )
            summary[f"latency_p99_ms_{name}"] = max(x["latency_p99_ms"] for x in r)
            summary[f"cpu_s_per_s_{name}"] = round(
                statistics.median(x["cpu_s_per_s"] for x in r), 3
            )
        summary["latency_ratio_off_on"] = round(
            summary["latency_p50_ms_off"] / summary["latency_p50_ms_on"], 2
        )
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
