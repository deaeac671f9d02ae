"""The fine-tuning stage (notebook 04): fine-tune the run's encoder and show what came out.

``Finetuning.open(globals())`` reads the notebook's parameters once (the run's paths, the model to
start from, the fine-tuning config, the distillation teacher, the device, the dataset) and prints
what it chose; each later cell is one call: :meth:`Finetuning.train`, :meth:`~Finetuning.show_scores`,
:meth:`~Finetuning.show_confusion`, :meth:`~Finetuning.show_mistakes`,
:meth:`~Finetuning.show_calibration`, :meth:`~Finetuning.show_examples`.

Interrupting :meth:`Finetuning.train` (Kernel > Interrupt, Ctrl-C) raises a ``KeyboardInterrupt`` of
its own that names the checkpoint a re-run resumes from, without the frames of the training loop it
stopped in: those say nothing to the user, and IPython's traceback formatter can fail on one of them
(see :func:`interrupted`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from IPython.display import Image, display

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.stages.parameters import require

STAGE = "finetune"
# the notebook parameters the stage reads besides the finetune_* ones the config takes
PARAMETERS = ("run_dir", "headless", "data_dir", "data_format", "data_on_bad_rows", "data_text_column",
              "data_label_column", "data_label_delimiter", "seed", "device", "precision",
              "model_dir_override", "finetune_max_length", "finetune_num_gpus")


class Finetuning:
    """One fine-tuning stage of a run directory, opened from notebook 04's parameters."""

    def __init__(self, params: Mapping[str, Any], paths: RunPaths, model_dir: str, config, teacher, dataset):
        self.params = params
        self.paths = paths
        self.model_dir = model_dir
        self.config = config  # nbutils.training.finetune.FinetuneConfig
        self.teacher = teacher  # None unless finetune_distill_alpha > 0
        self.dataset = dataset
        self.metrics: dict | None = None  # metrics.json's content once train() ran
        self.history = None  # history.csv as a table once train() ran
        self._predictions = None  # test_predictions.csv, read once

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> Finetuning:
        """The stage for notebook 04's parameters (its ``globals()``); prints the max_length
        source, the distillation line, the device line, the model and the dataset."""
        from nbutils.checkpoints.weights import weights_origin
        from nbutils.data.dataset import load_dataset
        from nbutils.runtime.device import choose_device
        from nbutils.stages.explore import recommended_max_length
        from nbutils.training.distill import teacher_from_params
        from nbutils.training.finetune import FinetuneConfig

        require(params, PARAMETERS, "04_finetune")
        paths = RunPaths(params["run_dir"])
        model_dir = params["model_dir_override"] or str(paths.base_model())
        # finetune_max_length = 0: the length notebook 02 recommends for this data
        max_length = params["finetune_max_length"] or recommended_max_length(paths.root)
        # every finetune_* parameter (and seed, device, precision, headless) goes into the config
        config = FinetuneConfig.from_params(params, max_length=max_length)
        teacher = teacher_from_params(params)  # None unless finetune_distill_alpha > 0 (then metrics.json says so)
        print(choose_device(params["device"], params["precision"]).describe())
        print("model:", model_dir, f"({weights_origin(model_dir)['how']})")
        dataset = load_dataset(params["data_dir"], params["data_format"], on_bad_rows=params["data_on_bad_rows"],
                               text_column=params["data_text_column"], label_column=params["data_label_column"],
                               label_delimiter=params["data_label_delimiter"])
        print(dataset)
        return cls(params, paths, model_dir, config, teacher, dataset)

    @property
    def distributed(self) -> bool:
        return int(self.params["finetune_num_gpus"]) > 1

    def train(self, *, overwrite: bool) -> dict:
        """Fine-tune (under torchrun when ``finetune_num_gpus`` > 1), show the curves, print how
        training went; returns metrics.json's content. An interrupt leaves the last checkpoint,
        which a re-run resumes from (the ``KeyboardInterrupt`` names it)."""
        curves_png = self.paths.figure(STAGE, "curves")
        try:
            if self.distributed:
                self._train_distributed(curves_png, overwrite)
            else:
                self._train_here(curves_png, overwrite)
        except KeyboardInterrupt:
            raise interrupted(self.paths) from None
        if self.distributed or self.params["headless"]:
            display(Image(filename=str(curves_png)))
        print(training_lines(self.metrics["train"]))
        return self.metrics

    def _train_here(self, curves_png: Path, overwrite: bool) -> None:
        from nbutils.training.finetune import finetune
        from nbutils.training.length_fit import explored_max_length

        result = finetune(self.dataset, self.model_dir, self.paths.finetune, self.config, curves_png=curves_png,
                          overwrite=overwrite, title=f"fine-tuning {self.paths.shown(self.model_dir)}",
                          teacher=self.teacher,
                          length_advice=explored_max_length(self.paths.root))  # quoted if max_length cuts many texts
        self.metrics, self.history, self._predictions = result.metrics, result.history, None

    def _train_distributed(self, curves_png: Path, overwrite: bool) -> None:
        from nbutils.training.finetune import load_result
        from nbutils.training.launch import config_argv, launch_distributed

        p = self.params
        argv = ["--model", self.model_dir, "--data", p["data_dir"], "--data-format", p["data_format"],
                "--on-bad-rows", p["data_on_bad_rows"], "--label-delimiter", p["data_label_delimiter"],
                "--text-column", p["data_text_column"], "--label-column", p["data_label_column"],
                *(["--overwrite"] if overwrite else []),
                "--out", self.paths.finetune, "--curves-png", curves_png, *config_argv(self.config)]
        launch_distributed(p["finetune_num_gpus"], argv)
        saved = load_result(self.paths.finetune)
        self.metrics, self.history, self._predictions = saved["metrics"], saved["history"], None

    def _trained(self) -> dict:
        if self.metrics is None:
            raise NbutilsError("no fine-tuning result yet", fix="run the Train cell (stage.train) first")
        return self.metrics

    def predictions(self):
        """test_predictions.csv as a table."""
        from nbutils.training.finetune import load_result

        self._trained()
        if self._predictions is None:
            self._predictions = load_result(self.paths.finetune)["test_predictions"]
        return self._predictions

    def show_scores(self) -> None:
        """The result against the TF-IDF baseline on the same examples, the summary, the per-class table."""
        from nbutils.reporting import report
        from nbutils.training.metrics import metrics_summary, per_class_table

        metrics, preds = self._trained(), self.predictions()
        print(report.baseline_comparison(self.dataset, metrics, preds, seed=self.params["seed"]))
        print(metrics_summary(metrics))
        display(per_class_table(metrics["test"]).style.format(
            {"precision": "{:.4f}", "recall": "{:.4f}", "f1": "{:.4f}", "support": "{:d}"}))

    def show_confusion(self) -> None:
        """The row-normalised test confusion matrix (saved as figures/finetune_confusion.png)."""
        from nbutils.reporting import plots
        from nbutils.training.metrics import confusion_frame

        plots.use_cjk_font()
        cm = confusion_frame(self._trained()["test"])
        names = plots.plot_labels(list(cm.index))
        fig = plots.confusion_heatmap(cm.set_axis(names, axis=0).set_axis(names, axis=1))
        plots.show_figure(fig, self.paths.figure(STAGE, "confusion"))

    def show_mistakes(self, n: int = 8) -> None:
        """The ``n`` test texts the model got wrong with the highest confidence."""
        preds = self.predictions()
        wrong = preds[preds["label"] != preds["pred"]].nlargest(n, "confidence")
        display(wrong[["text", "label", "pred", "confidence"]].style.format({"confidence": "{:.3f}"})
                .hide(axis="index"))

    def show_calibration(self) -> None:
        """ECE and NLL before and after temperature scaling, and the reliability diagram."""
        from nbutils.explain.calibration import (
            calibration_line,
            calibration_table,
            reliability_diagram,
        )
        from nbutils.reporting import plots

        calibration = self._trained().get("calibration")
        if not calibration or "skipped" in calibration:
            print("no calibration in this run:", (calibration or {}).get("skipped", "metrics.json predates it"))
            return
        print(calibration_line(calibration))
        display(calibration_table(calibration).style.format(
            "{:.4f}", subset=["ece_before", "ece_after", "nll_before", "nll_after"]))
        plots.show_figure(reliability_diagram(calibration), self.paths.figure(STAGE, "reliability"))

    def show_examples(self, texts: Sequence[str]) -> None:
        """``texts`` classified by the saved model (a table, then each character coloured for the
        predicted class); in JupyterLab also a box that classifies what is typed into it."""
        from nbutils.explain.display import explain_box, show_examples
        from nbutils.inference.predict import examples_table

        model, device = self.paths.finetuned_model, self.params["device"]
        display(examples_table(texts, model, device=device).style.format({"confidence": "{:.3f}"}))
        show_examples(texts, model, device=device)  # each character coloured for the predicted class
        if not self.params["headless"]:
            display(explain_box(model, device=device))


