"""On-disk training cache: bags decoded once into contiguous, memory-mappable arrays.

Layout of a cache folder (Chi et al.'s replay-buffer layout, as .npy files):

    images.npy        (S, N, H, W, 3) uint8   every episode's steps, back to back
    state.npy         (S, D) float32
    action.npy        (S, D) float32
    episode_ends.npy  (E,) int64              exclusive end index of each episode
    meta.json         sources (path, size, mtime), config + hash, counts, skipped items, and the
                      ingest summary of every bag (`ingest`: steps, skipped messages by reason,
                      gaps, time base, clock offsets, chunk CRCs; see `scan_bag`)

A cache is built in a scratch folder next to `cache_dir` and swapped in atomically (`atomic.py`),
so a crash or a bad bag never replaces (or half-writes) a good cache; the scratch folders of
crashed builds are removed by the next build. Decoded frames go straight to one staging file per
camera and are copied into `images.npy` at the end, so ingest memory does not grow with the
length of an episode. `ensure_cache` rebuilds only when the bags (paths, sizes, mtimes) or the
DataConfig changed.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..policy.constants import ACTION, OBS_STATE
from .bag_reader import bag_files, find_bags, scan_bag
from .config import DataConfig
from .ingest_summary import format_ingest
from .lerobot_dataset import is_lerobot_dataset, scan_lerobot
from .resample import EpisodePlan

__all__ = [
    "CACHE_FORMAT",
    "CacheError",
    "CacheInfo",
    "EpisodeCache",
    "build_cache",
    "ensure_cache",
    "find_sources",
    "format_ingest",
    "normalizer_stats",
    "open_cache",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2
META = "meta.json"
ARRAYS = ("images", "state", "action", "episode_ends")
COPY_BLOCK = 256  # steps copied from the frame staging files at a time


class CacheError(ValueError):
    """A cache cannot be built or opened; the message says which folder and what to do."""


@dataclass
class CacheInfo:
    """Summary of a cache (what `build_cache`/`ensure_cache` return)."""

    path: Path
    n_episodes: int
    n_steps: int
    config_hash: str
    sources: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    rebuilt: bool
    ingest: list[dict[str, Any]] = field(default_factory=list)  # summary per bag

    @classmethod
    def from_meta(cls, path: Path, meta: dict[str, Any], rebuilt: bool) -> CacheInfo:
        return cls(
            path=path,
            n_episodes=int(meta["n_episodes"]),
            n_steps=int(meta["n_steps"]),
            config_hash=str(meta["config_hash"]),
            sources=list(meta["sources"]),
            skipped=list(meta["skipped"]),
            rebuilt=rebuilt,
            ingest=list(meta.get("ingest", [])),
        )


class EpisodeCache:
    """An opened cache: memory-mapped `images`, `state`, `action` and `episode_ends`.

    Pickling (e.g. into DataLoader worker processes) sends only the path; the copy re-maps.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta = _read_meta(self.path)
        if self.meta is None:
            raise CacheError(
                f"cache {self.path}: no valid {META}; it is not a dataset cache (or was built by "
                "another version). Build it with build_cache/ensure_cache."
            )
        self.config = DataConfig.from_dict(self.meta["config"], where=f"cache {self.path}")
        try:
            arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in ARRAYS}
        except (OSError, ValueError) as exc:
            raise CacheError(f"cache {self.path}: arrays unreadable ({exc}); rebuild it") from exc
        self.images: np.ndarray = arrays["images"]
        self.state: np.ndarray = arrays["state"]
        self.action: np.ndarray = arrays["action"]
        self.episode_ends: np.ndarray = np.asarray(arrays["episode_ends"], np.int64)
        n = self.meta["n_steps"]
        if not (
            len(self.images) == len(self.state) == len(self.action) == n
            and len(self.episode_ends) == self.meta["n_episodes"]
            and (n == 0 or self.episode_ends[-1] == n)
        ):
            raise CacheError(f"cache {self.path}: arrays disagree with {META}; rebuild it")

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return len(self.state)

    def episode_slice(self, i: int) -> slice:
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]


