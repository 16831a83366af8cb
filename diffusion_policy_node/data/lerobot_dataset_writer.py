"""`write_lerobot_dataset`: a training cache written as a LeRobotDataset v2.1 folder (the layout
is described in lerobot_dataset.py, which reads such folders back)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from ..action_groups import trajectory_lead
from .config import DataConfig
from .lerobot_dataset import (
    ACTION,
    CHUNK_SIZE,
    CODEBASE_VERSION,
    DATA_PATH,
    DEFAULT_TASK,
    INDEX_FEATURES,
    ROBOT_FILE,
    ROS_FILE,
    STATE,
    VIDEO_CODECS,
    VIDEO_PATH,
    LeRobotDatasetError,
    _pyarrow,
    camera_features,
)


def _fps(dt: float) -> int | float:
    fps = 1.0 / dt
    return round(fps) if abs(fps - round(fps)) < 1e-9 else fps


def _vector_stats(x: np.ndarray) -> dict[str, list]:
    x = np.asarray(x, np.float64)
    return {
        "min": x.min(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "count": [len(x)],
    }


def _image_stats(images: np.ndarray) -> dict[str, list]:
    """LeRobot's image statistics: per channel over all pixels, in [0, 1], shape (3, 1, 1)."""
    x = np.asarray(images, np.float64).reshape(-1, 3) / 255.0
    return {
        "min": x.min(axis=0).reshape(3, 1, 1).tolist(),
        "max": x.max(axis=0).reshape(3, 1, 1).tolist(),
        "mean": x.mean(axis=0).reshape(3, 1, 1).tolist(),
        "std": x.std(axis=0).reshape(3, 1, 1).tolist(),
        "count": [len(images)],
    }


def _aggregate(per_episode: list[dict[str, dict[str, list]]]) -> dict[str, dict[str, list]]:
    """Pooled statistics over episodes (LeRobot's aggregate_stats: weighted mean/variance)."""
    out: dict[str, dict[str, list]] = {}
    for key in per_episode[0]:
        st = [{k: np.asarray(v, np.float64) for k, v in ep[key].items()} for ep in per_episode]
        counts = np.array([s["count"][0] for s in st], np.float64)
        shape = (-1,) + (1,) * st[0]["mean"].ndim
        w = counts.reshape(shape) / counts.sum()
        means = np.stack([s["mean"] for s in st])
        mean = (w * means).sum(axis=0)
        var = (w * (np.stack([s["std"] for s in st]) ** 2 + (means - mean) ** 2)).sum(axis=0)
        out[key] = {
            "min": np.min(np.stack([s["min"] for s in st]), axis=0).tolist(),
            "max": np.max(np.stack([s["max"] for s in st]), axis=0).tolist(),
            "mean": mean.tolist(),
            "std": np.sqrt(var).tolist(),
            "count": [int(counts.sum())],
        }
    return out


