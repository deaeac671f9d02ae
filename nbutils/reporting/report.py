"""Turn a run directory into a report: collect what each stage wrote, analyse it, render HTML.

The report notebook (``notebooks/06_report.ipynb``) is thin: it calls :func:`load_run`, shows
tables and figures built here, and through ``nbutils.reporting.sections`` trains the TF-IDF
baseline (``nbutils.training.baseline``, written to ``report/baseline.json``) and shows the error
analysis; it writes ``report/summary.md``. The HTML is the executed notebook exported
by nbconvert with the code hidden and every image embedded, so ``report/report.html`` is one
file a reader can open anywhere.

Every stage may be missing (a run stopped early, a stage skipped, an older run): each loader
returns ``None`` and :meth:`RunData.missing` says in words which file is absent and which
notebook writes it, so every section still renders.

``nbutils report RUN_DIR`` rebuilds the report of an earlier run (:func:`build_report`).
The report is derived data: a rebuild replaces ``report/`` of that run (each file is written
atomically, so a reader never sees a half-written one), and nothing outside ``report/`` and
``figures/report_*.png`` is touched.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbutils.core.errors import NbutilsError
from nbutils.core.io import read_json, write_text
from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.core.run_contract import FILE, PREDICTION_COLUMNS

REPORT_NOTEBOOK = REPO_ROOT / "notebooks" / "06_report.ipynb"
REPORT_NAME = "06_report"
HIDDEN_CELL_TAG = "remove-cell"  # cells of the report notebook left out of report.html

# What each input is, where it lives in the run directory, and which notebook writes it: the
# files of the run-directory contract that RunData holds (JSON objects and CSV tables).
_INPUTS = ("manifest", "conversion", "explore_stats", "pretrain_metrics", "pretrain_history",
           "finetune_metrics", "finetune_history", "predictions", "freezing_results", "freezing_history")
SOURCES: dict[str, tuple[str, str]] = {
    key: (FILE[key].relpath, "the runner (`nbutils run`)" if not FILE[key].stage
          else f"notebooks/{FILE[key].writer}.ipynb")
    for key in _INPUTS
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {key: FILE[key].columns for key in _INPUTS if FILE[key].columns}


# --- collecting the run -----------------------------------------------------------------------


@dataclass
class RunData:
    """Everything the report reads from one run directory; ``None`` where a file is absent."""

    paths: RunPaths
    manifest: dict | None = None
    conversion: dict | None = None
    explore_stats: dict | None = None
    pretrain_metrics: dict | None = None
    pretrain_history: Any = None  # DataFrame
    finetune_metrics: dict | None = None
    finetune_history: Any = None
    predictions: Any = None
    freezing_results: Any = None
    freezing_history: Any = None
    problems: dict[str, str] = field(default_factory=dict)  # input -> why it could not be read

    def missing(self, *names: str) -> str | None:
        """A Markdown sentence naming the absent or unreadable inputs, or None if all are here."""
        lines = []
        for name in names:
            if getattr(self, name) is not None:
                continue
            rel, writer = SOURCES[name]
            if name in self.problems:
                lines.append(f"- `{rel}` could not be read: {self.problems[name]}")
            else:
                lines.append(f"- `{rel}` is not in this run (written by {writer})")
        if not lines:
            return None
        return "**Missing from this run:**\n\n" + "\n".join(lines)

    @property
    def label_names(self) -> list[str] | None:
        if self.finetune_metrics and self.finetune_metrics.get("label_names"):
            return list(self.finetune_metrics["label_names"])
        dataset = (self.explore_stats or {}).get("dataset") or {}
        return list(dataset["label_names"]) if dataset.get("label_names") else None

    @property
    def parameters(self) -> dict[str, Any]:
        return dict((self.manifest or {}).get("parameters") or {})


def _read(path: Path, name: str) -> Any:
    if path.suffix == ".json":
        value = read_json(path)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, found {type(value).__name__}")
        return value
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in REQUIRED_COLUMNS.get(name, ()) if c not in frame.columns]
    if missing:
        raise ValueError(f"missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def load_run(run_dir: str | Path) -> RunData:
    """Read every stage's outputs that exist; unreadable files are listed in ``problems``."""
    paths = RunPaths(Path(run_dir))
    if not paths.root.is_dir():
        raise NbutilsError(f"run directory {paths.root} does not exist",
                           fix="pass a folder under runs/ (`ls runs/`), or run `nbutils run` first")
    data = RunData(paths=paths)
    for name, (rel, _writer) in SOURCES.items():
        path = paths.root / rel
        if not path.is_file():
            continue
        try:
            setattr(data, name, _read(path, name))
        except Exception as err:  # noqa: BLE001 - a broken file must not stop the whole report
            data.problems[name] = f"{type(err).__name__}: {err}"
    if data.manifest is not None:
        from nbutils.pipeline.runlock import effective_status

        # "running" with no live runner holding the run's lock: the runner was killed
        data.manifest["status"] = effective_status(paths.root, data.manifest)
    if data.predictions is not None:
        for col in ("text", "label", "pred"):
            data.predictions[col] = data.predictions[col].astype(str)
    return data


def stage_figures(paths: RunPaths, stage: str) -> list[Path]:
    """The PNG figures a stage saved (``figures/<stage>_*.png``), in name order."""
    return sorted(paths.figures.glob(f"{stage}_*.png")) if paths.figures.is_dir() else []


