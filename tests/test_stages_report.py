"""Notebook 06's stage object (nbutils.stages.report): what a run without results gets, and how
report.html is written.

The full report runs in the smoke run, tests/test_report.py and the JupyterLab check; here the
stage's own branches run on an empty run directory, with the HTML export replaced by a recorder.
"""

from __future__ import annotations

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.reporting import report as report_module
from nbutils.stages.report import PARAMETERS, Report


def _params(tmp_path, **values) -> dict:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return {name: None for name in PARAMETERS} | {
        "run_dir": str(run_dir), "data_dir": str(tmp_path / "no-data"), "data_format": "auto",
        "data_on_bad_rows": "raise", "data_text_column": "text", "data_label_column": "label",
        "data_label_delimiter": "", "seed": 1, "report_title": "", "report_baseline": False,
        "report_baseline_full_split": False, "report_max_examples": 3, "report_max_chars": 40,
        "report_write_html": True} | values


@pytest.fixture
def shown(monkeypatch):
    """What the sections would show as Markdown (say), in order."""
    from nbutils.reporting import sections

    said = []
    monkeypatch.setattr(sections, "say", said.append)
    return said


def test_open_needs_every_parameter(tmp_path):
    params = _params(tmp_path)
    del params["report_max_chars"]
    with pytest.raises(NbutilsError, match="06_report: no parameter report_max_chars"):
        Report.open(params)


def test_a_run_without_results_gets_a_title_a_verdict_and_says_what_is_missing(tmp_path, shown):
    stage = Report.open(_params(tmp_path, report_title="An empty run"))
    assert shown[0].startswith("# An empty run\n\n")
    assert stage.baseline is None and stage.paths.report.is_dir()
    stage.baseline_how()
    assert shown[-1] == "The baseline is switched off (`report_baseline=False`)."
    stage.error_analysis()
    assert shown[-1] == stage.run.missing("predictions") and "test_predictions.csv" in shown[-1]


def test_report_html_comes_from_papermill_s_outputs_else_from_a_headless_rerun(tmp_path, shown, monkeypatch,
                                                                             capsys):
    calls = []
    monkeypatch.setattr(report_module, "render_html", lambda nb, out, title: calls.append(("render", nb, title)) or out)
    monkeypatch.setattr(report_module, "write_html_from_kernel",
                        lambda paths, namespace: calls.append(("rerun", namespace)) or paths.file("report_html"))
    params = _params(tmp_path, report_title="T")
    stage = Report.open(params)

    monkeypatch.setattr(report_module, "find_executed_notebook", lambda paths: None)  # JupyterLab
    stage.write_html()
    assert calls == [("rerun", params)]  # the notebook's own namespace: the same parameters again
    assert stage.html == stage.paths.file("report_html")
    assert "running this notebook again headless" in capsys.readouterr().out

    executed = tmp_path / "06_report.ipynb"
    monkeypatch.setattr(report_module, "find_executed_notebook", lambda paths: executed)  # nbutils run
    stage.write_html()
    assert calls[-1] == ("render", executed, "T")

    calls.clear()
    Report.open(_params(tmp_path, report_write_html=False)).write_html()
    assert calls == []