def _hf_value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def write_lerobot_dataset(
    cache: Any,
    out: str | Path,
    *,
    task: str = DEFAULT_TASK,
    robot_type: str | None = None,
    video: str | None = None,
) -> dict[str, Any]:
    """Write an opened EpisodeCache (data/cache.py) as a LeRobotDataset v2.1 folder `out`.

    Images are PNG image features in the parquet rows; with `video` ("mp4v": MPEG-4 part 2,
    lossy; "ffv1": lossless) they are mp4 video features written with OpenCV instead.
    `out` must not exist or be empty. Returns a summary (folder, episodes, frames, features).
    """
    if video is not None and video not in VIDEO_CODECS:
        raise LeRobotDatasetError(f"video codec {video!r}: expected one of {list(VIDEO_CODECS)}")
    pa, pq = _pyarrow()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LeRobotDatasetError(f"LeRobotDataset {out}: exists and is not an empty folder")
    config: DataConfig = cache.config
    if cache.n_episodes > CHUNK_SIZE * 1000:
        raise LeRobotDatasetError(f"LeRobotDataset {out}: too many episodes ({cache.n_episodes})")
    fps = _fps(config.dt)
    cams = camera_features(config.camera_topics)
    h, w = config.image_size
    joints = list(config.joint_names)
    action_names = list(config.action_joints)
    features: dict[str, dict[str, Any]] = {}
    for key in cams:
        features[key] = {
            "dtype": "video" if video else "image",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
        }
        if video:
            codec, pix_fmt = VIDEO_CODECS[video][1:]
            features[key]["info"] = {
                "video.height": h,
                "video.width": w,
                "video.codec": codec,
                "video.pix_fmt": pix_fmt,
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            }
    pngs_of = [] if video else cams
    features[STATE] = {"dtype": "float32", "shape": [len(joints)], "names": joints}
    features[ACTION] = {"dtype": "float32", "shape": [len(action_names)], "names": action_names}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in INDEX_FEATURES:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [pa.field(k, struct) for k in pngs_of]
    fields += [
        pa.field(STATE, pa.list_(pa.float32(), len(joints))),
        pa.field(ACTION, pa.list_(pa.float32(), len(action_names))),
        pa.field("timestamp", pa.float32()),
    ]
    fields += [pa.field(k, pa.int64()) for k in INDEX_FEATURES]
    hf = {k: {"_type": "Image"} for k in pngs_of}
    for key, dim in ((STATE, len(joints)), (ACTION, len(action_names))):
        hf[key] = {"feature": _hf_value("float32"), "length": dim, "_type": "Sequence"}
    hf["timestamp"] = _hf_value("float32")
    hf.update({k: _hf_value("int64") for k in INDEX_FEATURES})
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})

    (out / "meta").mkdir(parents=True, exist_ok=True)
    episodes, stats = [], []
    for e in range(cache.n_episodes):
        sl = cache.episode_slice(e)
        n = sl.stop - sl.start
        state = np.asarray(cache.state[sl], np.float32)
        action = np.asarray(cache.action[sl], np.float32)
        images = np.asarray(cache.images[sl])  # (n, N, H, W, 3)
        frame_index = np.arange(n, dtype=np.int64)
        columns: list[Any] = []
        for c in range(len(pngs_of)):
            pngs = []
            for t in range(n):
                ok, buf = cv2.imencode(".png", np.ascontiguousarray(images[t, c, ..., ::-1]))
                if not ok:
                    raise LeRobotDatasetError(f"LeRobotDataset {out}: PNG encoding failed")
                pngs.append({"bytes": buf.tobytes(), "path": None})
            columns.append(pa.array(pngs, type=struct))
        columns += [
            pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), len(joints)),
            pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), len(action_names)),
            pa.array((frame_index / fps).astype(np.float32)),
            pa.array(frame_index),
            pa.array(np.full(n, e, np.int64)),
            pa.array(np.arange(sl.start, sl.stop, dtype=np.int64)),
            pa.array(np.zeros(n, np.int64)),
        ]
        if video:
            for c, key in enumerate(cams):
                _write_video(
                    out
                    / VIDEO_PATH.format(
                        episode_chunk=e // CHUNK_SIZE, video_key=key, episode_index=e
                    ),
                    images[:, c],
                    fps,
                    video,
                )
        path = out / DATA_PATH.format(episode_chunk=e // CHUNK_SIZE, episode_index=e)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_arrays(columns, schema=schema), path)
        ep_stats = {k: _image_stats(images[:, c]) for c, k in enumerate(cams)}
        ep_stats[STATE] = _vector_stats(state)
        ep_stats[ACTION] = _vector_stats(action)
        ep_stats["timestamp"] = _vector_stats((frame_index / fps)[:, None])
        for key, values in zip(
            INDEX_FEATURES,
            (frame_index, np.full(n, e), np.arange(sl.start, sl.stop), np.zeros(n)),
            strict=True,
        ):
            ep_stats[key] = _vector_stats(np.asarray(values)[:, None])
        stats.append(ep_stats)
        episodes.append({"episode_index": e, "tasks": [task], "length": n})

    meta = out / "meta"
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": robot_type,
        "total_episodes": cache.n_episodes,
        "total_frames": cache.n_steps,
        "total_tasks": 1,
        "total_videos": cache.n_episodes * len(cams) if video else 0,
        "total_chunks": math.ceil(cache.n_episodes / CHUNK_SIZE),
        "chunks_size": CHUNK_SIZE,
        "fps": fps,
        "splits": {"train": f"0:{cache.n_episodes}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video else None,
        "features": features,
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    _jsonl(meta / "episodes.jsonl", episodes)
    _jsonl(meta / "tasks.jsonl", [{"task_index": 0, "task": task}])
    _jsonl(
        meta / "episodes_stats.jsonl",
        [{"episode_index": e, "stats": s} for e, s in enumerate(stats)],
    )
    (meta / "stats.json").write_text(json.dumps(_aggregate(stats), indent=1))
    groups = config.groups
    robot = {
        "fps": fps,
        "cameras": dict(zip(cams, config.camera_topics, strict=True)),
        "state_joints": joints,
        "action_groups": [g.to_dict() for g in groups],
        "action_lead": trajectory_lead(groups, config.dt),
    }
    (meta / ROBOT_FILE).write_text(yaml.safe_dump(robot, sort_keys=False))
    ingest = cache.meta.get("ingest", [])
    camera_types: dict[str, str] = {}
    for bag in ingest:
        camera_types.update(bag.get("camera_types") or {})
    ros = {
        "data_config": config.to_dict(),
        "camera_types": camera_types,
        "sources": cache.meta.get("sources", []),
        "episodes": cache.meta.get("episodes", []),
        "ingest": ingest,
    }
    (meta / ROS_FILE).write_text(json.dumps(ros, indent=1))
    return {
        "dataset": str(out),
        "codebase_version": CODEBASE_VERSION,
        "episodes": cache.n_episodes,
        "frames": cache.n_steps,
        "fps": fps,
        "features": list(features),
    }


def _write_video(path: Path, frames: np.ndarray, fps: float, video: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*VIDEO_CODECS[video][0]), fps, (w, h)
    )
    if not writer.isOpened():
        raise LeRobotDatasetError(f"LeRobotDataset video {path}: OpenCV cannot write {video}")
    for rgb in frames:
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    writer.release()


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ------------------------------------------------------------------------------------- read
