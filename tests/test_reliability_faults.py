"""Reliability, fault kind (docs/reliability.md): signals, killed writers, a full disk, a
read-only folder, a closed pipe, and reports of folders that are not (whole) runs. Every
interrupted or failed command must leave nothing but what it reports.

Each test failed on the code before the fix. Disk-full and permission errors are simulated with
monkeypatch (tests may run as root, where a read-only folder is still writable); signals go to
real subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nbutils.cli import main as cli
from nbutils.core.paths import REPO_ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- signals and killed writers ----------------------------------------------------------------

# `nbutils convert` with its safetensors writer slowed down, so a signal lands mid-write.
SLOW_CONVERT = """
import sys, time
import nbutils.checkpoints.convert as convert
real = convert.write_safetensors
def slow(path, tensors):
    n = real(path, tensors)
    print("writing", flush=True)
    time.sleep(60)
    return n
convert.write_safetensors = slow
from nbutils.cli import main
sys.exit(main(["convert", sys.argv[1], sys.argv[2]]))
"""


def _start_slow_convert(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CONVERT, str(FIXTURES / "pretrain"), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    assert _hidden(out.parent)  # the temporary folder exists now
    return proc


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP"])
def test_signal_during_convert_leaves_no_temporary_folder(tmp_path, how):
    out = tmp_path / "model"
    proc = _start_slow_convert(out)
    proc.send_signal(getattr(signal, how))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, how)
    assert "stopped by signal" in err and "Traceback" not in err
    assert _hidden(tmp_path) == [] and not out.exists()


def test_leftover_of_a_killed_writer_is_removed_and_reported_next_time(tmp_path):
    from nbutils.core.io import LeftoverWarning, atomic_dir

    out = tmp_path / "model"
    proc = _start_slow_convert(out)
    proc.kill()  # SIGKILL: no handler, no finally; the temporary folder stays behind
    proc.communicate(timeout=60)
    leftovers = _hidden(tmp_path)
    assert leftovers, "SIGKILL should have left the temporary folder"
    with pytest.warns(LeftoverWarning, match="killed before it could clean up"):
        with atomic_dir(out) as tmp:
            (tmp / "x").write_text("new")
    assert _hidden(tmp_path) == [] and (out / "x").read_text() == "new"


def test_leftover_of_a_live_writer_is_left_alone(tmp_path):
    from nbutils.core.io import atomic_file, clean_leftovers

    target = tmp_path / "f.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("half")
        assert clean_leftovers(target) == [] and tmp.exists()  # ours, alive: kept
    assert target.read_text() == "half"


# --- errors a user can fix: a message, not a traceback ----------------------------------------


def test_disk_full_during_convert_is_a_message_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import nbutils.checkpoints.convert as convert

    real = convert.write_safetensors

    def full_disk(path, tensors):
        real(path, tensors)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(convert, "write_safetensors", full_disk)
    assert cli(["convert", str(FIXTURES / "pretrain"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no space left on the device while writing" in err and "model.safetensors" in err
    assert "df -h" in err and not list(tmp_path.iterdir())


def test_permission_denied_is_a_message(tmp_path, monkeypatch, capsys):
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)
    assert cli(["convert", str(FIXTURES / "pretrain"), str(tmp_path / "ro" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"permission denied: {tmp_path / 'ro'}" in err and "how to fix" in err


def test_data_check_into_a_closed_pipe_is_quiet(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "class.txt").write_text("a\nb")
    (folder / "train.txt").write_text("".join(f"标题{i}\t{i % 2}\n" for i in range(50)))
    (folder / "dev.txt").write_text("开发\t0\n")
    (folder / "test.txt").write_text("测试\t1\n")
    read, write = os.pipe()
    os.close(read)  # like `| head` that has already exited: every write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "nbutils.cli", "data", "check", str(folder)],
                          stdout=write, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == 141


# --- reports of folders that are not (whole) runs -----------------------------------------------


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.csv").write_text("text,label\n")
    assert cli(["report", str(folder)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["train.csv"]


def test_report_names_a_corrupt_metrics_file_as_unreadable(tmp_path):
    from nbutils.reporting.report import load_run, summary_markdown

    run = tmp_path / "run"
    (run / "finetune").mkdir(parents=True)
    (run / "finetune" / "metrics.json").write_text('{"test": {"accuracy": 0.9')  # cut mid-write
    (run / "manifest.json").write_text(json.dumps({"profile": "demo", "status": "ok", "notebooks": []}))
    text = summary_markdown(load_run(run))
    assert "Could not read `finetune/metrics.json`" in text and "JSONDecodeError" in text
    assert "Not in this run: `finetune/metrics.json`" not in text