# --- what was run -----------------------------------------------------------------------------

def _status(manifest: dict) -> str | None:
    status = manifest.get("status")
    if status == "running":  # the runner writes the report before it marks the run finished
        return stages_text(manifest)
    return status


def stages_text(manifest: dict, now: str | None = None) -> str:
    """When the report was written and how many of the run's stages had finished by then
    (the report notebook itself not counted), e.g. ``report written at 2026-01-01 12:00 UTC;
    stages finished 5/5``."""
    from datetime import datetime, timezone

    now = now or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    entries = [n for n in manifest.get("notebooks") or [] if n.get("name") != REPORT_NAME]
    latest = {n.get("name"): n.get("status") for n in entries}  # a re-run's entry replaces the first
    planned = [n for n in manifest.get("planned") or latest if n != REPORT_NAME]
    done = sum(latest.get(name) == "ok" for name in planned)
    return f"report written at {now}; stages finished {done}/{len(planned)}"


def _threads_text(threads: dict | None) -> str | None:
    if not threads:
        return None
    count = threads.get("torch_threads") or threads.get("threads") or "torch default"
    return f"{count} of {threads.get('cpus', '?')} CPUs: {threads.get('reason')}"


def _bits_text(schedules: dict | None) -> str | None:
    """Per training: whether the thread count could change any bit, and why (nbutils.runtime.thread_check)."""
    parts = [f"{name}: {s['bits'].get('case')}, {s['bits'].get('reason')}"
             for name, s in sorted((schedules or {}).items()) if isinstance(s.get("bits"), dict)]
    return "; ".join(parts) or None


def _load_text(manifest: dict, when: str) -> str | None:
    """Load averages in words a reader can judge: above the core count, the run shared the CPU."""
    record = manifest.get("load_average") or {}
    load = record.get(when)
    if not load:
        return None
    cores = record.get("cpus") or 1
    busy = " (busier than the machine's cores: timings are slower than on a quiet machine)" \
        if max(load) > cores else ""
    return ", ".join(f"{x:.2f}" for x in load) + busy


def run_overview(manifest: dict) -> Any:
    """One table of what was run: profile, status, timing, device, commit (the parameters are
    :func:`parameters_table`); rows
    with nothing recorded (the end of a run still running) are left out, not shown blank."""
    import pandas as pd

    rows = [
        ("profile", manifest.get("profile")),
        ("status", _status(manifest)),
        ("started", manifest.get("started")),
        ("ended", manifest.get("ended")),
        ("device", manifest.get("device")),
        ("CPU threads", _threads_text(manifest.get("threads"))),
        ("CPU threads and bits", _bits_text(manifest.get("thread_schedules"))),
        ("load average at start (1, 5, 15 min)", _load_text(manifest, "start")),
        ("load average at the end", _load_text(manifest, "end")),
        ("host", manifest.get("host")),
        ("git commit", manifest.get("git_commit") or "unknown (not a git checkout)"),
    ]
    return pd.DataFrame([(k, str(v)) for k, v in rows if v not in (None, "")],
                        columns=["item", "value"]).set_index("item")


def parameters_table(manifest: dict) -> Any:
    """Every parameter the runner injected (the profile and overrides), name and value."""
    import pandas as pd

    params = manifest.get("parameters") or {}
    return pd.DataFrame([(k, _fmt(v)) for k, v in sorted(params.items())],
                        columns=["parameter", "value"]).set_index("parameter")


def model_overview(data: RunData) -> Any:
    """Where the model came from and what it is: conversion, pre-training, fine-tuning."""
    import pandas as pd

    rows: list[tuple[str, Any]] = []
    conv = data.conversion or {}
    if conv:
        rows += [("converted from", f"{conv.get('source')} ({conv.get('source_kind', 'checkpoint')})"),
                 ("converted tensors", f"{conv.get('tensor_count', '?')} tensors, "
                                       f"{(conv.get('bytes') or 0) / 1e6:.1f} MB, "
                                       f"{conv.get('crc32c_verified', 0)} CRC32C-verified"),
                 ("vocabulary size", conv.get("vocab_size"))]
        if conv.get("skipped"):
            rows.append(("checkpoint tensors skipped", len(conv["skipped"])))
        if conv.get("initialized_fresh"):
            rows.append(("initialised fresh (asked for)", ", ".join(conv["initialized_fresh"])))
    if data.pretrain_metrics:
        recipe = "ELECTRA pre-training" if data.pretrain_metrics.get("recipe") == "electra" else "masked-LM pre-training"
        rows.append((recipe, f"{data.pretrain_metrics.get('steps', '?')} steps"))
    ft = data.finetune_metrics or {}
    if ft:
        train = ft.get("train") or {}
        device = ft.get("device") or {}
        origin = ft.get("model_weights") or {}
        rows += [("fine-tuned from", ft.get("model_source")),
                 ("starting weights", ("RANDOM, never pre-trained: " if origin.get("pretrained") is False else "")
                  + origin["how"] if origin.get("how") else None),
                 ("parameters", f"{train['total_params']:,}" if train.get("total_params") else None),
                 ("classes", len(ft.get("label_names") or []) or None),
                 ("fine-tuning device", f"{device.get('name', device.get('device', '?'))}, "
                                        f"{device.get('precision', '')}".rstrip(", ") if device else None)]
        if ft.get("distillation"):
            rows.append(("distilled from", distillation_note(ft["distillation"])))
    return pd.DataFrame([(k, _short_paths(str(v), data.paths.root)) for k, v in rows if v is not None],
                        columns=["item", "value"]).set_index("item")


