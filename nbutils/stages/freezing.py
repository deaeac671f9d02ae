"""The layer-freezing stage (notebook 05): every freezing strategy fine-tuned on the same budget and
data, compared.

``FreezingComparison.open(globals())`` reads the notebook's parameters (the run's encoder, the
strategies, the seeds, the shared data and budget) and shows the plan; each later cell is one
call: :meth:`~FreezingComparison.run`, :meth:`~FreezingComparison.show_accuracy_vs_params`,
:meth:`~FreezingComparison.show_accuracy_vs_time`, :meth:`~FreezingComparison.show_curves`,
:meth:`~FreezingComparison.show_findings`. The comparison itself is
:mod:`nbutils.training.freezing`; the methods return nothing, so a cell shows only what its
section shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from IPython.display import Markdown, display

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.stages.parameters import require

STAGE = "freezing"
PARAMETERS = ("run_dir", "overwrite", "data_dir", "data_format", "data_on_bad_rows", "data_text_column",
              "data_label_column", "data_label_delimiter", "seed", "device", "precision", "freeze_strategies",
              "freeze_seeds", "freeze_max_train_samples", "freeze_max_dev_test_samples", "freeze_llrd_decay",
              "freeze_include_random_control")
# the summary table's columns and their formats
SUMMARY_FORMATS = {"seeds": None, "trainable_params": "{:,.0f}", "trainable_fraction": "{:.2%}",
                   "test_accuracy_mean": "{:.2%}", "test_accuracy_std": "{:.2%}", "test_macro_f1_mean": "{:.2%}",
                   "dev_accuracy_mean": "{:.2%}", "train_time_s_mean": "{:.1f}",
                   "samples_per_second_mean": "{:.0f}", "peak_memory_mb_mean": "{:.0f}"}


class FreezingComparison:
    """One layer-freezing comparison of a run directory, opened from notebook 05's parameters."""

    def __init__(self, params: Mapping[str, Any], model_dir: Path, strategies, seeds: list[int], dataset, config):
        self.params = params
        self.paths = RunPaths(params["run_dir"])
        self.model_dir = model_dir
        self.strategies = strategies
        self.seeds = seeds
        self.dataset = dataset
        self.config = config  # the freeze_* budget every strategy shares
        self.results = None  # results.csv as a table once run() ran
        self.history = None  # history.csv as a table once run() ran

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> FreezingComparison:
        """The stage for notebook 05's parameters (its ``globals()``): prints the device, the
        encoder and the data, shows the plan (strategies x seeds)."""
        from nbutils.runtime.device import choose_device
        from nbutils.training import freezing

        require(params, PARAMETERS, "05_layer_freezing")
        p = params
        model_dir = RunPaths(p["run_dir"]).base_model()
        num_layers = freezing.encoder_layers(model_dir)
        strategies = freezing.select_strategies(p["freeze_strategies"], num_layers, llrd_decay=p["freeze_llrd_decay"])
        seeds = freezing.as_list(p["freeze_seeds"], int)  # `papermill -p freeze_seeds 1,2` gives the string "1,2"
        print(choose_device(p["device"], p["precision"]).describe())
        print(f"encoder: {model_dir} ({num_layers} layers)")
        ds = freezing.comparison_data(p["data_dir"], p["data_format"], on_bad_rows=p["data_on_bad_rows"],
                                      seed=p["seed"], text_column=p["data_text_column"],
                                      label_column=p["data_label_column"],
                                      max_train_samples=p["freeze_max_train_samples"],
                                      max_dev_test_samples=p["freeze_max_dev_test_samples"],
                                      label_delimiter=p["data_label_delimiter"])
        print(ds)
        # the freeze_* budget (epochs, batch size, learning rate, max_length, evaluations) every strategy shares
        config = freezing.comparison_config_from_params(p, n_train=ds.sizes()["train"])
        control = p["freeze_include_random_control"]
        display(freezing.plan_table(strategies, random_init_control=control))
        print(f"{len(strategies) + bool(control)} strategies x {len(seeds)} seed(s); "
              f"evaluation every {config.eval_steps} steps")
        return cls(params, model_dir, strategies, seeds, ds, config)

    def run(self, *, overwrite: bool) -> None:
        """Fine-tune every strategy once per seed (``overwrite``: replace finished results); show
        the summary (mean and spread over seeds)."""
        import pandas as pd

        from nbutils.reporting import findings
        from nbutils.training import freezing

        self.results = freezing.run_comparison(
            self.dataset, self.model_dir, self.paths.freezing, self.strategies, self.seeds, self.config,
            random_init_control=self.params["freeze_include_random_control"], overwrite=overwrite,
        )
        self.history = pd.read_csv(self.paths.file("freezing_history"))
        summary = findings.summarise(self.results)
        print("peak memory:", ", ".join(self.results["peak_memory_kind"].unique()))
        display(summary[list(SUMMARY_FORMATS)].style.format(
            {column: f for column, f in SUMMARY_FORMATS.items() if f}, na_rep="-"))

    def _compared(self):
        if self.results is None:
            raise NbutilsError("no comparison yet", fix="run the comparison cell (stage.run) first")
        return self.results

    def _show(self, fig, name: str) -> None:
        from nbutils.reporting import plots

        plots.show_figure(fig, self.paths.figure(STAGE, name))

    def show_accuracy_vs_params(self) -> None:
        from nbutils.reporting import plots

        self._show(plots.accuracy_vs_params(self._compared()), "accuracy_vs_params")

    def show_accuracy_vs_time(self) -> None:
        from nbutils.reporting import plots

        self._show(plots.accuracy_vs_time(self._compared()), "accuracy_vs_time")

    def show_curves(self) -> None:
        """Training loss and dev accuracy against the step, strategies overlaid."""
        from nbutils.reporting import plots

        self._compared()
        self._show(plots.strategy_curves(self.history), "curves")

    def show_findings(self) -> None:
        """What the numbers show, computed from results.csv."""
        from nbutils.reporting import findings

        display(Markdown(findings.describe_findings(self._compared())))
