"""Building the cache and the ingest summary: crashes at any step keep the old
or the new cache, leftovers are cleaned, frames are streamed, dp-train reports and tidies up."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import yaml

from diffusion_policy_node.data.cache import build_cache, ensure_cache, open_cache
from diffusion_policy_node.train import cli

from .data_fixtures import CAMERA, JOINT_TOPIC, make_config
from .kill_at_step import run_and_kill_at

CHILD = """
import sys, time
from diffusion_policy_node import atomic
from diffusion_policy_node.data.cache import build_cache
from tests.unit.data_fixtures import make_config

bag, cache, stop_at = sys.argv[1:4]

def hook(name):
    print(name, flush=True)
    if name == stop_at:
        time.sleep(120)

atomic.step_hook = hook
build_cache([bag], make_config(), cache)
print("done", flush=True)
"""
REPO = Path(__file__).resolve().parents[2]


def build_in_child(bag: Path, cache: Path, stop_at: str) -> list[str]:
    """build_cache in a child process, SIGKILLed by PID when it reports step `stop_at`."""
    return run_and_kill_at(CHILD, [str(bag), str(cache), stop_at], stop_at)


def cache_of(cache_dir: Path) -> int:
    """n_steps of the complete cache at `cache_dir` (it must open and agree with its meta)."""
    cache = open_cache(cache_dir)
    assert len(cache.images) == cache.n_steps == int(cache.episode_ends[-1])
    return cache.n_steps


def test_a_build_killed_at_any_step_keeps_the_old_or_the_new_cache(make_bag, tmp_path):
    old_bag, new_bag = make_bag("old"), make_bag("new", duration_s=3.0, seed=1)
    cache_dir = tmp_path / "cache"
    old_steps = build_cache([old_bag.path], make_config(), cache_dir).n_steps
    steps = build_in_child(new_bag.path, cache_dir, "never")
    assert steps[-1] == "done"
    new_steps = cache_of(cache_dir)
    assert (old_steps, new_steps) == (19, 29)
    assert steps[:4] == ["scratch created", "bag read", "arrays written", "meta written"]
    swapped = steps.index("exchanged") if "exchanged" in steps else steps.index("swapped")
    for k, stop_at in enumerate(steps[:-1]):
        build_cache([old_bag.path], make_config(), cache_dir)
        assert build_in_child(new_bag.path, cache_dir, stop_at)[-1] == stop_at
        if stop_at == "old aside":  # no RENAME_EXCHANGE: opening restores the aside copy
            assert not cache_dir.exists()
        assert cache_of(cache_dir) == (new_steps if k >= swapped else old_steps), stop_at
        # The next build removes the crashed build's scratch folder.
        info = ensure_cache([new_bag.path], make_config(), cache_dir)
        assert info.n_steps == new_steps
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "new", "old"]


def test_stale_scratch_folders_are_removed_by_the_next_build(make_bag, tmp_path):
    bag = make_bag()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name in (".cache.tmp-0123456789ab", f".cache.tmp-{dead.pid}-abcdef01"):
        (tmp_path / name / "chunks").mkdir(parents=True)
        (tmp_path / name / "chunks" / "000000_images.npy").write_bytes(bytes(1000))
    build_cache([bag.path], make_config(), tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "cache"]


def test_frames_are_streamed_to_the_cache_not_held(make_bag, tmp_path, monkeypatch):
    # Ingest memory must not grow with the episode: each decoded frame goes to the staging
    # file at once, so only a frame or two is ever alive (the old code kept every frame, then
    # the stacked episode, then the concatenated cache: ~3x the decoded images).
    from diffusion_policy_node.data import resample

    truth = make_bag(duration_s=6.0)
    alive: list[weakref.ref] = []
    most = [0]
    real = resample.resize_image

    def tracked(rgb, size):
        out = real(rgb, size)
        alive.append(weakref.ref(out))
        most[0] = max(most[0], sum(r() is not None for r in alive))
        return out

    monkeypatch.setattr(resample, "resize_image", tracked)
    info = build_cache([truth.path], make_config(), tmp_path / "cache")
    assert info.n_steps == 59 and len(alive) >= 59
    assert most[0] <= 2, most[0]
    cache = open_cache(info.path)
    assert not list(info.path.glob("frames_*"))  # staging files removed
    assert cache.images.shape == (59, 1, 16, 16, 3)


def train_config(folder: Path) -> Path:
    """config/robots/sim_arm/train_small.yaml with the data section of the test bags."""
    doc = yaml.safe_load((REPO / "config" / "robots" / "sim_arm" / "train_small.yaml").read_text())
    doc["data"] = make_config().to_dict()
    doc["policy"]["crop_shape"] = [12, 12]
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_ingest_summary_is_stored_and_printed(make_bag, tmp_path, capsys, monkeypatch):
    bag = make_bag(duration_s=4.0, camera_dropout_s=(1.0, 2.0), nan_joint_messages=(5,))
    out = tmp_path / "run"

    class FakeTrainer:
        """Stands in for the training loop: only the ingest is under test."""

        def __init__(self, run, bags, out_dir, **kwargs):
            self.bags = [Path(b) for b in bags]
            self.cache_dir = Path(out_dir) / "cache"

        def fit(self, stop_after=None):
            raise ValueError("stop here")

    monkeypatch.setattr(cli, "Trainer", FakeTrainer)
    args = ["--config", str(train_config(tmp_path)), "--data", str(bag.path), "--out", str(out)]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "stop here" in err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("dp-train: ingest")]
    assert f"{bag.path}: 2 episode(s), 32 steps" in line
    assert "time base header" in line and f"{CAMERA} -8.0 ms" in line
    assert f"{JOINT_TOPIC}: 1 NaN/inf in a selected joint position" in line
    assert f"gaps > max_gap: 1 ({CAMERA} 1.03 s at 0.86 s), 7 steps dropped" in line
    assert "chunk CRCs absent" in line
    meta = json.loads((out / "cache" / "meta.json").read_text())
    (summary,) = meta["ingest"]
    assert summary["bag"] == str(bag.path) and summary["steps"] == 32
    assert summary["skipped_messages"] == {
        JOINT_TOPIC: {"NaN/inf in a selected joint position": 1}
    }
    assert summary["gap_steps_dropped"] == 7 and summary["time_base"] == "header"
    assert set(summary["clock_offsets_ms"]) == {CAMERA, JOINT_TOPIC, make_config().command_topic}


def test_dp_train_on_a_bad_bag_leaves_no_out_folder(make_bag, tmp_path, capsys):
    bag = make_bag()
    mcap = next(bag.path.glob("*.mcap"))
    with open(mcap, "r+b") as fh:
        fh.truncate(mcap.stat().st_size // 2)
    out = tmp_path / "runs" / "new"
    config = train_config(tmp_path)
    rc = cli.main(["--config", str(config), "--data", str(bag.path), "--out", str(out)])
    assert rc == 2 and str(bag.path) in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "train.yaml"]


@pytest.fixture(autouse=True)
def _no_cuda_probe(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
