"""The report stage (notebook 06): one report of a run, built from the files the earlier notebooks
wrote (nothing is recomputed except the TF-IDF baseline).

``Report.open(globals())`` reads the run, trains the baseline on the model's own examples and
shows the title and verdict; each later cell is one section, one call (:meth:`~Report.results`,
:meth:`~Report.calibration`, ... :meth:`~Report.files`), and :meth:`~Report.write_html` exports
the executed notebook to ``report/report.html``. Like the section functions, the methods return
nothing, so a cell shows only what its section shows. The sections themselves are
:mod:`nbutils.reporting.sections`; which of them a run lacks the inputs for, and how report.html
is written (papermill's saved outputs, else a headless re-run), is decided here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from nbutils.core.paths import RunPaths
from nbutils.reporting import report, sections
from nbutils.stages.parameters import require

PARAMETERS = ("run_dir", "data_dir", "data_format", "data_on_bad_rows", "data_text_column", "data_label_column",
              "data_label_delimiter", "seed", "report_title", "report_baseline", "report_baseline_full_split",
              "report_max_examples", "report_max_chars", "report_write_html")


class Report:
    """The report of one run directory, opened from notebook 06's parameters."""

    def __init__(self, params: Mapping[str, Any], run: report.RunData, title: str, trained: sections.BaselineRun):
        self.params = params  # the notebook's namespace: write_html() re-runs the notebook with it
        self.paths: RunPaths = run.paths
        self.run = run
        self.title = title
        self.trained = trained  # the TF-IDF baseline: metrics, test predictions, how it was trained
        self.dataset_row: str | None = None  # the published-numbers row of this dataset (set by references)
        self.is_multi_label: bool | None = None  # set by multi_label()
        self.html: Path | None = None  # report/report.html once written

    @property
    def baseline(self) -> dict | None:
        """``report/baseline.json``'s content (None when the baseline is off or could not run)."""
        return self.trained.metrics

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> Report:
        """Read the run, train the baseline (shown nowhere yet: the verdict puts its score beside
        the model's), show the title and the verdict."""
        from nbutils.reporting import plots

        require(params, PARAMETERS, "06_report")
        p = params
        paths = RunPaths(p["run_dir"])
        run = report.load_run(paths.root)
        paths.report.mkdir(parents=True, exist_ok=True)
        plots.use_cjk_font()
        pd.set_option("display.max_colwidth", None)  # long values wrap in report.html; never cut with "..."
        title = p["report_title"] or report.default_title(run, p["data_dir"])
        trained = sections.train_baseline(run, p["data_dir"], p["data_format"], on_bad_rows=p["data_on_bad_rows"],
                                          seed=p["seed"], text_column=p["data_text_column"],
                                          label_column=p["data_label_column"],
                                          label_delimiter=p["data_label_delimiter"],
                                          enabled=p["report_baseline"], full_split=p["report_baseline_full_split"])
        sections.say(f"# {title}\n\n" + report.verdict_markdown(run, trained.metrics, data_dir=p["data_dir"]))
        return cls(params, run, title, trained)

    def results(self) -> None:
        sections.results_section(self.run, self.baseline)

    def calibration(self) -> None:
        sections.calibration_section(self.run)

    def multi_label(self) -> None:
        """Micro/macro F1, subset accuracy, per-label report for multi-label data (one line for
        one label per text); ``is_multi_label`` says which."""
        self.is_multi_label = sections.multi_label_section(self.run, self.baseline)

    def curves(self) -> None:
        sections.curves_section(self.run)

    def freezing(self) -> None:
        sections.freezing_section(self.run)

    def error_analysis(self) -> None:
        """The confused pairs, the surest mistakes and the least sure correct predictions, beside
        the baseline's; says which file is missing when the run has no test predictions."""
        if report.RunData.missing(self.run, "predictions") is not None:
            sections.say(self.run.missing("predictions"))
            return
        sections.error_analysis(self.run.predictions, max_examples=self.params["report_max_examples"],
                                max_chars=self.params["report_max_chars"], baseline=self.baseline,
                                baseline_pred=self.trained.test_pred, model_dir=self.paths.finetuned_model)

    def what_was_run(self) -> None:
        sections.run_section(self.run)

    def data(self) -> None:
        sections.data_section(self.run)

    def baseline_how(self) -> None:
        """How the baseline was trained and scored (or why it was not)."""
        for line in self.trained.words:
            sections.say(line)

    def ablation(self) -> None:
        sections.ablation_section(self.baseline)

    def references(self) -> None:
        """Published numbers; keeps the row of this run's dataset (the summary names it)."""
        self.dataset_row = sections.references_section(self.run, self.params["data_format"])

    def files(self) -> None:
        """Write ``report/summary.md``, then list the packages, timings and files."""
        from nbutils.core.io import write_text

        write_text(self.paths.file("summary"), report.summary_markdown(self.run, self.baseline, title=self.title,
                                                                       dataset=self.dataset_row))
        sections.files_section(self.run)

    def write_html(self) -> None:
        """``report/report.html`` (``report_write_html``): under ``nbutils run`` papermill has
        saved every output, which are exported; in JupyterLab the outputs are not on disk, so the
        notebook runs once more headless with the same parameters."""
        if not self.params["report_write_html"]:
            return
        executed = report.find_executed_notebook(self.paths)
        if executed is not None:
            written = report.render_html(executed, self.paths.file("report_html"), title=self.title)
        else:
            print("writing report.html: running this notebook again headless with the same parameters ...")
            written = report.write_html_from_kernel(self.paths, self.params)
        print("wrote", written)
        self.html = written