def _short_paths(text: str, run_root: Path) -> str:
    """Paths inside the run or the repository written relative to them: shorter, and the same
    on every machine."""
    for root in (Path(run_root).resolve(), Path(run_root), REPO_ROOT):
        text = text.replace(f"{root}/", "")
    return text


def notebook_durations(manifest: dict) -> Any:
    """Per executed notebook: status, duration and error (the runner's record); the report
    notebook, still running while it writes this, is named as such."""
    import pandas as pd

    rows = []
    for n in manifest.get("notebooks") or []:
        running = n.get("status") == "running" and n.get("name") == REPORT_NAME
        seconds = n.get("duration_s")
        rows.append({"notebook": n.get("name"), "status": "this report" if running else n.get("status"),
                     "duration": "" if seconds is None else f"{seconds:,.1f} s", "error": n.get("error") or ""})
    frame = pd.DataFrame(rows, columns=["notebook", "status", "duration", "error"])
    return frame if frame["error"].astype(bool).any() else frame.drop(columns="error")


def package_versions(manifest: dict) -> str:
    """The recorded package versions as one line of Markdown."""
    packages = manifest.get("packages") or {}
    if not packages:
        return "Package versions: not recorded."
    return "Package versions: " + ", ".join(f"{k} `{v}`" for k, v in sorted(packages.items())) + "."


def dataset_overview(stats: dict) -> Any:
    """Key facts of the data: format, split sizes, balance, lengths, [UNK] rate, quality counts."""
    import pandas as pd

    dataset = stats.get("dataset") or {}
    rows: list[tuple[str, Any]] = [
        ("source", _short_paths(str(dataset["source"]), REPO_ROOT) if dataset.get("source") else None),
        ("format", dataset.get("format")),
        ("classes", len(dataset.get("label_names") or []) or None),
    ]
    rows += [(f"{split} examples", f"{n:,}") for split, n in (stats.get("split_sizes") or {}).items()]
    for split, ratio in (stats.get("imbalance_ratio") or {}).items():
        rows.append((f"largest / smallest class ({split})", None if ratio is None else round(ratio, 2)))
    for unit in ("chars", "tokens"):
        train = ((stats.get("lengths") or {}).get(unit) or {}).get("by_split", {}).get("train")
        if train:
            rows.append((f"train length in {unit} (median / p95 / max)",
                         f"{train.get('p50', float('nan')):.0f} / {train.get('p95', float('nan')):.0f} / "
                         f"{train.get('max', float('nan')):.0f}"))
    rows.append(("recommended max_length", stats.get("recommended_max_length")))
    tokenizer = stats.get("tokenizer") or {}
    if "unk_rate" in tokenizer:
        rows.append(("[UNK] rate (tokens)", f"{tokenizer['unk_rate']:.3%}"))
    quality = stats.get("quality") or {}
    for split, dup in (quality.get("duplicates") or {}).items():
        rows.append((f"exact duplicates in {split}", dup.get("count")))
    for pair, n in ((quality.get("leakage") or {}).get("pairs") or {}).items():
        rows.append((f"texts shared {pair}", n))
    return pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows if v is not None],
                        columns=["item", "value"]).set_index("item")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1):
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def training_summary(metrics: dict, keys: Sequence[str] | None = None) -> Any:
    """Scalar entries of a stage's metrics (e.g. ``finetune/metrics.json``'s ``train``) as text."""
    import pandas as pd

    keys = keys or [k for k, v in metrics.items() if not isinstance(v, (dict, list))]
    rows = [(k.replace("_", " "), _fmt(metrics[k])) for k in keys if k in metrics]
    return pd.DataFrame(rows, columns=["item", "value"]).set_index("item")


# --- results ----------------------------------------------------------------------------------


def results_table(finetune_metrics: dict | None, baseline: dict | None) -> Any:
    """Model (dev and test) and baseline (test) side by side: accuracy and F1, with set sizes."""
    import pandas as pd

    rows = []

    def add(who: str, split: str, m: dict | None):
        if not m:
            return
        n = _n(m)
        rows.append({"model": who, "split": split, "examples": n, "accuracy": m["accuracy"],
                     "macro_f1": m["macro_f1"], "weighted_f1": m["weighted_f1"]})

    if finetune_metrics:
        add("fine-tuned BERT", "dev", finetune_metrics.get("dev"))
        add("fine-tuned BERT", "test", finetune_metrics.get("test"))
    if baseline:
        add(f"baseline: {baseline.get('model', 'TF-IDF')}", "test", baseline.get("test"))
        full = baseline.get("full_split")
        if full:  # the model used a subsample; this is what the whole train split gives
            add(f"baseline on the whole train split ({full['train_examples']:,} examples)",
                "test (whole split)", full.get("test"))
    return pd.DataFrame(rows, columns=["model", "split", "examples", "accuracy", "macro_f1",
                                       "weighted_f1"])


def per_class_comparison(model_test: dict, baseline_test: dict | None = None) -> Any:
    """The per-class report (precision, recall, F1, support) with the baseline's F1 beside it."""
    from nbutils.training.metrics import per_class_table

    table = per_class_table(model_test)
    if baseline_test:
        base = per_class_table(baseline_test)
        table["baseline_f1"] = base["f1"].reindex(table.index)
    return table