def interrupted(paths: RunPaths) -> KeyboardInterrupt:
    """The ``KeyboardInterrupt`` :meth:`Finetuning.train` raises when training is interrupted:
    it names the checkpoint a re-run resumes from. Raised ``from None``, so the notebook shows two
    frames (the cell, ``train``) instead of the training loop's thirty: IPython formats each frame
    from its source file with stack_data, and a frame whose line stack_data cannot place (a module
    changed on disk after the kernel imported it) makes IPython print its own formatting error
    (``executing.NotOneValueFound``) in place of the interrupt."""
    from nbutils.training.finetune import CHECKPOINTS
    from nbutils.training.resume import last_checkpoint

    checkpoint = last_checkpoint(paths.finetune / CHECKPOINTS)
    if checkpoint is None:
        return KeyboardInterrupt("fine-tuning interrupted before its first checkpoint: "
                                 "running the Train cell again starts it from the beginning")
    return KeyboardInterrupt(f"fine-tuning interrupted: running the Train cell again resumes from "
                             f"{paths.shown(checkpoint)}")


def training_lines(train: Mapping[str, Any]) -> str:
    """How training went, in two lines (steps, speed, best dev score; memory, trainable parameters)."""
    step_rate = train.get("step_samples_per_second")  # None when a resumed run had no steps left
    return (f"trained {train['steps']} steps in {train['runtime_s']:.0f} s "
            f"({train['samples_per_second']:.1f} samples/s with evaluations"
            + (f", {step_rate:.1f} in the optimizer steps alone" if step_rate else "")
            + f", {train['world_size']} process(es)); best dev macro-F1 {train['best_dev_macro_f1']:.4f}\n"
            f"peak memory: {train['peak_memory_mb']:.0f} MB ({train['peak_memory_kind']}); "
            f"trainable parameters: {train['trainable_params']:,}")
