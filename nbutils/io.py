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
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nbutils.errors import NbutilsError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _tmp_sibling(path: Path, *, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
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
