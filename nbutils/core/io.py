"""Atomic file and folder writes: write to a temporary sibling, then rename into place.

A crash, Ctrl-C or error mid-write never leaves a half-written file or folder behind, and an
existing result is never replaced unless the caller asks for it. The new contents are flushed to
disk (fsync) before the rename, and the rename itself after it, so a power cut cannot leave the
final name pointing at an empty file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbutils.core.errors import NbutilsError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


class LeftoverWarning(UserWarning):
    """A hidden temporary file or folder of an earlier, killed write was found (and removed)."""


# The temp name carries the writer's host and pid (".NAME.tmp-HOST-PID-RANDOM"), so a later write
# can tell a leftover of a killed process (SIGKILL, power cut: no `finally` ran) from a live one.
_HOST = re.sub(r"[^A-Za-z0-9]", "", platform.node())[:24] or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or cannot tell: leave it alone
    return True


def clean_leftovers(path: str | Path) -> list[Path]:
    """Remove hidden temporaries of ``path`` left by dead writers on this host; warn about them.

    Leftovers of another host, of a live process, or in the older name format without a pid are
    only reported (a warning naming them), never removed. Returns the removed paths.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp-(?:(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-)?")
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match:
            continue
        pid = match.group("pid")
        if pid is not None and match.group("host") == _HOST:
            if _pid_alive(int(pid)):
                continue  # a write in progress
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
            warnings.warn(f"removed {entry}: an unfinished write of {path.name} by process {pid}, "
                          "which was killed before it could clean up", LeftoverWarning, stacklevel=3)
        else:
            warnings.warn(f"found {entry}: an unfinished write of {path.name} (by an older nbutils or "
                          "another host); delete it if no other process is writing there",
                          LeftoverWarning, stacklevel=3)
    return removed


def _tmp_sibling(path: Path, *, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    prefix = f".{path.name}.tmp-{_HOST}-{os.getpid()}-"
    if directory:
        name = tempfile.mkdtemp(prefix=prefix, dir=path.parent)
        os.chmod(name, 0o777 & ~_UMASK)  # mkdtemp's 0700 would stick to the renamed result
        return Path(name)
    fd, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(fd)
    # mkstemp makes the file 0600; results should get the usual umask-based mode like any file
    os.chmod(name, 0o666 & ~_UMASK)
    return Path(name)


def _fsync(path: Path) -> None:
    """Flush one file's or folder's data to disk; a no-op where the OS refuses (folders on Windows)."""
    if path.is_dir():
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    else:  # Windows flushes only handles opened for writing
        flags = os.O_RDWR if os.name == "nt" else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder))


@contextlib.contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path; on success it is renamed to ``path``, on error removed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise NbutilsError(f"{path} already exists", fix="choose another path or pass overwrite")
    tmp = _tmp_sibling(path, directory=False)
    try:
        yield tmp
        _fsync(tmp)
        if not overwrite and path.exists():  # a long write (streamed predictions) can be overtaken
            raise NbutilsError(f"{path} appeared while writing; refusing to overwrite it",
                               fix="choose another path or pass overwrite")
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` only if the block succeeds.

    With ``overwrite=False`` an existing ``path`` is an error (checked before any work and again
    at the rename), so an earlier result is never lost.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise NbutilsError(
            f"{path} already exists; refusing to overwrite it",
            fix="choose a new output folder, or pass --overwrite / overwrite=True",
        )
    tmp = _tmp_sibling(path, directory=True)
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.exists():
            if not overwrite:
                raise NbutilsError(f"{path} appeared while writing; refusing to overwrite it")
            old = _tmp_sibling(path, directory=True)
            old.rmdir()
            os.replace(path, old)  # move the old result aside first: the swap is two renames
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write JSON atomically, UTF-8 (Chinese stays readable), keys in insertion order."""
    return write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=_jsonable) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(obj: Any) -> Any:
    # numpy scalars/arrays and Paths show up in metrics dicts; make them plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
