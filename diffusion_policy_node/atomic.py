"""Replace a folder so that readers see either the old or the new one, never half of either.

A new version is written into a scratch folder next to the target, `.<name>.tmp-<pid>-<hex>`,
then swapped in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)` call: at every instant
the target is the complete old or the complete new folder, whatever kills the process. Where the
kernel or file system lacks it, the old folder is first renamed aside (`.<name>.old-<pid>-<hex>`)
and the new one renamed in; a crash between the two renames leaves only the aside copy, which
`recover` (called before every write, and by the cache before every read) puts back.
Scratch and aside folders of processes that no longer run are removed by `clean_stale` on the
next write (same machine: liveness is checked by process id).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "atomic_folder",
    "clean_stale",
    "exchange",
    "make_dirs",
    "new_scratch",
    "recover",
    "remove_empty",
    "step",
    "swap_in",
]

log = logging.getLogger(__name__)

# Tests set this to a function called at each step of a write (to kill the process there).
step_hook: Callable[[str], None] | None = None
_OWNER = re.compile(r"^(?P<pid>\d+)(-[0-9a-f]+)?$")
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def step(name: str) -> None:
    """Mark a point between two steps of a folder write (see `step_hook`)."""
    if step_hook is not None:
        step_hook(name)


def _renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_exchange_func = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths `a` and `b` (both must exist); False where unsupported."""
    if _exchange_func is None:
        return False
    rc = _exchange_func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def _scratch(folder: Path, kind: str) -> Path:
    return folder.parent / f".{folder.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _leftovers(folder: Path, kind: str) -> list[Path]:
    if not folder.parent.is_dir():
        return []
    return sorted(folder.parent.glob(f".{folder.name}.{kind}-*"))


def _owner_alive(path: Path, kind: str) -> bool:
    """Whether the process that made scratch/aside folder `path` still runs (names without a
    process id, from older versions, count as stale)."""
    match = _OWNER.match(path.name.split(f".{kind}-", 1)[1])
    if match is None:
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(folder: str | os.PathLike, valid: Callable[[Path], bool] | None = None) -> bool:
    """If `folder` is missing because a swap was interrupted, put the aside copy back (the
    newest one that `valid` accepts, of a process no longer running). True if restored."""
    folder = Path(folder)
    if folder.exists():
        return False
    candidates = [
        p
        for p in _leftovers(folder, "old")
        if p.is_dir() and not _owner_alive(p, "old") and (valid is None or valid(p))
    ]
    if not candidates:
        return False
    old = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    os.replace(old, folder)
    log.warning("restored %s from %s (an earlier swap was interrupted)", folder, old)
    return True


def clean_stale(folder: str | os.PathLike) -> list[Path]:
    """Remove the scratch and aside folders next to `folder` left by processes that died
    (recover first: an aside folder may be the only copy). Returns what was removed."""
    folder = Path(folder)
    removed = []
    for kind in ("tmp", "old"):
        for path in _leftovers(folder, kind):
            if not _owner_alive(path, kind):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    if removed:
        log.info("removed %d leftover folder(s) of interrupted writes: %s", len(removed), removed)
    return removed


def make_dirs(folder: Path) -> list[Path]:
    """mkdir -p; returns the folders it created, deepest first (to undo on failure)."""
    created = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        created.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(created: list[Path]) -> None:
    """Undo `make_dirs` for the folders that stayed empty."""
    for path in created:
        try:
            path.rmdir()
        except OSError:
            return


def new_scratch(folder: Path, valid: Callable[[Path], bool] | None = None) -> Path:
    """Recover and clean up after earlier crashes, then create the scratch folder for a new
    version of `folder` (its parent must exist)."""
    recover(folder, valid)
    clean_stale(folder)
    tmp = _scratch(folder, "tmp")
    tmp.mkdir()
    step("scratch created")
    return tmp


def swap_in(new: Path, folder: Path) -> None:
    """Put the complete folder `new` in the place of `folder`; the old version is removed."""
    if not folder.exists():
        step("rename")
        os.rename(new, folder)
        step("renamed")
        return
    step("swap")
    if exchange(new, folder):
        step("exchanged")  # `new` now holds the old version
        shutil.rmtree(new, ignore_errors=True)
        step("old removed")
        return
    old = _scratch(folder, "old")
    os.replace(folder, old)
    step("old aside")  # a crash here leaves only `old`: recover() puts it back
    try:
        os.replace(new, folder)
    except BaseException:
        os.replace(old, folder)
        raise
    step("swapped")
    shutil.rmtree(old, ignore_errors=True)
    step("old removed")


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a scratch folder next to `folder`; when the block succeeds it takes `folder`'s place.

    If the block raises, the scratch folder is deleted, `folder` is untouched and parent folders
    created for it are removed again.
    """
    folder = Path(folder)
    created = make_dirs(folder.parent)
    tmp = new_scratch(folder)
    try:
        yield tmp
        step("written")
        swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_empty(created)
        raise
