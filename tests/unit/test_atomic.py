"""atomic.py: a folder write killed (SIGKILL, by PID) between any two of its steps leaves the
complete old or the complete new folder, and the next write removes what the crash left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_policy_node import atomic

from .kill_at_step import run_and_kill_at

CHILD = """
import sys, time
from pathlib import Path
from diffusion_policy_node import atomic

target, mode, stop_at = sys.argv[1:4]
if mode == "fallback":
    atomic.exchange = lambda a, b: False  # as on a file system without RENAME_EXCHANGE

def hook(name):
    print(name, flush=True)
    if name == stop_at:
        time.sleep(120)

atomic.step_hook = hook
with atomic.atomic_folder(target) as tmp:
    for i in range(3):
        (tmp / f"part{i}").write_text("new")
        atomic.step(f"part {i} written")
print("done", flush=True)
"""


def write_old(target: Path) -> None:
    target.mkdir()
    for i in range(3):
        (target / f"part{i}").write_text("old")


def contents(target: Path) -> str:
    """'old' or 'new' if `target` is one complete version, else a description of the mess."""
    if not target.is_dir():
        return "missing"
    files = {p.name: p.read_text() for p in target.iterdir()}
    versions = set(files.values())
    if sorted(files) == ["part0", "part1", "part2"] and len(versions) == 1:
        return versions.pop()
    return f"mixed {files}"


def run_child(target: Path, mode: str, stop_at: str) -> list[str]:
    """Run the write, SIGKILL it by PID once it reports `stop_at`; return the steps seen."""
    return run_and_kill_at(CHILD, [str(target), mode, stop_at], stop_at, timeout=60)


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_write_killed_at_any_step_leaves_the_old_or_the_new_folder(tmp_path, mode):
    if mode == "exchange" and not atomic.exchange(*_two_dirs(tmp_path)):
        pytest.skip("renameat2(RENAME_EXCHANGE) unsupported here")
    target = tmp_path / "box"
    write_old(target)
    steps = run_child(target, mode, "never")
    assert steps[-1] == "done" and contents(target) == "new"
    swap = ["swap", "exchanged"] if mode == "exchange" else ["swap", "old aside", "swapped"]
    assert steps[: steps.index("written")] == ["scratch created"] + [
        f"part {i} written" for i in range(3)
    ]
    assert steps[steps.index("written") + 1 : -1] == [*swap, "old removed"]
    first_new = steps.index("exchanged" if mode == "exchange" else "swapped")
    for k, stop_at in enumerate(steps[:-1]):
        _reset(target)
        assert run_child(target, mode, stop_at)[-1] == stop_at
        if stop_at == "old aside":
            assert contents(target) == "missing"  # the one moment without RENAME_EXCHANGE
            assert atomic.recover(target)
        assert contents(target) == ("new" if k >= first_new else "old"), stop_at
        # The next write cleans up after the crash and succeeds.
        with atomic.atomic_folder(target) as tmp:
            for i in range(3):
                (tmp / f"part{i}").write_text("new")
        assert contents(target) == "new"
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".box")) == []


def _two_dirs(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "probe_a", tmp_path / "probe_b"
    a.mkdir(), b.mkdir()
    (a / "x").touch()
    return a, b


def _reset(target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    write_old(target)


def test_leftovers_of_live_processes_are_kept(tmp_path):
    target = tmp_path / "box"
    write_old(target)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = tmp_path / f".box.tmp-{alive.pid}-00ff"
        stale = [tmp_path / f".box.tmp-{dead.pid}-00ff", tmp_path / ".box.tmp-0123456789ab"]
        for path in (mine, *stale, tmp_path / f".box.old-{dead.pid}-1234"):
            path.mkdir()
        removed = atomic.clean_stale(target)
        assert sorted(removed) == sorted([*stale, tmp_path / f".box.old-{dead.pid}-1234"])
        assert mine.is_dir() and contents(target) == "old"
    finally:
        alive.kill()
        alive.wait()


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "box"
    with pytest.raises(RuntimeError), atomic.atomic_folder(target) as tmp:
        (tmp / "part0").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nor the parent folders it created
