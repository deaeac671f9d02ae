"""Reliability, runner kind (docs/reliability.md): re-entry with
``--only``, one writer per run directory, and runs killed in ways no ``finally`` sees.

Each test failed on the code before the fix. Signals are sent to real subprocesses; the notebooks
are tiny (a kernel start is the slow part), so each test takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from tiny_notebooks import write_notebook

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import REPO_ROOT
from nbutils.pipeline.runner import RunFailed, discover_notebooks, run_pipeline, select_notebooks

PARAMETERS = '''\
run_dir: str = ""  # where outputs go
headless: bool = False  # papermill sets True
label: str = "x"  # a string
fail: bool = False  # raise in the notebook
wait_for: str = ""  # a file to wait for before finishing
'''

BODY = '''\
import json, pathlib, time
values = {"label": label}
deadline = time.monotonic() + 60
while wait_for and not pathlib.Path(wait_for).exists() and time.monotonic() < deadline:
    time.sleep(0.1)
if fail:
    values["parsed"] = json.loads("{not json")
pathlib.Path(run_dir, "echo.json").write_text(json.dumps(values))
'''


@pytest.fixture
def project(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_echo.ipynb", BODY, PARAMETERS)
    write_notebook(notebooks / "02_second.ipynb", BODY, PARAMETERS)
    profile = tmp_path / "test.yaml"
    profile.write_text("label: hello\n")
    return tmp_path, notebooks, profile


def _run(project, **kwargs) -> Path:
    tmp, notebooks, profile = project
    return run_pipeline(str(profile), kwargs.pop("overrides", None), notebook_dir=notebooks,
                        runs_dir=tmp / "runs", log=lambda *_: None, **kwargs)


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


# --- --only parsing ---------------------------------------------------------------------------


def test_only_rejects_a_backwards_range_and_an_empty_selection(project):
    notebooks = discover_notebooks(project[1])
    with pytest.raises(NbutilsError, match="backwards"):
        select_notebooks(notebooks, "2-1")
    with pytest.raises(NbutilsError, match="selects no notebook"):
        _run(project, only="")
    assert not (project[0] / "runs").exists() or not any((project[0] / "runs").iterdir())


# --- re-entry ---------------------------------------------------------------------------------


def test_only_refuses_a_folder_that_is_not_a_run(project, tmp_path):
    dataset = tmp_path / "my_dataset"
    dataset.mkdir()
    (dataset / "train.csv").write_text("text,label\n")
    with pytest.raises(NbutilsError, match="not a run directory"):
        _run(project, only="01", run_dir=dataset)
    assert sorted(p.name for p in dataset.iterdir()) == ["train.csv"]  # nothing written into it


def test_reentry_parameter_table_shows_the_values_it_ran_with(project):
    run = _run(project, only="01")
    _run(project, only="01", run_dir=run, overrides={"label": "changed"})
    manifest = _manifest(run)
    assert manifest["parameters"]["label"] == "changed"
    assert manifest["reentries"][-1]["replaced"] == {"label": "hello"}
    assert manifest["reentries"][-1]["status"] == "ok"


def test_failed_reentry_does_not_flip_a_complete_run_to_failed(project):
    run = _run(project, only="01")
    with pytest.raises(RunFailed):
        _run(project, only="01", run_dir=run, overrides={"fail": True})
    manifest = _manifest(run)
    assert manifest["status"] == "ok"
    assert manifest["reentries"][-1]["status"] == "failed"
    assert [n["status"] for n in manifest["notebooks"]] == ["ok", "failed"]
    assert "fail" not in manifest["parameters"]  # the failed stage's values did not replace the table


def test_failed_block_names_the_failing_call_not_the_first_line(project):
    with pytest.raises(RunFailed) as err:
        _run(project, only="01", overrides={"fail": True})
    assert '  in: values["parsed"] = json.loads("{not json")' in str(err.value)


def test_overwrite_reaches_the_notebooks_only_from_the_runner(project, tmp_path):
    write_notebook(project[1] / "03_overwrite.ipynb",
                   body='import pathlib\npathlib.Path(run_dir, "ow.txt").write_text(str(overwrite))\n',
                   parameters=PARAMETERS + 'overwrite: bool = False  # replace\n')
    run = _run(project, only="03", overwrite=True)
    assert (run / "ow.txt").read_text() == "True"
    with pytest.raises(NbutilsError, match="set by the runner"):
        _run(project, only="03", overrides={"overwrite": True})


def test_finished_stages_accept_the_runner_overwrite_flag():
    """03, 04 and 05 declare ``overwrite`` (True interactively: a second Run All in JupyterLab
    replaces the first) and pass it straight on; headless, the runner injects it
    (False unless --overwrite), so a re-entry never replaces finished results unasked."""
    import papermill

    for number in ("03", "04", "05"):
        path = next((REPO_ROOT / "notebooks").glob(f"{number}_*.ipynb"))
        declared = papermill.inspect_notebook(str(path))
        assert "overwrite" in declared, path.name
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "overwrite=overwrite" in code, path.name


# --- one writer; runs killed without a chance to clean up ---------------------------------------


def _start_runner(project, *extra: str) -> subprocess.Popen:
    tmp, notebooks, profile = project
    code = ("import sys; from pathlib import Path; from nbutils.pipeline import runner; "
            f"runner.NOTEBOOK_DIR = Path({str(notebooks)!r}); runner.RUNS_DIR = Path({str(tmp / 'runs')!r}); "
            "sys.exit(runner.main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, "--profile", str(profile), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_for_running(tmp: Path, proc: subprocess.Popen, timeout: float = 300) -> Path:
    # A guard, not a speed check: it returns as soon as the notebook runs. Under `make test`'s two
    # workers on a loaded 2-core machine, starting a runner and its kernel took over 60 s.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for manifest in (tmp / "runs").glob("*/manifest.json"):
            try:
                notebooks = json.loads(manifest.read_text()).get("notebooks") or []
            except ValueError:
                continue
            if notebooks and notebooks[-1]["status"] == "running":
                time.sleep(1.0)  # let the kernel start executing
                return manifest.parent
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early: {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("the runner never started a notebook")


def _stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner's session: it and its kernel, nothing else
    except ProcessLookupError:
        pass
    proc.communicate(timeout=120)


def test_second_runner_on_the_same_run_dir_refuses(project, tmp_path):
    from nbutils.pipeline.runlock import is_locked

    flag = tmp_path / "go"
    proc = _start_runner(project, "--only", "01", "-p", f"wait_for={flag}")
    try:
        run = _wait_for_running(project[0], proc)
        assert is_locked(run)
        with pytest.raises(NbutilsError, match=r"being written by another `nbutils run` \(pid \d+"):
            _run(project, only="02", run_dir=run)
        flag.touch()
        assert proc.wait(timeout=120) == 0
    finally:
        _stop_group(proc)
    manifest = _manifest(run)
    assert manifest["status"] == "ok" and [n["name"] for n in manifest["notebooks"]] == ["01_echo"]
    assert "reentries" not in manifest  # the refused runner wrote nothing
    assert not is_locked(run)  # released when the first runner finished: a re-entry may start


@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_killed_runner_leaves_interrupted_not_running(project, tmp_path, how):
    from nbutils.reporting.report import load_run, summary_markdown

    proc = _start_runner(project, "--only", "01", "-p", f"wait_for={tmp_path / 'never'}")
    try:
        run = _wait_for_running(project[0], proc)
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=120)
    finally:
        _stop_group(proc)
    data = load_run(run)
    assert data.manifest["status"] == "interrupted"
    assert "run interrupted" in summary_markdown(data)
    if how == "SIGHUP":
        return
    # the next re-entry takes over and records the dead runner's stage as interrupted
    _run(project, only="01", run_dir=run)
    manifest = _manifest(run)
    assert [n["status"] for n in manifest["notebooks"]] == ["interrupted", "ok"]
    assert manifest["status"] == "ok"