def open_cache(cache_dir: str | Path) -> EpisodeCache:
    """Open a built cache with its arrays memory-mapped read-only."""
    cache_dir = Path(cache_dir)
    atomic.recover(cache_dir, _is_cache)
    return EpisodeCache(cache_dir)


def _source_info(bag: Path) -> dict[str, Any]:
    files = bag_files(bag)
    stats = [f.stat() for f in files]
    return {
        "path": str(bag.resolve()),
        "size": int(sum(s.st_size for s in stats)),
        "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0)),
    }


def find_sources(bags: str | Path | list[str | Path]) -> list[Path]:
    """The data sources of a cache, in order: LeRobotDataset folders (meta/info.json) as
    given, every other path expanded into bags by `find_bags`."""
    given = [bags] if isinstance(bags, (str, Path)) else list(bags)
    if not any(is_lerobot_dataset(raw) for raw in given):
        return find_bags(given)
    out: list[Path] = []
    for raw in given:
        found = [Path(raw)] if is_lerobot_dataset(raw) else find_bags([raw])
        for path in found:
            if path in out:
                raise CacheError(f"source {path}: given twice")
            out.append(path)
    return out


def _read_meta(cache_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((cache_dir / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None
    return meta


def _is_cache(folder: Path) -> bool:
    return _read_meta(folder) is not None


def _check_target(cache_dir: Path) -> None:
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CacheError(f"cache {cache_dir}: exists and is not a folder; choose another path")
    if cache_dir.is_dir() and any(cache_dir.iterdir()) and not (cache_dir / META).exists():
        raise CacheError(
            f"cache {cache_dir}: folder exists, is not empty and holds no {META}: it is not a "
            "dataset cache and will not be replaced. Choose a new or empty folder."
        )


def build_cache(
    bags: str | Path | list[str | Path], config: DataConfig, cache_dir: str | Path
) -> CacheInfo:
    """Decode `bags` (paths as for `find_bags`) into a cache at `cache_dir`, replacing it.

    Raises BagReadError/ImageDecodeError/CacheError (ValueErrors) naming the bag, topic and
    field; the previous cache at `cache_dir`, if any, is then left untouched.
    """
    cache_dir = Path(cache_dir)
    paths = find_sources(bags)
    if not paths:
        raise CacheError(f"cache {cache_dir}: no bags given")
    atomic.recover(cache_dir, _is_cache)
    _check_target(cache_dir)
    sources = [_source_info(p) for p in paths]
    created = atomic.make_dirs(cache_dir.parent)
    tmp: Path | None = None
    try:
        tmp = atomic.new_scratch(cache_dir, _is_cache)
        meta = _write_cache(tmp, paths, sources, config)
        atomic.swap_in(tmp, cache_dir)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        atomic.remove_empty(created)  # e.g. dp-train's --out: not left behind empty
        raise
    log.info(
        "built cache %s: %d episodes, %d steps, %d skipped item(s)",
        cache_dir,
        meta["n_episodes"],
        meta["n_steps"],
        len(meta["skipped"]),
    )
    for line in format_ingest(meta["ingest"]):
        log.info("ingest %s", line)
    return CacheInfo.from_meta(cache_dir, meta, rebuilt=True)


def ensure_cache(
    bags: str | Path | list[str | Path], config: DataConfig, cache_dir: str | Path
) -> CacheInfo:
    """Return the cache at `cache_dir` if it was built from these bags (same paths, sizes and
    mtimes) with this config; otherwise (re)build it with `build_cache`."""
    cache_dir = Path(cache_dir)
    paths = find_sources(bags)
    atomic.recover(cache_dir, _is_cache)
    atomic.clean_stale(cache_dir)  # scratch folders of crashed builds, even if up to date
    meta = _read_meta(cache_dir)
    if (
        meta is not None
        and meta.get("config_hash") == config.content_hash()
        and meta.get("sources") == [_source_info(p) for p in paths]
        and all((cache_dir / f"{name}.npy").exists() for name in ARRAYS)
    ):
        return CacheInfo.from_meta(cache_dir, meta, rebuilt=False)
    return build_cache(paths, config, cache_dir)


class _DiskFrames:
    """Decoded frames appended to one staging file per camera (a FrameStore)."""

    def __init__(self, folder: Path, config: DataConfig) -> None:
        self.shape = (*config.image_size, 3)
        self.paths = [folder / f"frames_{c}.u8" for c in range(config.n_cameras)]
        self.files = [path.open("wb") for path in self.paths]
        self.counts = [0] * config.n_cameras

    def add(self, camera: int, rgb: np.ndarray) -> int:
        if rgb.shape != self.shape or rgb.dtype != np.uint8:
            raise ValueError(f"frame of shape {rgb.shape} {rgb.dtype}, expected {self.shape}")
        self.files[camera].write(np.ascontiguousarray(rgb).data)
        self.counts[camera] += 1
        return self.counts[camera] - 1

    def close(self) -> None:
        for fh in self.files:
            fh.close()

    def mapped(self, camera: int) -> np.ndarray:
        if self.counts[camera] == 0:
            return np.zeros((0, *self.shape), np.uint8)
        shape = (self.counts[camera], *self.shape)
        return np.memmap(self.paths[camera], np.uint8, "r", shape=shape)

    def remove(self) -> None:
        self.close()
        for path in self.paths:
            path.unlink(missing_ok=True)


def _write_cache(
    folder: Path, paths: list[Path], sources: list[dict[str, Any]], config: DataConfig
) -> dict[str, Any]:
    """Read every bag (frames streamed to staging files), then write the arrays."""
    frames = _DiskFrames(folder, config)
    plans: list[EpisodePlan] = []
    skipped: list[dict[str, str]] = []
    ingest: list[dict[str, Any]] = []
    for path in paths:
        if is_lerobot_dataset(path):
            scan = scan_lerobot(path, config, frames)
        else:
            scan = scan_bag(path, config, frames)
        skipped += [{"source": s.source, "reason": s.reason} for s in scan.skipped]
        plans += scan.episodes
        ingest.append(scan.summary)
        atomic.step("bag read")
    frames.close()
    if not plans:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped) or "none"
        raise CacheError(
            f"no usable episode in {[str(p) for p in paths]} (skipped: {reasons}). "
            "Record longer demonstrations or lower DataConfig.horizon."
        )
    lengths = np.array([len(p) for p in plans], np.int64)
    n_steps = int(lengths.sum())
    shapes = {
        "images": (n_steps, config.n_cameras, *config.image_size, 3),
        "state": (n_steps, config.state_dim),
        "action": (n_steps, config.action_dim),
    }
    images = np.lib.format.open_memmap(folder / "images.npy", "w+", np.uint8, shapes["images"])
    for c in range(config.n_cameras):
        staged = frames.mapped(c)
        start = 0
        for plan in plans:
            for a in range(0, len(plan), COPY_BLOCK):
                b = min(a + COPY_BLOCK, len(plan))
                images[start + a : start + b, c] = staged[plan.frame_index[a:b, c]]
            start += len(plan)
        del staged
    images.flush()
    del images
    frames.remove()
    np.save(folder / "state.npy", np.concatenate([p.state for p in plans]))
    np.save(folder / "action.npy", np.concatenate([p.action for p in plans]))
    np.save(folder / "episode_ends.npy", np.cumsum(lengths))
    atomic.step("arrays written")
    meta = {
        "format": CACHE_FORMAT,
        "created_unix": time.time(),
        "config_hash": config.content_hash(),
        "config": config.to_dict(),
        "sources": sources,
        "n_episodes": len(plans),
        "n_steps": n_steps,
        "episodes": [{"source": p.source, "length": len(p)} for p in plans],
        "skipped": skipped,
        "ingest": ingest,
        "shapes": {name: list(shape) for name, shape in shapes.items()},
    }
    # meta.json last: a folder with meta.json is complete.
    (folder / META).write_text(json.dumps(meta, indent=1))
    atomic.step("meta written")
    return meta


def normalizer_stats(cache: EpisodeCache | str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Per-dimension min and max of state and action: {OBS_STATE|ACTION: {"min", "max"}}."""
    if not isinstance(cache, EpisodeCache):
        cache = open_cache(cache)
    stats = {}
    for key, array in ((OBS_STATE, cache.state), (ACTION, cache.action)):
        stats[key] = {
            "min": np.asarray(array.min(axis=0), np.float32),
            "max": np.asarray(array.max(axis=0), np.float32),
        }
    return stats
