"""On-disk training cache: bags decoded once into contiguous, memory-mappable arrays.

Layout of a cache folder (Chi et al.'s replay-buffer layout, as .npy files):

    images.npy        (S, N, H, W, 3) uint8   every episode's steps, back to back
    state.npy         (S, D) float32
    action.npy        (S, D) float32
    episode_ends.npy  (E,) int64              exclusive end index of each episode
    meta.json         sources (path, size, mtime), config + hash, counts, skipped items

A cache is built in a temporary folder next to `cache_dir` and swapped in by renames, so a crash
or a bad bag never replaces (or half-writes) a good cache. `ensure_cache` rebuilds only when the
bags (paths, sizes, mtimes) or the DataConfig changed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..policy.constants import ACTION, OBS_STATE
from .bag_reader import bag_files, find_bags, read_bag
from .config import DataConfig

__all__ = [
    "CACHE_FORMAT",
    "CacheError",
    "CacheInfo",
    "EpisodeCache",
    "build_cache",
    "ensure_cache",
    "normalizer_stats",
    "open_cache",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
META = "meta.json"
ARRAYS = ("images", "state", "action", "episode_ends")


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
    _recover(cache_dir)
    return EpisodeCache(cache_dir)


def _source_info(bag: Path) -> dict[str, Any]:
    files = bag_files(bag)
    stats = [f.stat() for f in files]
    return {
        "path": str(bag.resolve()),
        "size": int(sum(s.st_size for s in stats)),
        "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0)),
    }


def _read_meta(cache_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((cache_dir / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        return None
    return meta


def _recover(cache_dir: Path) -> None:
    """Undo a swap that a crash interrupted: put the old cache back if the new one is absent."""
    if cache_dir.exists():
        return
    aside = sorted(cache_dir.parent.glob(f".{cache_dir.name}.old-*"))
    for old in aside:
        if _read_meta(old) is not None:
            os.replace(old, cache_dir)
            log.warning(
                "restored cache %s from %s (an earlier swap was interrupted)", cache_dir, old
            )
            return


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
    paths = find_bags([bags] if isinstance(bags, (str, Path)) else bags)
    if not paths:
        raise CacheError(f"cache {cache_dir}: no bags given")
    _recover(cache_dir)
    _check_target(cache_dir)
    sources = [_source_info(p) for p in paths]
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir.parent / f".{cache_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        meta = _write_cache(tmp, paths, sources, config)
        _swap_in(tmp, cache_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "built cache %s: %d episodes, %d steps, %d skipped item(s)",
        cache_dir,
        meta["n_episodes"],
        meta["n_steps"],
        len(meta["skipped"]),
    )
    return CacheInfo.from_meta(cache_dir, meta, rebuilt=True)


def ensure_cache(
    bags: str | Path | list[str | Path], config: DataConfig, cache_dir: str | Path
) -> CacheInfo:
    """Return the cache at `cache_dir` if it was built from these bags (same paths, sizes and
    mtimes) with this config; otherwise (re)build it with `build_cache`."""
    cache_dir = Path(cache_dir)
    paths = find_bags([bags] if isinstance(bags, (str, Path)) else bags)
    _recover(cache_dir)
    meta = _read_meta(cache_dir)
    if (
        meta is not None
        and meta.get("config_hash") == config.content_hash()
        and meta.get("sources") == [_source_info(p) for p in paths]
        and all((cache_dir / f"{name}.npy").exists() for name in ARRAYS)
    ):
        return CacheInfo.from_meta(cache_dir, meta, rebuilt=False)
    return build_cache(paths, config, cache_dir)


def _write_cache(
    folder: Path, paths: list[Path], sources: list[dict[str, Any]], config: DataConfig
) -> dict[str, Any]:
    """Read every bag, staging episodes as chunk files, then concatenate them into the arrays."""
    chunks = folder / "chunks"
    chunks.mkdir()
    episodes: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for path in paths:
        contents = read_bag(path, config)
        skipped += [{"source": s.source, "reason": s.reason} for s in contents.skipped]
        for ep in contents.episodes:
            k = len(episodes)
            for name in ("images", "state", "action"):
                np.save(chunks / f"{k:06d}_{name}.npy", getattr(ep, name))
            episodes.append({"source": ep.source, "length": len(ep)})
    if not episodes:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped) or "none"
        raise CacheError(
            f"no usable episode in {[str(p) for p in paths]} (skipped: {reasons}). "
            "Record longer demonstrations or lower DataConfig.horizon."
        )
    lengths = np.array([e["length"] for e in episodes], np.int64)
    n_steps = int(lengths.sum())
    shapes = {
        "images": (n_steps, config.n_cameras, *config.image_size, 3),
        "state": (n_steps, config.state_dim),
        "action": (n_steps, config.state_dim),
    }
    dtypes = {"images": np.uint8, "state": np.float32, "action": np.float32}
    for name, shape in shapes.items():
        out = np.lib.format.open_memmap(folder / f"{name}.npy", "w+", dtypes[name], shape)
        start = 0
        for k, length in enumerate(lengths):
            chunk_path = chunks / f"{k:06d}_{name}.npy"
            out[start : start + length] = np.load(chunk_path)
            chunk_path.unlink()
            start += int(length)
        out.flush()
        del out
    shutil.rmtree(chunks)
    np.save(folder / "episode_ends.npy", np.cumsum(lengths))
    meta = {
        "format": CACHE_FORMAT,
        "created_unix": time.time(),
        "config_hash": config.content_hash(),
        "config": config.to_dict(),
        "sources": sources,
        "n_episodes": len(episodes),
        "n_steps": n_steps,
        "episodes": episodes,
        "skipped": skipped,
        "shapes": {name: list(shape) for name, shape in shapes.items()},
    }
    # meta.json last: a folder with meta.json is complete.
    (folder / META).write_text(json.dumps(meta, indent=1))
    return meta


def _swap_in(new: Path, cache_dir: Path) -> None:
    """Replace `cache_dir` by the folder `new` with renames (the old one is removed after)."""
    if not cache_dir.exists():
        os.replace(new, cache_dir)
        return
    old = cache_dir.parent / f".{cache_dir.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(cache_dir, old)
    try:
        os.replace(new, cache_dir)
    except BaseException:
        os.replace(old, cache_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


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
