"""The run-directory contract: every file a stage writes into ``runs/<run>/``, who writes it and
who reads it. One place for the names: :class:`nbutils.core.paths.RunPaths`, the report's inputs
(``report.SOURCES``), the writers (``train``, ``pretrain``, ``electra``, ``freezing``,
``convert``, the notebooks) and CONTRIBUTING's table (``python -m nbutils.core.run_contract`` prints
it; ``tests/test_run_contract.py`` checks CONTRIBUTING.md against it) all take them from here.

A run records the contract version it was written under (``manifest.json``:
``run_schema_version``); bump :data:`SCHEMA_VERSION` when a file below changes name or meaning.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

SCHEMA_VERSION = 2  # 2: TensorBoard runs in <run>/tensorboard/<stage> and freezing/tensorboard/

# Stage folder -> the notebook (or tool) that writes it. "" is the run directory itself.
STAGES: dict[str, str] = {
    "": "the runner (`nbutils run`)",
    "convert": "01_convert_checkpoint",
    "explore": "02_explore_data",
    "pretrain": "03_pretrain_mlm",
    "finetune": "04_finetune",
    "freezing": "05_layer_freezing",
    "report": "06_report",
    "figures": "every notebook",
    "tensorboard": "the training notebooks",  # one TensorBoard run per training stage
    "notebooks": "the runner (`nbutils run`)",
}

# Names inside a stage's output folder, shared by the stages that write the same kind of file
# (the writers' functions take any output folder, not only the run directory's).
MODEL = "model"  # a Hugging Face model folder (config.json, model.safetensors, tokenizer files)
METRICS = "metrics.json"
HISTORY = "history.csv"
LOSS_FIGURE = "loss.png"  # pre-training's own copy of its loss curve
CURVES_FIGURE = "curves.png"  # fine-tuning's own copy of its curves (unless curves_png is given)
PREDICTIONS = "test_predictions.csv"
CONVERSION_REPORT = "conversion_report.json"
FREEZING_RESULTS = "results.csv"
FREEZING_RUNS = "runs"  # freezing/runs/<strategy>-seed<n>/: each run's own finetune files
TENSORBOARD = "tensorboard"  # TensorBoard runs: <run>/tensorboard/<stage>, freezing/tensorboard/<run>

PREDICTION_COLUMNS = ("text", "label", "pred", "confidence")
FREEZING_RESULT_COLUMNS = (
    "strategy", "seed", "trainable_params", "total_params", "train_time_s", "samples_per_second",
    "peak_memory_mb", "dev_accuracy", "dev_macro_f1", "test_accuracy", "test_macro_f1",
)
FREEZING_HISTORY_COLUMNS = ("strategy", "seed", "step", "loss", "eval_accuracy", "eval_macro_f1")
# Top-level keys of explore/stats.json, in the order notebook 02 fills them (nbutils.stages.explore
# refuses to write the file without all of them; fine-tuning reads recommended_max_length).
EXPLORE_STATS_KEYS = (
    "dataset", "split_sizes", "class_balance", "imbalance_ratio", "length_sample", "char_lengths_all_texts",
    "lengths", "fit_shares", "recommended_max_length", "recommended_max_length_rule", "recommended_fit_share",
    "tokenizer", "char_width", "quality", "characteristic_ngrams", "multi_label", "figures",
)


@dataclass(frozen=True)
class RunFile:
    """One file (or folder) of the run directory."""

    key: str  # how code names it: RunPaths.file(key), report.RunData.<key>
    stage: str  # the stage folder it lives in ("" = the run directory)
    name: str  # its name inside that folder
    what: str  # one line for CONTRIBUTING
    readers: tuple[str, ...] = ()  # stage folders (or "report") whose notebook reads it
    columns: tuple[str, ...] = ()  # CSV columns a reader may rely on (the report checks them)
    written_by: str = ""  # the stage whose notebook writes it, when not the folder's own

    @property
    def relpath(self) -> str:
        return f"{self.stage}/{self.name}" if self.stage else self.name

    @property
    def writer(self) -> str:
        return STAGES[self.written_by or self.stage]


FILES: tuple[RunFile, ...] = (
    RunFile("manifest", "", "manifest.json",
            "profile, injected parameters, git commit, packages, device, CPU thread policy, load "
            "average at start and end, per-notebook status and time, `run_schema_version`", readers=("report",)),
    RunFile("runner_lock", "", ".runner.lock",
            "held (`flock`) while a runner writes; its pid, host and start time. A manifest saying "
            "\"running\" with no holder belongs to a killed runner (read as \"interrupted\")",
            readers=("report",)),
    RunFile("executed_notebooks", "notebooks", "<NN_name>.ipynb",
            "the executed copy of each notebook (a re-run adds `<NN_name>.2.ipynb`)", readers=("report",)),
    RunFile("converted_model", "convert", MODEL, "Hugging Face BERT folder (+ its conversion report)",
            readers=("explore", "pretrain", "finetune", "freezing")),
    RunFile("conversion", "convert", CONVERSION_REPORT,
            "source, tensor count, bytes, mapped/skipped names, checksums, verification", readers=("report",)),
    RunFile("explore_stats", "explore", "stats.json",
            "split sizes, class balance, length percentiles, fit shares, `recommended_max_length`, "
            "UNK rates, quality findings", readers=("finetune", "report")),
    RunFile("pretrained_model", "pretrain", MODEL, "domain-adapted model folder (BertForMaskedLM)",
            readers=("finetune", "freezing")),
    RunFile("pretrain_metrics", "pretrain", METRICS,
            "masked-token accuracy before/after, steps, runtime, tokens/s", readers=("report",)),
    RunFile("pretrain_history", "pretrain", HISTORY, "one row per logged step",
            readers=("report",), columns=("step", "loss")),
    RunFile("finetuned_model", "finetune", MODEL,
            "the classifier (+ `finetune_config.json`: how prediction cuts texts; `README.md`: its model card)"),
    RunFile("finetune_metrics", "finetune", METRICS,
            "label names, dev/test metrics, training speed and memory, device, the data, the share "
            "of train texts max_length cut (length_fit)", readers=("report",)),
    RunFile("pretrain_tensorboard", TENSORBOARD, "pretrain",
            "TensorBoard run of pre-training (`mlm/` or `electra/` loss, `eval/mlm_*` held-out scores)",
            written_by="pretrain"),
    RunFile("finetune_tensorboard", TENSORBOARD, "finetune",
            "TensorBoard run of fine-tuning (`finetune/` loss, `eval/` dev curve, `test/` final scores)",
            written_by="finetune"),
    RunFile("finetune_history", "finetune", HISTORY, "one row per logged step",
            readers=("report",), columns=("step",)),
    RunFile("predictions", "finetune", PREDICTIONS, "one row per test example",
            readers=("report",), columns=PREDICTION_COLUMNS),
    RunFile("freezing_results", "freezing", FREEZING_RESULTS, "one row per strategy and seed",
            readers=("report",), columns=FREEZING_RESULT_COLUMNS),
    RunFile("freezing_history", "freezing", HISTORY, "one row per strategy, seed and logged step",
            readers=("report",), columns=FREEZING_HISTORY_COLUMNS),
    RunFile("freezing_tensorboard", "freezing", f"{TENSORBOARD}/<strategy>-seed<n>",
            "one TensorBoard run per strategy and seed, a root of their own (`tensorboard --logdir` it)"),
    RunFile("baseline", "report", "baseline.json", "TF-IDF + linear classifier metrics"),
    RunFile("summary", "report", "summary.md", "the headline numbers as Markdown"),
    RunFile("report_html", "report", "report.html", "the executed report notebook, one offline HTML file"),
    RunFile("figures", "figures", "<stage>_<name>.png", "every figure, also shown inline",
            readers=("report",)),
)
FILE: dict[str, RunFile] = {f.key: f for f in FILES}


def markdown_table() -> str:
    """The table CONTRIBUTING.md shows (tests/test_run_contract.py keeps them equal)."""
    lines = [f"Run-directory schema version {SCHEMA_VERSION} (`nbutils/core/run_contract.py`).", "",
             "| file (under the run dir) | written by | read by | what |", "| --- | --- | --- | --- |"]
    for f in FILES:
        writer = f"`{f.writer}`" if f.stage not in ("", "notebooks", "figures") else f.writer
        readers = ", ".join(f"`{STAGES[r]}`" for r in f.readers) or "users"
        lines.append(f"| `{f.relpath}` | {writer} | {readers} | {f.what} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
    sys.exit(0)
