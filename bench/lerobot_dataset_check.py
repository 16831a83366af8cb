"""Bags -> `dp-export lerobot` -> LeRobot 0.3.2 opens, compares and trains on the folder.

Needs the peer venv (`make bench-peer`). Run with ours:

    .venv/bin/python bench/lerobot_dataset_check.py [--bags BAG... --config TRAIN.yaml]
        [--train-steps 5] [--keep DIR]

Without --bags it writes three synthetic demonstrations (tests/unit/data_fixtures.py: two
cameras, 200 Hz joint states, JointTrajectory commands) and uses the tiny test config.
1. `dp-export lerobot BAGS --config C --out DIR`, and dp-train's cache of the same bags.
2. In the peer venv (this file with --peer): `LeRobotDataset(root=DIR)` reads every frame;
   state and action are compared with the cache exactly, images (LeRobot's float [0, 1] x 255)
   as max / mean abs difference; then LeRobot's DiffusionPolicy (a tiny config, the dataset's
   stats, its delta_timestamps from n_obs_steps/horizon) trains --train-steps AdamW steps and
   is saved (`save_pretrained`).
3. `dp-import lerobot SAVED --robot DIR/meta/ros_robot.yaml` imports it with the dataset's
   robot mapping, and our policy predicts a chunk from the dataset's first frames.
With --video, LeRobot's video decoders are tried and, when they fail, the mp4s are decoded with
PyAV at LeRobot's timestamps to report the codec loss instead (no training then).
One JSON line: frames, episodes, state/action max abs diff, image max/mean abs diff, the
LeRobot losses, the imported checkpoint's topics/joints/chunk shape, lerobot version, CPU, date.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".venv-peer" / "bin" / "python"


try:  # run as a script: bench/ is on sys.path
    from _common import cpu_model
except ImportError:  # imported as a module of bench
    from bench._common import cpu_model


def peer_main(args: argparse.Namespace) -> None:
    """In LeRobot's venv: open, compare, train (no import of this package here)."""
    import lerobot
    import numpy as np
    import torch
    from lerobot.configs.types import FeatureType
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.datasets.utils import dataset_to_policy_features
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    torch.set_num_threads(1)
    cache = np.load(args.arrays)
    root = Path(args.dataset)
    t0 = time.perf_counter()
    ds = LeRobotDataset("local/ros2_export", root=root)
    open_s = time.perf_counter() - t0
    cams = ds.meta.camera_keys
    n = len(ds)
    if ds.meta.video_keys:
        try:
            ds[0]
        except Exception as exc:
            print(json.dumps(_pyav_check(ds, cache, f"{type(exc).__name__}: {exc}"[:300])))
            return
    assert n == len(cache["state"]), (n, cache["state"].shape)
    state_diff = action_diff = img_max = 0.0
    img_sum = 0.0
    img_count = 0
    for i in range(n):
        item = ds[i]
        state_diff = max(
            state_diff, float(np.abs(item["observation.state"].numpy() - cache["state"][i]).max())
        )
        action_diff = max(
            action_diff, float(np.abs(item["action"].numpy() - cache["action"][i]).max())
        )
        for c, key in enumerate(cams):
            img = (item[key].permute(1, 2, 0).numpy() * 255.0).astype(np.float64)
            diff = np.abs(img - cache["images"][i, c])
            img_max = max(img_max, float(diff.max()))
            img_sum += float(diff.sum())
            img_count += diff.size

    meta = LeRobotDatasetMetadata("local/ros2_export", root=root)
    features = dataset_to_policy_features(meta.features)
    outputs = {k: f for k, f in features.items() if f.type is FeatureType.ACTION}
    inputs = {k: f for k, f in features.items() if k not in outputs}
    h, w = meta.features[cams[0]]["shape"][:2]
    config = DiffusionConfig(
        input_features=inputs,
        output_features=outputs,
        n_obs_steps=args.n_obs_steps,
        horizon=args.horizon,
        n_action_steps=args.n_action_steps,
        crop_shape=(h - 4, w - 4),
        down_dims=(16, 32),
        spatial_softmax_num_keypoints=8,
        diffusion_step_embed_dim=16,
        pretrained_backbone_weights=None,
        device="cpu",
    )
    fps = meta.fps
    delta = {k: [i / fps for i in config.observation_delta_indices] for k in inputs}
    delta["action"] = [i / fps for i in config.action_delta_indices]
    train_ds = LeRobotDataset("local/ros2_export", root=root, delta_timestamps=delta)
    torch.manual_seed(0)
    policy = DiffusionPolicy(config, dataset_stats=meta.stats)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=8, shuffle=True, num_workers=0)
    losses = []
    it = iter(loader)
    for _ in range(args.train_steps):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        loss, _ = policy.forward(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(round(loss.item(), 5))
    if args.save:
        policy.save_pretrained(args.save)
    print(
        json.dumps(
            {
                "lerobot_version": lerobot.__version__,
                "frames": n,
                "episodes": ds.meta.total_episodes,
                "cameras": cams,
                "open_s": round(open_s, 3),
                "state_max_abs_diff": state_diff,
                "action_max_abs_diff": action_diff,
                "image_max_abs_diff": img_max,
                "image_mean_abs_diff": img_sum / max(img_count, 1),
                "lerobot_train_losses": losses,
                "lerobot_train_finite": bool(np.all(np.isfinite(losses))),
            }
        )
    )


def _pyav_check(ds, cache, error: str) -> dict:
    """LeRobot's video decoders fail here: decode the mp4s with PyAV at LeRobot's timestamps
    (the frame whose pts is within 1e-4 s of frame_index / fps) to report the codec loss."""
    import av
    import numpy as np

    meta = ds.meta
    diffs, starts = [], np.r_[0, np.cumsum([meta.episodes[e]["length"] for e in meta.episodes])]
    for e in range(meta.total_episodes):
        for c, key in enumerate(meta.camera_keys):
            with av.open(str(ds.root / meta.get_video_file_path(e, key))) as container:
                stream = container.streams.video[0]
                frames = {
                    round(float(f.pts * stream.time_base) * meta.fps): f.to_ndarray(format="rgb24")
                    for f in container.decode(stream)
                }
            for t in range(starts[e + 1] - starts[e]):
                diffs.append(np.abs(frames[t].astype(int) - cache["images"][starts[e] + t, c]))
    d = np.stack(diffs)
    return {
        "lerobot_video_error": error,
        "frames": len(ds),
        "video_codec": meta.features[meta.camera_keys[0]]["info"]["video.codec"],
        "pyav_image_max_abs_diff": int(d.max()),
        "pyav_image_mean_abs_diff": float(d.mean()),
    }


def _import_check(pretrained: Path, dataset: Path, cache) -> dict:
    """The LeRobot policy trained on the export, imported with the dataset's robot mapping
    (`dp-import lerobot SRC --robot DATASET/meta/ros_robot.yaml`), predicts a chunk."""
    import numpy as np
    import torch

    from diffusion_policy_node.interop.lerobot_cli import import_main
    from diffusion_policy_node.policy.checkpoint import load_checkpoint

    out = pretrained.parent / "imported"
    robot = dataset / "meta" / "ros_robot.yaml"
    if import_main(["lerobot", str(pretrained), "--out", str(out), "--robot", str(robot)]) != 0:
        return {"import": "failed"}
    policy = load_checkpoint(out)
    n_obs = policy.config.n_obs_steps
    batch = {  # the dataset's first frames, uint8 images (B, To, N, 3, H, W)
        "observation.state": torch.from_numpy(np.asarray(cache.state[:n_obs]))[None],
        "observation.images": torch.from_numpy(np.asarray(cache.images[:n_obs]))
        .permute(0, 1, 4, 2, 3)[None]
        .contiguous(),
    }
    try:
        chunk = policy.predict_action_chunk(batch, generator=torch.Generator().manual_seed(0))
        shape = list(chunk.shape)
    except Exception as exc:  # reported, not hidden
        shape = f"{type(exc).__name__}: {exc}"[:200]
    return {
        "import": "ok",
        "imported_camera_topics": policy.config.camera_topics,
        "imported_joint_names": policy.config.joint_names,
        "imported_chunk_shape": shape,
    }


def _synthetic(folder: Path) -> tuple[list[Path], Path]:
    sys.path.insert(0, str(ROOT))
    import yaml

    from tests.factories import tiny_run_doc
    from tests.unit.data_fixtures import CAMERA, BagSpec, write_bag

    cams = (CAMERA, "/wrist/image_raw")
    bags = []
    for i, seconds in enumerate((3.0, 3.5, 4.0)):
        write_bag(folder / f"demo{i}", BagSpec(duration_s=seconds, cameras=cams, seed=i))
        bags.append(folder / f"demo{i}")
    config = folder / "train.yaml"
    config.write_text(yaml.safe_dump(tiny_run_doc(list(cams), folder / "unused_cache")))
    return bags, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", nargs="+", help="bags (default: synthetic demonstrations)")
    parser.add_argument("--config", help="training/data YAML for --bags")
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--keep", help="write the dataset here and keep it")
    parser.add_argument("--video", choices=["mp4v", "ffv1"], help="export mp4 videos")
    parser.add_argument("--peer", nargs=2, metavar=("DATASET", "ARRAYS"), help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    parser.add_argument("--n-obs-steps", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--horizon", type=int, default=8, help=argparse.SUPPRESS)
    parser.add_argument("--n-action-steps", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peer:
        args.dataset, args.arrays = args.peer
        peer_main(args)
        return
    if not PEER.exists():
        sys.exit(f"{PEER} missing: run `make bench-peer` first")
    if bool(args.bags) != bool(args.config):
        sys.exit("--bags and --config go together")
    import numpy as np

    from diffusion_policy_node.data.cache import build_cache, open_cache
    from diffusion_policy_node.data.config import load_data_config
    from diffusion_policy_node.interop.lerobot_cli import export_main

    with tempfile.TemporaryDirectory(prefix="lerobot-ds-") as tmp:
        tmp_path = Path(tmp)
        bags, config_path = (
            ([Path(b) for b in args.bags], Path(args.config))
            if args.bags
            else _synthetic(tmp_path / "bags")
        )
        out = Path(args.keep) if args.keep else tmp_path / "dataset"
        t0 = time.perf_counter()
        rc = export_main(
            ["lerobot", *map(str, bags), "--config", str(config_path), "--out", str(out)]
            + (["--video", args.video] if args.video else [])
        )
        if rc != 0:
            sys.exit(f"dp-export lerobot failed (rc {rc})")
        export_s = time.perf_counter() - t0
        config = load_data_config(config_path)
        cache = open_cache(build_cache(bags, config, tmp_path / "cache").path)
        arrays = tmp_path / "cache.npz"
        np.savez(arrays, images=cache.images, state=cache.state, action=cache.action)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            [
                str(PEER),
                __file__,
                "--peer",
                str(out),
                str(arrays),
                "--train-steps",
                str(args.train_steps),
                "--n-obs-steps",
                str(config.n_obs_steps),
                "--horizon",
                str(config.horizon),
                "--n-action-steps",
                str(config.n_action_steps),
                "--save",
                str(tmp_path / "lerobot_policy"),
            ],
            check=True,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if (tmp_path / "lerobot_policy").is_dir():
            result.update(_import_check(tmp_path / "lerobot_policy", out, cache))
    result.update(
        export_s=round(export_s, 3),
        bags=len(bags),
        image_size=list(config.image_size),
        cpu=cpu_model(),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
