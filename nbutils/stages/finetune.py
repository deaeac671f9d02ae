"""Notebook 04's stage: fine-tune the run's encoder and show what came out.

``Finetuning.open(globals())`` reads the notebook's parameters once (the run's paths, the model to
start from, the fine-tuning config, the distillation teacher, the device, the dataset) and prints
what it chose; each later cell is one call: :meth:`train`, :meth:`show_scores`,
:meth:`show_confusion`, :meth:`show_mistakes`, :meth:`show_calibration`, :meth:`show_examples`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from IPython.display import Image, display

from nbutils.core.paths import RunPaths


@dataclass
class Finetuning:
    """One fine-tuning stage of a run directory, opened from a notebook's parameters."""

    params: Mapping[str, Any]
    paths: RunPaths
    model_dir: str
    config: Any  # nbutils.training.finetune.FinetuneConfig
    teacher: Any  # None unless finetune_distill_alpha > 0
    dataset: Any
    metrics: dict = field(default_factory=dict)

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> Finetuning:
        """The stage for notebook 04's parameters (its ``globals()``); prints the device line,
        the model and the dataset."""
        from nbutils.checkpoints.weights import weights_origin
        from nbutils.data.dataset import load_dataset
        from nbutils.runtime.device import choose_device
        from nbutils.stages.explore import recommended_max_length
        from nbutils.training.distill import teacher_from_params
        from nbutils.training.finetune import FinetuneConfig

        paths = RunPaths(params["run_dir"])
        model_dir = params["model_dir_override"] or str(paths.base_model())
        # finetune_max_length = 0: the length notebook 02 recommends for this data
        max_length = params["finetune_max_length"] or recommended_max_length(paths.root)
        # every finetune_* parameter (and seed, device, precision, headless) goes into the config
        config = FinetuneConfig.from_params(params, max_length=max_length)
        print(choose_device(params["device"], params["precision"]).describe())
        print("model:", model_dir, f"({weights_origin(model_dir)['how']})")
        dataset = load_dataset(params["data_dir"], params["data_format"], on_bad_rows=params["data_on_bad_rows"],
                               text_column=params["data_text_column"], label_column=params["data_label_column"],
                               label_delimiter=params["data_label_delimiter"])
        print(dataset)
        return cls(params=params, paths=paths, model_dir=model_dir, config=config,
                   teacher=teacher_from_params(params), dataset=dataset)

    def train(self, *, overwrite: bool) -> dict:
        """Fine-tune (under torchrun with ``finetune_num_gpus`` > 1), show the curves, print how
        training went; returns metrics.json's content."""
        from nbutils.training.finetune import finetune, load_result
        from nbutils.training.length_fit import explored_max_length

        curves_png = self.paths.figure("finetune", "curves")
        if self.params["finetune_num_gpus"] > 1:
            self._train_distributed(curves_png, overwrite)
            self.metrics = load_result(self.paths.finetune)["metrics"]
        else:
            result = finetune(self.dataset, self.model_dir, self.paths.finetune, self.config,
                              curves_png=curves_png, overwrite=overwrite, teacher=self.teacher,
                              title=f"fine-tuning {self.paths.shown(self.model_dir)}",
                              # quoted if max_length cuts many texts
                              length_advice=explored_max_length(self.paths.root))
            self.metrics = result.metrics
        if self.params["finetune_num_gpus"] > 1 or self.params["headless"]:
            display(Image(filename=str(curves_png)))
        print(training_lines(self.metrics["train"]))
        return self.metrics

    def _train_distributed(self, curves_png, overwrite: bool) -> None:
        from nbutils.training.launch import config_argv, launch_distributed

        p = self.params
        argv = ["--model", self.model_dir, "--data", p["data_dir"], "--data-format", p["data_format"],
                "--on-bad-rows", p["data_on_bad_rows"], "--label-delimiter", p["data_label_delimiter"],
                "--text-column", p["data_text_column"], "--label-column", p["data_label_column"],
                *(["--overwrite"] if overwrite else []),
                "--out", self.paths.finetune, "--curves-png", curves_png, *config_argv(self.config)]
        launch_distributed(p["finetune_num_gpus"], argv)

    def predictions(self):
        """test_predictions.csv as a table."""
        from nbutils.training.finetune import load_result

        return load_result(self.paths.finetune)["test_predictions"]

    def show_scores(self) -> None:
        """The result against the TF-IDF baseline on the same examples, then the per-class table."""
        from nbutils.reporting import report
        from nbutils.training.metrics import metrics_summary, per_class_table

        print(report.baseline_comparison(self.dataset, self.metrics, self.predictions(), seed=self.params["seed"]))
        print(metrics_summary(self.metrics))
        display(per_class_table(self.metrics["test"]).style.format(
            {"precision": "{:.4f}", "recall": "{:.4f}", "f1": "{:.4f}", "support": "{:d}"}))

    def show_confusion(self) -> None:
        from nbutils.reporting import plots
        from nbutils.training.metrics import confusion_frame

        plots.use_cjk_font()
        cm = confusion_frame(self.metrics["test"])
        names = plots.plot_labels(list(cm.index))
        fig = plots.confusion_heatmap(cm.set_axis(names, axis=0).set_axis(names, axis=1))
        plots.show_figure(fig, self.paths.figure("finetune", "confusion"))

    def show_mistakes(self, n: int = 8) -> None:
        """The ``n`` test texts the model got wrong with the highest confidence."""
        preds = self.predictions()
        wrong = preds[preds["label"] != preds["pred"]].nlargest(n, "confidence")
        display(wrong[["text", "label", "pred", "confidence"]].style.format({"confidence": "{:.3f}"})
                .hide(axis="index"))

    def show_calibration(self) -> None:
        """ECE before and after temperature scaling, and the reliability diagram."""
        from nbutils.explain.calibration import (
            calibration_line,
            calibration_table,
            reliability_diagram,
        )
        from nbutils.reporting import plots

        calibration = self.metrics.get("calibration")
        if not calibration or "skipped" in calibration:
            print("no calibration in this run:", (calibration or {}).get("skipped", "metrics.json predates it"))
            return
        print(calibration_line(calibration))
        display(calibration_table(calibration).style.format(
            "{:.4f}", subset=["ece_before", "ece_after", "nll_before", "nll_after"]))
        plots.show_figure(reliability_diagram(calibration), self.paths.figure("finetune", "reliability"))

    def show_examples(self, texts: Sequence[str]) -> None:
        """``texts`` classified, each character coloured for the predicted class; in JupyterLab
        also a box that classifies what is typed into it."""
        from nbutils.explain.display import explain_box, show_examples
        from nbutils.inference.predict import examples_table

        model, device = self.paths.finetuned_model, self.params["device"]
        display(examples_table(texts, model, device=device).style.format({"confidence": "{:.3f}"}))
        show_examples(texts, model, device=device)
        if not self.params["headless"]:
            display(explain_box(model, device=device))


def training_lines(train: Mapping[str, Any]) -> str:
    """How training went, in two lines (steps, speed, best dev score; memory, trainable parameters)."""
    step_rate = train.get("step_samples_per_second")  # None when a resumed run had no steps left
    return (f"trained {train['steps']} steps in {train['runtime_s']:.0f} s "
            f"({train['samples_per_second']:.1f} samples/s with evaluations"
            + (f", {step_rate:.1f} in the optimizer steps alone" if step_rate else "")
            + f", {train['world_size']} process(es)); best dev macro-F1 {train['best_dev_macro_f1']:.4f}\n"
            f"peak memory: {train['peak_memory_mb']:.0f} MB ({train['peak_memory_kind']}); "
            f"trainable parameters: {train['trainable_params']:,}")
