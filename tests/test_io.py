"""Atomic writes: results appear whole or not at all, and earlier results are never lost."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.core.io import atomic_dir, atomic_file, read_json, write_json


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_dir_appears_only_on_success(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights.bin").write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert _siblings(target) == []  # neither the result nor a temp folder is left
    with atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"whole")
    assert (target / "weights.bin").read_bytes() == b"whole"
    assert _siblings(target) == ["model"]


def test_atomic_dir_never_overwrites_unless_asked(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("first")
    with pytest.raises(NbutilsError, match="refusing to overwrite"):
        with atomic_dir(target) as tmp:
            pytest.fail("the block must not run when the result exists")
    with pytest.raises(NbutilsError, match="appeared while writing"):
        with atomic_dir(tmp_path / "race") as tmp:
            (tmp_path / "race").mkdir()  # someone else finished first
    assert (target / "a").read_text() == "first"
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "b").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert _siblings(target) == ["model", "race"]


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.9, "类别": "体育"})
    with pytest.raises(ValueError):
        with atomic_file(target) as tmp:
            tmp.write_text("{broken")
            raise ValueError("serialisation failed")
    assert read_json(target) == {"accuracy": 0.9, "类别": "体育"}
    assert _siblings(target) == ["metrics.json"]
    with pytest.raises(NbutilsError, match="already exists"):
        with atomic_file(target, overwrite=False):
            pass


def test_results_get_the_usual_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    write_json(tmp_path / "f.json", {})
    with atomic_dir(tmp_path / "d"):
        pass
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o777 & ~umask


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads fsync'd paths from /proc (Linux)")
def test_contents_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    # fsync'd before os.replace: after a power cut the final name never points at empty data
    synced, real_fsync = [], os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    tmp_path = tmp_path.resolve()
    target = tmp_path / "result.json"
    with atomic_file(target) as tmp:
        tmp.write_text("{}")
        assert not synced
    assert synced[0] == str(tmp) and str(tmp_path) in synced  # the file, then the folder holding the name
    synced.clear()
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"1234")
    assert synced[:2] == [str(tmp / "weights.bin"), str(tmp)] and synced[-1] == str(tmp_path)


def test_atomic_file_without_overwrite_keeps_a_file_that_appeared_while_writing(tmp_path):
    # a long streamed write (nbutils predict --output) can be overtaken by another process
    target = tmp_path / "out.csv"
    with pytest.raises(NbutilsError, match="appeared while writing"):
        with atomic_file(target, overwrite=False) as tmp:
            tmp.write_text("ours", encoding="utf-8")
            target.write_text("theirs", encoding="utf-8")
    assert target.read_text(encoding="utf-8") == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