# --- the baseline's examples ------------------------------------------------------------------


@dataclass
class BaselineInputs:
    """The train and test examples for the baseline, and how they relate to the model's."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    how: str  # one sentence for the report
    same_test_as_model: bool | None  # None: the model's test predictions are not in this run
    subsampled: bool = False  # True when fine-tuning (and so this) used a subsample


def _labels(dataset, split: str) -> list:
    """Label ids, or for multi-label data 0/1 rows (what ``run_baseline`` reads as multi-label)."""
    return dataset.label_matrix(split).tolist() if getattr(dataset, "multi_label", False) else dataset.labels(split)


def baseline_inputs(dataset, finetune_metrics: dict | None = None, predictions=None) -> BaselineInputs:
    """The examples the fine-tuned model saw: the same subsample when fine-tuning used one.

    Fine-tuning may train on a stratified subsample (``max_train_samples`` etc. in its config,
    recorded in ``finetune/metrics.json``); the baseline draws the same one (same sizes, same
    seed, same ``Dataset.subsample``), so both are trained and scored on identical examples.
    ``same_test_as_model`` checks that against the texts in ``test_predictions.csv``.
    """
    config = (finetune_metrics or {}).get("config") or {}
    limits = {"train": config.get("max_train_samples") or None,
              "dev": config.get("max_eval_samples") or None,
              "test": config.get("max_test_samples") or None}
    if limits["train"] or limits["test"]:
        dataset = dataset.subsample(limits, seed=int(config.get("seed", 42)))
        how = ("the same stratified subsample as fine-tuning "
               f"(max_train_samples={limits['train'] or 'all'}, max_test_samples={limits['test'] or 'all'}, "
               f"seed={config.get('seed', 42)})")
    elif config:
        how = "the full train and test splits, as fine-tuning used"
    else:
        how = "the full train and test splits; fine-tuning's settings are not in this run"
    # the dev split is not the baseline's: a dev subsample alone leaves its examples whole
    inputs = BaselineInputs(dataset.texts("train"), _labels(dataset, "train"),
                            dataset.texts("test"), _labels(dataset, "test"), how, None,
                            subsampled=bool(limits["train"] or limits["test"]))
    if predictions is not None:
        inputs.same_test_as_model = list(predictions["text"]) == inputs.test_texts
    return inputs


def baseline_comparison(dataset, finetune_metrics: dict, predictions=None, seed: int = 42) -> str:
    """Train the TF-IDF baseline on the examples fine-tuning used and say, in one sentence,
    how the model's test accuracy compares (notebook 04's "How good is it?"; the report trains
    it again and shows it per class)."""
    from nbutils.training.baseline import BaselineConfig, run_baseline

    inputs = baseline_inputs(dataset, finetune_metrics, predictions)
    result = run_baseline(inputs.train_texts, inputs.train_labels, inputs.test_texts, inputs.test_labels,
                          dataset.label_names, BaselineConfig(seed=seed))
    baseline = {"test": result["test"], "same_test_examples_as_model": inputs.same_test_as_model}
    test = finetune_metrics["test"]
    if test.get("multi_label"):
        return (f"test micro-F1 {_pct(test['micro_f1'])} against the TF-IDF baseline's (one SVM per label) "
                f"{_pct(result['test']['micro_f1'])}; subset accuracy {_pct(test['subset_accuracy'])} against "
                f"{_pct(result['test']['subset_accuracy'])}. {verdict_sentence(finetune_metrics, baseline)}")
    return (f"test accuracy {_pct(test['accuracy'])} against the TF-IDF baseline's "
            f"{_pct(result['test']['accuracy'])} (macro-F1 {_pct(test['macro_f1'])} against "
            f"{_pct(result['test']['macro_f1'])}). {verdict_sentence(finetune_metrics, baseline)}")


# --- error analysis ---------------------------------------------------------------------------


def _check_predictions(predictions) -> None:
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise NbutilsError(f"predictions table lacks column(s) {missing}",
                           fix="use finetune/test_predictions.csv as written by nbutils.training.finetune")


def most_confused_pairs(predictions, top: int = 5, examples: int = 3) -> Any:
    """The (true, predicted) class pairs with the most errors, largest first.

    Columns: ``true``, ``predicted``, ``errors``, ``share_of_true`` (errors / examples of the
    true class) and ``examples`` (up to ``examples`` texts, most confident mistakes first).
    Ties are broken by class names so the order is reproducible.
    """
    import pandas as pd

    _check_predictions(predictions)
    support = predictions["label"].value_counts()
    wrong = predictions[predictions["label"] != predictions["pred"]]
    columns = ["true", "predicted", "errors", "share_of_true", "examples"]
    if wrong.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for (true, pred), group in wrong.groupby(["label", "pred"], sort=False):
        ranked = group.sort_values("confidence", ascending=False, kind="stable")
        rows.append({"true": true, "predicted": pred, "errors": len(group),
                     "share_of_true": len(group) / support[true],
                     "examples": ranked["text"].head(examples).tolist()})
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["errors", "true", "predicted"], ascending=[False, True, True])
    return table.head(top).reset_index(drop=True)


def least_confident_correct(predictions, n: int = 5) -> Any:
    """Correct predictions the model was least sure of (lowest confidence first)."""
    _check_predictions(predictions)
    right = predictions[predictions["label"] == predictions["pred"]]
    return (right.sort_values("confidence", ascending=True, kind="stable")
            .head(n)[list(PREDICTION_COLUMNS)].reset_index(drop=True))


def most_confident_wrong(predictions, n: int = 5) -> Any:
    """Wrong predictions the model was most sure of (highest confidence first)."""
    _check_predictions(predictions)
    wrong = predictions[predictions["label"] != predictions["pred"]]
    return (wrong.sort_values("confidence", ascending=False, kind="stable")
            .head(n)[list(PREDICTION_COLUMNS)].reset_index(drop=True))


def agreement_with_baseline(predictions, baseline_pred: Sequence[str]) -> dict[str, int]:
    """How often the model and the baseline are right or wrong on the same test examples."""
    _check_predictions(predictions)
    if len(baseline_pred) != len(predictions):
        raise NbutilsError(f"{len(baseline_pred)} baseline predictions for {len(predictions)} "
                           "model predictions; they must score the same test examples")
    model_ok = (predictions["label"] == predictions["pred"]).to_numpy()
    base_ok = predictions["label"].to_numpy() == [str(p) for p in baseline_pred]
    return {"both right": int((model_ok & base_ok).sum()),
            "only the model right": int((model_ok & ~base_ok).sum()),
            "only the baseline right": int((~model_ok & base_ok).sum()),
            "both wrong": int((~model_ok & ~base_ok).sum())}


# --- the written summary ----------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def distillation_note(d: dict) -> str:
    """One line that discloses a distilled model: teacher, weight, and that it saw train data only."""
    oof = d.get("oof_accuracy")
    return (f"the TF-IDF SVM's out-of-fold scores on the train split ({d.get('folds')} folds"
            + (f", out-of-fold accuracy {100 * oof:.2f}%" if oof is not None else "")
            + f"), weight alpha={d.get('alpha')}; dev and test texts were never shown to the teacher")


def random_weights_note(data: RunData) -> str | None:
    """Markdown that says loudly that the fine-tuned model started from random weights, or None."""
    origin = (data.finetune_metrics or {}).get("model_weights") or {}
    if origin.get("pretrained") is not False:
        return None
    return ("**Warning: the fine-tuned model started from random weights that were never pre-trained** "
            f"({origin.get('how')}). Its scores measure the architecture trained from scratch, not a "
            "pre-trained BERT; run masked-LM pre-training (notebook 03) or convert a pre-trained checkpoint.")


def length_fit_note(data: RunData) -> str | None:
    """Markdown repeating fine-tuning's line when its max_length cut many train texts, or None
    (``metrics.json``'s ``length_fit``, written by ``nbutils.training.length_fit``)."""
    warning = ((data.finetune_metrics or {}).get("length_fit") or {}).get("warning")
    return f"**The settings do not fit the data:** {warning}." if warning else None


def data_words(data: RunData, data_dir: str | Path | None = None) -> str:
    """The data in words: a published split's name (``THUCNews titles``), else the dataset's
    folder or file name, with the class count."""
    from nbutils.reporting import references

    dataset = (data.explore_stats or {}).get("dataset") or {}
    params = data.parameters
    fmt = dataset.get("format") or params.get("data_format") or ""
    name = references.dataset_of(fmt, data.label_names)
    if not name:
        source = dataset.get("source") or params.get("data_dir") or data_dir
        name = f"`{Path(str(source)).name}`" if source else "this run's data"
    classes = len(data.label_names or [])
    return f"{name} ({classes} classes)" if classes else name


def _model_config(data: RunData) -> dict:
    for folder in (data.paths.finetuned_model, data.paths.base_model()):
        config = folder / "config.json"
        if config.is_file():
            try:
                return read_json(config)
            except (OSError, ValueError):
                return {}
    return {}


def model_words(data: RunData) -> str:
    """The model in words: size, where its weights came from, how it was fine-tuned."""
    config = _model_config(data)
    ft = data.finetune_metrics or {}
    train = ft.get("train") or {}
    size = []
    if config.get("hidden_size"):
        size.append(f"hidden size {config['hidden_size']}")
    if train.get("total_params"):
        size.append(f"{train['total_params'] / 1e6:.1f}M parameters")
    layers = f"{config['num_hidden_layers']}-layer " if config.get("num_hidden_layers") else ""
    words = f"a {layers}BERT" + (f" ({', '.join(size)})" if size else "")
    origin = ft.get("model_weights") or {}
    pre = data.pretrain_metrics
    if origin.get("pretrained") is False:
        words += " from random weights, never pre-trained,"
    elif pre:
        recipe = "ELECTRA" if pre.get("recipe") == "electra" else "masked-LM"
        words += f" pre-trained {_fmt(pre.get('steps', '?'))} {recipe} steps on the training texts,"
    elif data.conversion and data.conversion.get("source"):
        words += f" converted from `{Path(str(data.conversion['source'])).name}`,"
    if train.get("train_samples"):
        epochs = train.get("epochs")
        epochs = f"{_fmt(round(epochs, 2))} epoch{'' if epochs == 1 else 's'} " if epochs else ""
        words += (f" fine-tuned {epochs}"
                  f"on {train['train_samples']:,} training examples")
    return words


def default_title(data: RunData, data_dir: str | Path | None = None) -> str:
    """A title from the run itself: the profile, the model and the data (``report_title`` empty)."""
    profile = (data.manifest or {}).get("profile")
    config = _model_config(data)
    layers = f"{config['num_hidden_layers']}-layer " if config.get("num_hidden_layers") else ""
    dataset = data_words(data, data_dir).replace("`", "")
    return (f"{str(profile).capitalize()} run: " if profile else "") + f"a {layers}BERT fine-tuned on {dataset}"


def verdict_table(finetune_metrics: dict | None, baseline: dict | None) -> list[str]:
    """Markdown rows: the model's and the baseline's test accuracy and macro-F1, and the difference."""
    test = (finetune_metrics or {}).get("test")
    base = (baseline or {}).get("test")
    if not test:
        return []
    lines = ["| | test accuracy | test macro-F1 | test examples |", "| --- | --- | --- | --- |",
             f"| fine-tuned BERT | **{_pct(test['accuracy'])}** | {_pct(test['macro_f1'])} | {_n(test):,} |"]
    if base:
        lines.append(f"| TF-IDF baseline | {_pct(base['accuracy'])} | {_pct(base['macro_f1'])} | {_n(base):,} |")
        lines.append(f"| difference (model - baseline) | {100 * (test['accuracy'] - base['accuracy']):+.2f} points | "
                     f"{100 * (test['macro_f1'] - base['macro_f1']):+.2f} points | |")
    return lines


def verdict_sentence(finetune_metrics: dict | None, baseline: dict | None) -> str | None:
    """Whether the model beats the baseline, on which examples, by how many points."""
    test = (finetune_metrics or {}).get("test")
    if not test or not (baseline or {}).get("test"):
        return None
    gap = test["accuracy"] - baseline["test"]["accuracy"]
    verdict = "beats" if gap > 0 else "does not beat"
    # only claim a like-for-like comparison when notebook 06 checked the texts match
    same = baseline.get("same_test_examples_as_model")
    scope = f"on the same {_n(test):,} test examples" if same else \
        "(test examples not checked to be the same)"
    return f"The fine-tuned model {verdict} the TF-IDF baseline {scope} ({100 * gap:+.2f} accuracy points)."


def _where(path: Path) -> str:
    path = path.resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def verdict_markdown(data: RunData, baseline: dict | None, *, data_dir: str | Path | None = None) -> str:
    """The report's opening: what was trained on what, test accuracy and macro-F1 beside the
    baseline and the difference, the disclosures, where the model is, and the run's state."""
    ft = data.finetune_metrics
    if not ft:
        return ("**No fine-tuning results in this run** (`finetune/metrics.json`, written by "
                "notebooks/04_finetune.ipynb): there is nothing to judge yet.")
    lines = [f"**What was run:** {model_words(data)} of {data_words(data, data_dir)}.", ""]
    lines += [*verdict_table(ft, baseline), ""]
    sentence = verdict_sentence(ft, baseline)
    if sentence:
        lines += [f"**Verdict:** {sentence}", ""]
    elif baseline is None:
        lines += ["No TF-IDF baseline in this report (`report_baseline=False`, or its data could not be read).", ""]
    for note in (random_weights_note(data), length_fit_note(data)):
        if note:
            lines += [note, ""]
    if ft.get("distillation"):
        lines += [f"**Disclosure:** the model was distilled from {distillation_note(ft['distillation'])}.", ""]
    model = data.paths.finetuned_model
    if model.is_dir():
        lines += [f"**The model:** `{_where(model)}`; classify new texts with "
                  f"`nbutils predict --model {_where(model)} \"标题\"`.", ""]
    if data.manifest:
        lines.append(f"*{state_words(data.manifest)}; profile `{data.manifest.get('profile')}`, run "
                     f"`{data.paths.root.name}`.*")
    return "\n".join(lines)


def state_words(manifest: dict) -> str:
    """The run's state for a reader: when the report was written and the stages finished while
    the run is still going (the report is its last stage), else its status and end."""
    if manifest.get("status") == "running":
        return stages_text(manifest)
    ended = f", ended {manifest['ended']}" if manifest.get("ended") else ""
    return f"run {manifest.get('status', 'status not recorded')}{ended}"


def _n(m: dict) -> int:
    return int(m.get("n") or sum(v["support"] for v in m.get("per_class", {}).values()))


def summary_markdown(data: RunData, baseline: dict | None = None, *, title: str = "Run report",
                     dataset: str | None = None) -> str:
    """A short Markdown summary of the key numbers, for a README, an issue or an e-mail."""
    manifest = data.manifest or {}
    lines = [f"# {title}", "", f"Run directory: `{data.paths.root.name}`"]
    if manifest:
        lines += [f"Profile: `{manifest.get('profile')}`, {state_words(manifest)}, "
                  f"git commit: `{(manifest.get('git_commit') or 'unknown')[:12]}`",
                  f"Device: {manifest.get('device') or 'unknown'}"]
    lines.append("")
    for note in (random_weights_note(data), length_fit_note(data)):
        if note:
            lines += [note, ""]
    metrics = data.finetune_metrics or {}
    lines += ["| model | split | examples | accuracy | macro F1 |", "| --- | --- | --- | --- | --- |"]
    table = results_table(metrics or None, baseline)
    for row in table.itertuples(index=False):
        lines.append(f"| {row.model} | {row.split} | {row.examples:,} | {_pct(row.accuracy)} | "
                     f"{_pct(row.macro_f1)} |")
    if table.empty:
        lines.append("| (no results in this run) | | | | |")
    lines.append("")
    test = metrics.get("test")
    if test and test.get("multi_label"):
        base = (baseline or {}).get("test") or {}
        lines += [f"Several labels per text: accuracy is the subset accuracy (every label of a text right); "
                  f"test micro F1 {_pct(test['micro_f1'])}"
                  + (f" (baseline {_pct(base['micro_f1'])})" if base.get("multi_label") else "")
                  + f", thresholds `{test['threshold_rule']}` chosen on dev.", ""]
    sentence = verdict_sentence(metrics, baseline)
    if sentence:
        lines.append(sentence)
        if metrics.get("distillation"):
            lines.append(f"Disclosure: the model was distilled from {distillation_note(metrics['distillation'])}.")
    if data.freezing_results is not None and len(data.freezing_results):
        from nbutils.reporting.findings import summarise

        try:
            means = summarise(data.freezing_results)["test_accuracy_mean"]
            best = [str(name) for name, value in means.items() if value == means.max()]
            who = f"strategy `{best[0]}`" if len(best) == 1 else \
                f"{len(best)} strategies tied ({', '.join(f'`{b}`' for b in best)})"
            lines.append(f"Layer freezing: highest mean test accuracy {_pct(means.max())}, {who}.")
        except NbutilsError as err:
            lines.append(f"Layer freezing results could not be summarised: {err.message}")
    stages = ("finetune_metrics", "freezing_results", "pretrain_metrics", "explore_stats")
    unreadable = [n for n in stages if n in data.problems]
    missing = [SOURCES[n][0] for n in stages if getattr(data, n) is None and n not in data.problems]
    for name in unreadable:  # there, but broken: "not in this run" would send the reader looking elsewhere
        lines.append(f"Could not read `{SOURCES[name][0]}`: {data.problems[name]}.")
    if missing:
        lines.append("Not in this run: " + ", ".join(f"`{m}`" for m in missing) + ".")
    if dataset:
        lines.append(f"Published numbers for {dataset} are listed in the HTML report with their "
                     "exact split; compare only like with like.")
    lines.append("")
    return "\n".join(lines)


# --- HTML -------------------------------------------------------------------------------------


def find_executed_notebook(paths: RunPaths, name: str = REPORT_NAME) -> Path | None:
    """The executed copy of ``name`` that the runner is writing now (its latest manifest entry)."""
    if not paths.manifest.is_file():
        return None
    try:
        entries = read_json(paths.manifest).get("notebooks") or []
    except (OSError, ValueError):
        return None
    for entry in reversed(entries):
        if entry.get("name") == name and entry.get("executed_path"):
            # Only the execution in progress: a finished one is an earlier run's saved copy (the
            # notebook now open in JupyterLab on that run directory is not it).
            if entry.get("status") != "running":
                return None
            path = paths.root / entry["executed_path"]
            return path if path.is_file() else None
    return None


# JupyterLab's look, without the scripts it loads from a CDN (require.js, MathJax, Mermaid):
# the report has no widgets or formulas, and must open offline as one file. Images carry the
# alt text their cell gave them (``plots.show_figure``); wide tables scroll inside their own box
# and long cells wrap, so nothing pushes the page sideways.
_TEMPLATE_NAME = "nbutils_report.html.j2"
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{% block extra_css %}
<style>
.jp-OutputArea-output { overflow-x: auto; max-width: 100%; }
.jp-RenderedHTMLCommon table { max-width: 100%; }
body .jp-RenderedHTMLCommon td, body .jp-RenderedHTMLCommon th { white-space: normal;
  overflow-wrap: break-word; max-width: 36em; text-align: left; vertical-align: top; }
body .jp-RenderedHTMLCommon code { white-space: pre-wrap; overflow-wrap: break-word; }
.jp-RenderedImage img { max-width: 100%; height: auto; }
</style>
{% endblock extra_css %}
{% block data_png scoped %}
<div class="jp-RenderedImage jp-OutputArea-output {{ extra_class }}">
<img src="data:image/png;base64,{{ output.data['image/png'] | escape_html }}"
alt="{{ (output | get_metadata('alt', 'image/png') or 'figure') | escape_html }}">
</div>
{%- endblock data_png %}
"""


def render_html(executed_notebook: str | Path, out_html: str | Path, *, title: str | None = None) -> Path:
    """Export an executed notebook as one self-contained HTML file: no code, images embedded.

    Code cells' inputs and prompts are hidden, stderr streams (warnings, progress) are dropped,
    images come out as ``data:`` URIs (plots are already base64 in the notebook; Markdown
    images are embedded by nbconvert's ``embed_images``), and nothing is loaded from the
    network. Written atomically.
    """
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed_notebook), as_version=4)
    # The notebook's introduction (tagged remove-cell) speaks to whoever runs it, not to the reader.
    nb.cells = [c for c in nb.cells if HIDDEN_CELL_TAG not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
    if title:
        nb.metadata["title"] = title
    from jinja2 import DictLoader

    exporter = HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True,
        embed_images=True, template_name="lab", template_file=_TEMPLATE_NAME,
        extra_loaders=[DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
    )
    resources = {"metadata": {"path": str(Path(executed_notebook).parent), "name": title or "report"}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    write_text(out_html, body)
    return out_html


def report_files(paths: RunPaths) -> list[str]:
    """The report's files and the run's figures, relative to the run directory; temporary
    files (dot-names, such as a rebuild's work folder) are not results and are not listed."""
    found = [*paths.report.glob("*.*"), *paths.figures.glob("*.png")]
    return sorted(p.relative_to(paths.root).as_posix() for p in found if not p.name.startswith("."))


def kernel_parameters(namespace: dict[str, Any], notebook: Path = REPORT_NOTEBOOK) -> dict[str, Any]:
    """The report notebook's parameters as a running kernel holds them (JupyterLab), relative
    paths made absolute against the kernel's working folder (the notebook's own)."""
    import papermill

    from nbutils.pipeline.runner import PATH_SUFFIXES

    values = {}
    for name in papermill.inspect_notebook(str(notebook)):
        if name in namespace:
            value = namespace[name]
            if isinstance(value, str) and value and name.endswith(PATH_SUFFIXES):
                value = str(Path(value).resolve())
            values[name] = value
    return values


def write_html_from_kernel(paths: RunPaths, namespace: dict[str, Any]) -> Path:
    """report.html for a report notebook run in JupyterLab.

    A kernel cannot read its own notebook's outputs (JupyterLab has not saved them, and may
    never), so the notebook is executed once more, headless, with the very parameters the
    kernel holds (:func:`build_report`); under ``nbutils run`` papermill has saved the outputs
    and :func:`render_html` exports them directly.
    """
    values = {k: v for k, v in kernel_parameters(namespace).items()
              if k not in ("run_dir", "headless", "report_write_html")}
    return build_report(paths.root, values)


def build_report(run_dir: str | Path, parameters: dict[str, Any] | None = None, *,
                 timeout: int = 1800, notebook: Path = REPORT_NOTEBOOK) -> Path:
    """(Re)build ``report/`` of a run: execute the report notebook on it, then export HTML.

    The notebook gets the run's own ``data_dir``/``data_format``/``seed`` and ``report_*``
    parameters from its manifest (so the baseline sees the same data), then ``parameters``.
    The executed copy is kept as ``report/06_report.ipynb``. A rebuild replaces the run's
    previous report files: they are derived data, written atomically one by one.
    """
    import papermill

    paths = RunPaths(Path(run_dir).resolve())
    if not paths.root.is_dir():
        raise NbutilsError(f"run directory {paths.root} does not exist",
                           fix="pass a folder under runs/ (`ls runs/`)")
    stage_dirs = (paths.convert, paths.explore, paths.pretrain, paths.finetune, paths.freezing)
    if not paths.manifest.is_file() and not any(d.is_dir() for d in stage_dirs):
        # a report written into a dataset or the repository would be litter, not a report
        raise NbutilsError(f"{paths.root} is not a run directory (no manifest.json and no stage folders)",
                           fix="pass a folder under runs/ (`ls runs/`), made by `nbutils run` or the notebooks")
    from nbutils.pipeline.runner import (
        cast_to_declared,
        execute_notebook,
        inspect_parameters,
        resolve_paths,
    )

    declared = inspect_parameters(Path(notebook)).declared
    recorded = {}
    if paths.manifest.is_file():
        recorded = {k: v for k, v in (read_json(paths.manifest).get("parameters") or {}).items()
                    if k in declared}
    values = {**resolve_paths({**recorded, **(parameters or {})}),
              "run_dir": str(paths.root), "headless": True, "report_write_html": False}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise NbutilsError(f"unknown report parameter(s) {unknown}",
                           fix=f"the report notebook declares: {', '.join(sorted(declared))}")
    values = {k: cast_to_declared(REPORT_NAME, k, v, declared[k].get("inferred_type_name"))
              for k, v in values.items()}
    paths.report.mkdir(parents=True, exist_ok=True)
    executed = paths.report / f"{REPORT_NAME}.ipynb"
    failed = paths.report / f"{REPORT_NAME}.failed.ipynb"
    with tempfile.TemporaryDirectory(prefix=f".{REPORT_NAME}-", dir=paths.report) as tmp:
        tmp_nb = Path(tmp) / executed.name
        try:
            execute_notebook(Path(notebook), tmp_nb, values, timeout=timeout)
        except papermill.PapermillExecutionError as err:
            os.replace(tmp_nb, failed)  # keep the evidence; the previous HTML stays as it was
            raise NbutilsError(
                f"the report notebook failed in cell {err.exec_count}: {err.ename}: {err.evalue}",
                fix=f"open {failed} to see the failing cell and its traceback",
            ) from err
        html = render_html(tmp_nb, paths.file("report_html"), title=_title(values, declared, paths))
        os.replace(tmp_nb, executed)
    failed.unlink(missing_ok=True)
    return html


def _title(values: dict, declared: dict, paths: RunPaths) -> str:
    title = values.get("report_title")
    if title is None and "report_title" in declared:
        title = str(declared["report_title"].get("default", "")).strip("\"'")
    return title or default_title(load_run(paths.root), values.get("data_dir"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nbutils report",
        description="Rebuild report/report.html and report/summary.md of a run directory by "
                    "executing notebooks/06_report.ipynb on it (replaces that run's previous report).",
    )
    parser.add_argument("run_dir", help="the run directory, e.g. runs/20260101-120000-demo")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a report parameter, e.g. -p report_baseline=false")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds one cell may run")
    args = parser.parse_args(argv)
    from nbutils.pipeline.runner import parse_override

    overrides = dict(parse_override(p) for p in args.param)
    t0 = time.monotonic()
    html = build_report(args.run_dir, overrides, timeout=args.timeout)
    print(f"wrote {html} and {RunPaths(args.run_dir).file('summary')} in {time.monotonic() - t0:.0f} s")
    return 0
