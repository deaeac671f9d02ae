"""One writer per run directory: an advisory lock held while ``nbutils run`` writes into it.

The runner holds ``<run>/.runner.lock`` (``fcntl.flock``, exclusive) from the moment it opens
the run directory until it returns. The kernel releases the lock when the process dies in any
way, SIGKILL included, so:

- a second runner on the same directory is refused at once, with the owner's pid, host and start
  time (two writers would each rewrite ``manifest.json`` from their own copy and lose entries);
- a manifest still saying ``"running"`` while nobody holds the lock belongs to a runner that was
  killed: :func:`effective_status` reports it as ``"interrupted"``.

``flock`` is advisory and local to one machine (not reliable on every network file system);
where ``fcntl`` is missing (Windows) locking is skipped and the manifest is trusted as written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.core.run_contract import FILE

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected against a second writer
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = FILE["runner_lock"].name  # .runner.lock in the run directory


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock or raises NbutilsError."""

    def __init__(self, root: str | Path):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        if fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            who = (f"pid {owner.get('pid')} on {owner.get('host')}, since {owner.get('started')}"
                   if owner else "another process")
            raise NbutilsError(
                f"{self.path.parent} is being written by another `nbutils run` ({who})",
                fix="wait for that run to finish (or stop it), then re-run; "
                    "use a different --run-dir to work in parallel",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": platform.node(),
                                 "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
                                ).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_owner(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def is_locked(root: str | Path) -> bool:
    """Whether a live process holds ``root``'s runner lock right now."""
    path = Path(root) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock we just took
    return False


def effective_status(root: str | Path, manifest: dict) -> str | None:
    """The manifest's status, except a "running" that no live runner holds: "interrupted"."""
    status = manifest.get("status")
    if status == "running" and fcntl is not None and not is_locked(root):
        return "interrupted"
    return status
