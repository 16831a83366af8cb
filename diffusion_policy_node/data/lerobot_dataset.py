"""LeRobotDataset v2.1 folders: written from a training cache, read back as a cache source.

The layout (what LeRobot 0.3.x's `LeRobotDataset` reads; `write_lerobot_dataset` in
lerobot_dataset_writer.py writes it):

    meta/info.json              codebase_version v2.1, fps, totals, features, path templates
    meta/episodes.jsonl         {"episode_index", "tasks", "length"} per episode
    meta/tasks.jsonl            {"task_index", "task"}
    meta/episodes_stats.jsonl   per-episode min/max/mean/std/count of every feature
    meta/stats.json             the same over all episodes (read by v2.0 readers)
    meta/ros_robot.yaml         robot mapping (fps, cameras feature -> topic, state_joints,
                                action_groups, action_lead); `dp-import lerobot` reads this format
    meta/ros2.json              the DataConfig that resampled the bags, camera message types,
                                the bags and their ingest summary
    data/chunk-000/episode_000000.parquet   one row per grid step

Each row holds `observation.images.<name>` (one per camera, an `image` feature: a PNG in the
parquet file, lossless), `observation.state`, `action` (float32, exactly the cache's values),
`timestamp` (frame_index / fps), `frame_index`, `episode_index`, `index`, `task_index`.
Images are stored as image features rather than mp4 videos: lossless, and decodable without
FFmpeg (LeRobot's video decoders need torchcodec with a system FFmpeg, or torchvision's
removed VideoReader).

`write_lerobot_dataset(..., video="mp4v" | "ffv1")` writes mp4 video features with OpenCV
instead (videos/chunk-000/<feature>/episode_000000.mp4).

`scan_lerobot` reads a LeRobotDataset folder (v2.0 / v2.1: one parquet per episode; v3.0:
several episodes per parquet and mp4 file; image features, or mp4 videos that OpenCV decodes)
into EpisodePlans for the cache, so `dp-train --data DIR` trains on it like on bags.
pyarrow is needed for both (`pip install diffusion_policy_node[lerobot]`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from .bag_reader import BagScan
from .config import DataConfig
from .images import resize_image
from .resample import EpisodePlan, FrameStore, SkippedItem

CODEBASE_VERSION = "v2.1"
READ_VERSIONS = ("v2.0", "v2.1", "v3.0")
CHUNK_SIZE = 1000
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
ROBOT_FILE = "ros_robot.yaml"
ROS_FILE = "ros2.json"
STATE = "observation.state"
ACTION = "action"
IMAGE_PREFIX = "observation.images."
INDEX_FEATURES = ("frame_index", "episode_index", "index", "task_index")
DEFAULT_TASK = "ROS 2 demonstration"
# --video choice -> (OpenCV fourcc, info.json video.codec, video.pix_fmt)
VIDEO_CODECS = {"mp4v": ("mp4v", "mpeg4", "yuv420p"), "ffv1": ("FFV1", "ffv1", "bgra")}


class LeRobotDatasetError(ValueError):
    """A LeRobotDataset folder cannot be written or read; the message names folder and field."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise LeRobotDatasetError(
            "LeRobotDataset folders need pyarrow: pip install 'diffusion_policy_node[lerobot]' "
            "(or pip install pyarrow)"
        ) from exc
    return pa, pq


def is_lerobot_dataset(path: str | Path) -> bool:
    """A folder with meta/info.json (a LeRobotDataset), as opposed to a bag."""
    return (Path(path) / "meta" / "info.json").is_file()


def camera_features(topics: list[str]) -> list[str]:
    """One LeRobot image feature per camera topic: /top/image_raw -> observation.images.top."""
    generic = {"image_raw", "image", "compressed", "image_rect", "image_rect_color", "color"}
    names: list[str] = []
    for i, topic in enumerate(topics):
        parts = [p for p in topic.split("/") if p and p not in generic]
        name = re.sub(r"[^A-Za-z0-9_]", "_", parts[-1] if parts else f"camera{i}")
        while name in names:
            name = f"{name}_{i}"
        names.append(name)
    return [IMAGE_PREFIX + n for n in names]


