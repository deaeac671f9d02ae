"""The papermill runner: run directories, parameter injection, failure reporting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_notebooks import write_notebook

from nbutils.core.errors import NbutilsError
from nbutils.pipeline.runner import (
    RunFailed,
    cast_to_declared,
    main,
    parse_override,
    resolve_paths,
    run_pipeline,
    select_notebooks,
)

PARAMETERS = '''\
run_dir: str = ""  # where outputs go
headless: bool = False  # papermill sets True
label: str = "x"  # a string
rate: float = 0.1  # a float
flag: bool = False  # a boolean
sizes: list = [1]  # a list
'''

ECHO = '''\
import json, pathlib
pathlib.Path(run_dir, "echo.json").write_text(json.dumps(
    {"label": label, "rate": rate, "flag": flag, "sizes": sizes, "headless": headless,
     "types": [type(v).__name__ for v in (label, rate, flag, sizes)]}))
'''


@pytest.fixture
def project(tmp_path: Path):
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    write_notebook(notebooks / "01_echo.ipynb", ECHO, PARAMETERS)
    profile = tmp_path / "test.yaml"
    profile.write_text("label: hello\nrate: 2\nflag: false\nsizes: [3, 6]\n")
    return tmp_path, notebooks, profile


def test_injects_strings_floats_booleans_and_lists(project):
    tmp, notebooks, profile = project
    overrides = dict(parse_override(p) for p in ["rate=1e-5", "flag=true", "label=中文 标签"])
    run = run_pipeline(str(profile), overrides, notebook_dir=notebooks, runs_dir=tmp / "runs",
                       log=lambda *_: None)
    echo = json.loads((run / "echo.json").read_text())
    assert echo["label"] == "中文 标签"
    assert echo["rate"] == pytest.approx(1e-5)
    assert echo["flag"] is True and echo["headless"] is True
    assert echo["sizes"] == [3, 6]
    assert echo["types"] == ["str", "float", "bool", "list"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert [n["status"] for n in manifest["notebooks"]] == ["ok"]
    assert (run / manifest["notebooks"][0]["executed_path"]).is_file()
    assert manifest["parameters"]["rate"] == pytest.approx(1e-5)
    assert "torch" in manifest["packages"]


def test_each_run_gets_its_own_directory(project):
    tmp, notebooks, profile = project
    runs = [run_pipeline(str(profile), notebook_dir=notebooks, runs_dir=tmp / "runs",
                         log=lambda *_: None) for _ in range(2)]
    assert runs[0] != runs[1]
    assert all((r / "echo.json").is_file() for r in runs)


def test_existing_run_dir_is_never_overwritten(project):
    tmp, notebooks, profile = project
    run = run_pipeline(str(profile), notebook_dir=notebooks, runs_dir=tmp / "runs",
                       log=lambda *_: None)
    before = (run / "echo.json").read_text()
    with pytest.raises(NbutilsError, match="never overwritten"):
        run_pipeline(str(profile), {"label": "other"}, run_dir=run, notebook_dir=notebooks,
                     log=lambda *_: None)
    assert (run / "echo.json").read_text() == before
    # re-entering a stage explicitly keeps the earlier executed notebook; the profile is
    # checked against every notebook, so keys of notebooks not selected are fine
    run_pipeline(str(profile), only="01", run_dir=run, notebook_dir=notebooks, log=lambda *_: None)
    assert sorted(p.name for p in (run / "notebooks").iterdir()) == ["01_echo.2.ipynb", "01_echo.ipynb"]
    assert len(json.loads((run / "manifest.json").read_text())["notebooks"]) == 2


def test_failure_names_notebook_cell_and_error_and_keeps_the_notebook(project, capsys):
    tmp, notebooks, profile = project
    write_notebook(notebooks / "02_boom.ipynb", "x = 1\nraise ValueError('the data is bad')", PARAMETERS)
    write_notebook(notebooks / "03_never.ipynb", ECHO.replace("echo.json", "never.json"), PARAMETERS)
    with pytest.raises(RunFailed) as info:
        run_pipeline(str(profile), notebook_dir=notebooks, runs_dir=tmp / "runs",
                     log=lambda *_: None)
    text = str(info.value)
    # cell 3 of the executed notebook: papermill inserts the injected-parameters cell
    assert "FAILED 02_boom, cell 3" in text
    assert "in: raise ValueError('the data is bad')" in text  # the failing line, not the cell's first
    assert "ValueError: the data is bad" in text
    run = next((tmp / "runs").iterdir())
    assert (run / "notebooks" / "02_boom.ipynb").is_file()
    assert not (run / "never.json").exists()  # stops at the first failure
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert [n["status"] for n in manifest["notebooks"]] == ["ok", "failed"]
    assert "the data is bad" in manifest["notebooks"][1]["error"]


def test_cli_exit_code_on_failure(project, monkeypatch, capsys):
    tmp, notebooks, profile = project
    write_notebook(notebooks / "02_boom.ipynb", "raise RuntimeError('nope')", PARAMETERS)
    monkeypatch.setattr("nbutils.pipeline.runner.NOTEBOOK_DIR", notebooks)
    monkeypatch.setattr("nbutils.pipeline.runner.RUNS_DIR", tmp / "runs")
    assert main(["--profile", str(profile), "-p", "label=ok"]) == 1
    err = capsys.readouterr().err
    assert "FAILED 02_boom" in err and "RuntimeError: nope" in err
    assert main(["--profile", str(profile), "--only", "01"]) == 0


def test_unknown_and_mistyped_parameters_are_errors(project):
    tmp, notebooks, profile = project
    write_notebook(notebooks / "02_other.ipynb", "pass", 'run_dir: str = ""  # out\nheadless: bool = False  # h\nonly_here: int = 1  # x\n')
    run = run_pipeline(str(profile), {"only_here": 2}, only="01", notebook_dir=notebooks,
                       runs_dir=tmp / "runs", log=lambda *_: None)
    assert (run / "echo.json").is_file()
    with pytest.raises(NbutilsError, match="unknown parameter.*lable"):
        run_pipeline(str(profile), {"lable": "typo"}, notebook_dir=notebooks,
                     runs_dir=tmp / "runs", log=lambda *_: None)
    with pytest.raises(NbutilsError, match="flag='yes please'.*declared type bool"):
        run_pipeline(str(profile), {"flag": "yes please"}, notebook_dir=notebooks,
                     runs_dir=tmp / "runs", log=lambda *_: None)
    assert [p.name for p in (tmp / "runs").iterdir()] == [run.name]  # failed plans leave no run


def test_parse_override_types():
    assert parse_override("a=3") == ("a", 3)
    assert parse_override("a=1e-5") == ("a", 1e-5)
    assert parse_override("a=5E3") == ("a", 5000.0)
    assert parse_override("a=true") == ("a", True)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=bert-base-chinese") == ("a", "bert-base-chinese")
    assert parse_override("a=") == ("a", "")
    with pytest.raises(NbutilsError):
        parse_override("no-equals")


def test_cast_to_declared():
    import numpy as np

    assert cast_to_declared("nb", "x", np.int64(3), "int") == 3
    assert type(cast_to_declared("nb", "x", np.int64(3), "int")) is int
    assert cast_to_declared("nb", "x", 3, "float") == 3.0
    assert cast_to_declared("nb", "x", (1, 2), "list") == [1, 2]
    assert cast_to_declared("nb", "x", "3,6,9", "list") == [3, 6, 9]
    assert cast_to_declared("nb", "x", 123, "str") == "123"
    with pytest.raises(NbutilsError):
        cast_to_declared("nb", "x", 1.5, "int")


def test_resolve_paths(tmp_path: Path):
    (tmp_path / "data").mkdir()
    out = resolve_paths({"data_dir": "data", "vocab_file": "", "checkpoint_source": "bert-base-chinese",
                         "model_source": "data", "name": "data"}, root=tmp_path)
    assert out["data_dir"] == str(tmp_path / "data")
    assert out["vocab_file"] == ""
    assert out["checkpoint_source"] == "bert-base-chinese"  # a hub id stays a hub id
    assert out["model_source"] == str(tmp_path / "data")
    assert out["name"] == "data"


def test_select_notebooks(tmp_path: Path):
    paths = [tmp_path / f"{i:02d}_x.ipynb" for i in range(1, 7)]
    assert select_notebooks(paths, "04") == [paths[3]]
    assert select_notebooks(paths, "1,4") == [paths[0], paths[3]]
    assert select_notebooks(paths, "02-04") == paths[1:4]
    with pytest.raises(NbutilsError, match="no notebook numbered"):
        select_notebooks(paths, "09")