# ------------------------------------------------------------------------------------ write


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LeRobotDatasetError(f"LeRobotDataset {path}: unreadable ({exc})") from exc


def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise LeRobotDatasetError(f"LeRobotDataset {path}: unreadable ({exc})") from exc


def _match(where: str, names: Any, wanted: list[str], what: str) -> np.ndarray:
    """Column order that gives `wanted` from a feature with `names` (by name when the feature
    names them all, else by position when the widths agree)."""
    if isinstance(names, dict) and len(names) == 1:
        names = next(iter(names.values()))
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        if set(wanted) <= set(names):
            return np.array([names.index(j) for j in wanted], np.int64)
        if len(names) != len(wanted):
            raise LeRobotDatasetError(
                f"{where}: has {len(names)} values {names}, the data config's {what} "
                f"{len(wanted)} {wanted}"
            )
        return np.arange(len(wanted))
    raise LeRobotDatasetError(f"{where}: no names; cannot match the data config's {what}")


class _Video:
    """Frames of one mp4 decoded with OpenCV in order, by index, one frame held at a time (a
    v3.0 file holds many episodes); asking for an earlier frame reopens the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()

    def _open(self) -> None:
        self.cap = cv2.VideoCapture(str(self.path))
        self.index = -1  # of self.rgb
        self.rgb: np.ndarray | None = None
        if not self.cap.isOpened() or not self._read():
            raise LeRobotDatasetError(
                f"LeRobotDataset video {self.path}: OpenCV decodes no frame (missing file or a "
                "codec OpenCV's FFmpeg lacks, e.g. AV1); re-encode it (ffmpeg -c:v libx264) or "
                "export the dataset with image features"
            )

    def _read(self) -> bool:
        ok, bgr = self.cap.read()
        if ok:
            self.index += 1
            self.rgb = np.ascontiguousarray(bgr[..., ::-1])
        return ok

    def frame(self, i: int) -> np.ndarray:
        if i < self.index:
            self.cap.release()
            self._open()
        while self.index < i:
            if not self._read():
                raise LeRobotDatasetError(
                    f"LeRobotDataset video {self.path}: frame {i} requested, it has "
                    f"{self.index + 1}"
                )
        assert self.rgb is not None
        return self.rgb


def scan_lerobot(path: str | Path, config: DataConfig, frames: FrameStore):
    """Read a LeRobotDataset folder into episodes for the cache (a BagScan), each frame handed
    to `frames`. The dataset's fps must equal 1 / config.dt (it is not resampled); its image
    features map onto config.camera_topics through meta/ros_robot.yaml when present, else in
    order; state and action columns by their names (else position). Episodes shorter than
    config.horizon are skipped and reported, as from bags."""
    _pyarrow()  # missing pyarrow: one clear error before anything is read
    root = Path(path)
    info = _load_json(root / "meta" / "info.json")
    where = f"LeRobotDataset {root}"
    version = info.get("codebase_version")
    if version not in READ_VERSIONS:
        raise LeRobotDatasetError(
            f"{where}: meta/info.json codebase_version {version!r}; this reader handles "
            f"{READ_VERSIONS}"
        )
    fps = float(info.get("fps") or 0)
    if not fps > 0 or abs(1.0 / fps - config.dt) > 1e-9:
        raise LeRobotDatasetError(
            f"{where}: fps {info.get('fps')!r} but data.dt is {config.dt} s; set data.dt to "
            "1/fps (a LeRobotDataset is used on its own time grid, not resampled)"
        )
    features = info.get("features") or {}
    cams = [k for k, f in features.items() if f.get("dtype") in ("image", "video")]
    robot_path = root / "meta" / ROBOT_FILE
    robot = yaml.safe_load(robot_path.read_text()) if robot_path.is_file() else {}
    by_topic = {t: f for f, t in ((robot or {}).get("cameras") or {}).items()}
    if by_topic:
        missing = [t for t in config.camera_topics if t not in by_topic]
        if missing:
            raise LeRobotDatasetError(
                f"{where}: meta/{ROBOT_FILE} maps no image feature to camera topic(s) "
                f"{missing} (it maps {sorted(by_topic)})"
            )
        cam_keys = [by_topic[t] for t in config.camera_topics]
    elif len(cams) == config.n_cameras:
        cam_keys = cams
    else:
        raise LeRobotDatasetError(
            f"{where}: {len(cams)} image/video feature(s) {cams}, data.camera_topics has "
            f"{config.n_cameras}"
        )
    for key in cam_keys:
        if key not in features:
            raise LeRobotDatasetError(f"{where}: meta/info.json has no feature {key!r}")
    for key in (STATE, ACTION):
        if key not in features:
            raise LeRobotDatasetError(f"{where}: meta/info.json has no feature {key!r}")
    state_cols = _match(
        f"{where} feature {STATE}", features[STATE].get("names"), config.joint_names, "joints"
    )
    action_cols = _match(
        f"{where} feature {ACTION}",
        features[ACTION].get("names"),
        list(config.action_joints),
        "action joints",
    )
    ros_path = root / "meta" / ROS_FILE
    ros = _load_json(ros_path) if ros_path.is_file() else {}
    plans: list[EpisodePlan] = []
    skipped: list[SkippedItem] = []
    steps = 0
    videos: dict[Path, _Video] = {}
    for e, rel, table, video_of in _episodes(root, info, version, cam_keys, where):
        source = f"{root} episode {e}"
        n = table.num_rows
        if n < config.min_episode_steps:
            skipped.append(SkippedItem(source, f"{n} steps < horizon {config.min_episode_steps}"))
            continue
        state = _column(table, STATE, where, rel)[:, state_cols]
        action = _column(table, ACTION, where, rel)[:, action_cols]
        ts = np.asarray(table.column("timestamp").to_numpy(), np.float64)
        index = np.zeros((n, config.n_cameras), np.int64)
        for c, key in enumerate(cam_keys):
            if features[key]["dtype"] == "image":
                for t, item in enumerate(table.column(key).to_pylist()):
                    raw = (item or {}).get("bytes")
                    if not raw:
                        raise LeRobotDatasetError(f"{where}: {rel} {key} row {t}: no image bytes")
                    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
                    if bgr is None:
                        raise LeRobotDatasetError(f"{where}: {rel} {key} row {t}: undecodable")
                    index[t, c] = frames.add(c, resize_image(bgr[..., ::-1], config.image_size))
            else:
                video_path, offset_s = video_of(key)
                if video_path not in videos:
                    videos.clear()  # one file at a time (a v3.0 file holds many episodes)
                    videos[video_path] = _Video(video_path)
                video = videos[video_path]
                for t in range(n):
                    rgb = video.frame(round((offset_s + ts[t]) * fps))
                    index[t, c] = frames.add(c, resize_image(rgb, config.image_size))
        plans.append(
            EpisodePlan(
                state=state.astype(np.float32),
                action=action.astype(np.float32),
                times_ns=np.round(ts * 1e9).astype(np.int64),
                frame_index=index,
                source=source,
            )
        )
        steps += n
    summary = {
        "bag": str(root),
        "format": f"LeRobotDataset {version}",
        "episodes": len(plans),
        "steps": steps,
        "skipped_episodes": [{"source": s.source, "reason": s.reason} for s in skipped],
    }
    types = ros.get("camera_types") or {}
    if all(t in types for t in config.camera_topics):
        summary["camera_types"] = {t: types[t] for t in config.camera_topics}
    return BagScan(episodes=plans, skipped=skipped, summary=summary)


def _episodes(root: Path, info: dict[str, Any], version: str, cam_keys: list[str], where: str):
    """(episode_index, data file, its rows, video_of) per episode in episode order, where
    video_of(feature) gives the mp4 holding the episode and the episode's start in it (s).

    v2.x: one parquet and one mp4 per episode (meta/episodes.jsonl). v3.0: several episodes
    per data/chunk-*/file-*.parquet (grouped by their episode_index column) and per mp4, located
    by meta/episodes/*/*.parquet (`videos/<feature>/chunk_index`, `file_index`,
    `from_timestamp`)."""
    _, pq = _pyarrow()

    def read(rel: str):
        try:
            return pq.read_table(root / rel)
        except (OSError, ValueError) as exc:
            raise LeRobotDatasetError(f"{where}: {rel} unreadable ({exc})") from exc

    chunks = int(info.get("chunks_size") or CHUNK_SIZE)
    if version != "v3.0":
        for ep in sorted(
            _load_jsonl(root / "meta" / "episodes.jsonl"), key=lambda x: x["episode_index"]
        ):
            e = int(ep["episode_index"])
            rel = info["data_path"].format(episode_chunk=e // chunks, episode_index=e)
            table = read(rel)
            if table.num_rows != int(ep.get("length", table.num_rows)):
                raise LeRobotDatasetError(
                    f"{where}: {rel} has {table.num_rows} rows, meta/episodes.jsonl says "
                    f"{ep['length']}"
                )

            def video_of(key: str, e: int = e) -> tuple[Path, float]:
                rel = info["video_path"].format(
                    episode_chunk=e // chunks, video_key=key, episode_index=e
                )
                return root / rel, 0.0

            yield e, rel, table, video_of
        return
    meta_files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not meta_files:
        raise LeRobotDatasetError(f"{where}: v3.0 without meta/episodes/*/*.parquet")
    episodes: dict[int, dict[str, Any]] = {}
    for path in meta_files:
        for row in read(str(path.relative_to(root))).to_pylist():
            episodes[int(row["episode_index"])] = row
    for path in sorted((root / "data").glob("*/*.parquet")):
        rel = str(path.relative_to(root))
        table = read(rel)
        column = np.asarray(table.column("episode_index").to_numpy())
        for e in sorted(set(column.tolist())):
            if e not in episodes:
                raise LeRobotDatasetError(
                    f"{where}: {rel} holds episode {e}, not in meta/episodes"
                )
            rows = np.flatnonzero(column == e)
            if not np.array_equal(rows, np.arange(rows[0], rows[-1] + 1)):
                raise LeRobotDatasetError(f"{where}: {rel}: episode {e}'s rows are not contiguous")
            part = table.slice(int(rows[0]), len(rows))
            ep = episodes[e]
            if len(rows) != int(ep.get("length", len(rows))):
                raise LeRobotDatasetError(
                    f"{where}: {rel} has {len(rows)} rows of episode {e}, meta/episodes says "
                    f"{ep['length']}"
                )

            def video_of(key: str, ep: dict[str, Any] = ep) -> tuple[Path, float]:
                try:
                    rel = info["video_path"].format(
                        video_key=key,
                        chunk_index=int(ep[f"videos/{key}/chunk_index"]),
                        file_index=int(ep[f"videos/{key}/file_index"]),
                    )
                    return root / rel, float(ep[f"videos/{key}/from_timestamp"])
                except (KeyError, TypeError) as exc:
                    raise LeRobotDatasetError(
                        f"{where}: meta/episodes has no video location of {key} for episode "
                        f"{ep['episode_index']} ({exc})"
                    ) from exc

            yield e, rel, part, video_of


def _column(table: Any, key: str, where: str, rel: str) -> np.ndarray:
    try:
        values = table.column(key).to_pylist()
        return np.asarray(values, np.float32).reshape(len(values), -1)
    except (KeyError, ValueError, TypeError) as exc:
        raise LeRobotDatasetError(f"{where}: {rel} column {key!r} unreadable ({exc})") from exc
