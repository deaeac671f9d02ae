"""What notebook 06 shows, for the sections that do more than display one table: prose lines,
"this input is missing" notes, an earlier stage's saved figures, the TF-IDF baseline trained
beside the model, the error analysis, and the ablation that chose the demo recipe.

The tables themselves are built in ``nbutils.reporting.report`` from the run directory; this module puts
them on the page (IPython ``display``), so the notebook stays prose and one call per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from IPython.display import HTML, Markdown, display

from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.reporting import report

# The ablation of the demo recipe that docs/results.md shows (benchmarks/ablate_demo.py writes it as
# <out>/summary.csv; the committed copy is the one the demo profile was chosen from).
ABLATION_SUMMARY = REPO_ROOT / "benchmarks" / "results" / "ablate_demo_summary.csv"
# benchmarks/bench_faithfulness.py's committed result: the report's line on how faithful the
# highlighted characters measured (not of this run's model: of the one named in the file)
FAITHFULNESS_RESULT = REPO_ROOT / "benchmarks" / "results" / "faithfulness.json"


def say(text: str) -> None:
    """Show ``text`` as Markdown (it reaches report.html as prose, not as code output)."""
    display(Markdown(text))


def note_missing(run: report.RunData, *names: str) -> bool:
    """Say plainly which inputs are missing and which notebook writes them; True when all are here."""
    message = run.missing(*names)
    if message:
        say(message)
    return message is None


def show_saved(paths: RunPaths, stage: str) -> list[Path]:
    """Show the PNG figures an earlier stage saved (embedded in the HTML as data URIs)."""
    from nbutils.reporting.plots import show_png

    figures = report.stage_figures(paths, stage)
    for path in figures:
        show_png(path)
    return figures


# How the baseline's test examples relate to the model's (BaselineInputs.same_test_as_model).
_SAME_TEST = {True: "the very test examples the fine-tuned model was scored on",
              False: "**not** the same test examples as the model's predictions: compare with care",
              None: "the test split (the model's test predictions are not in this run)"}


@dataclass
class BaselineRun:
    """The TF-IDF baseline of a report: its metrics (``report/baseline.json``), its test
    predictions, and what to tell the reader about how it was trained (or why it was not)."""

    metrics: dict | None = None
    test_pred: Any = None
    words: list[str] = field(default_factory=list)


def train_baseline(run: report.RunData, data_dir: str | Path, data_format: str = "auto", *,
                   on_bad_rows: str = "raise", enabled: bool = True, full_split: bool = True,
                   seed: int = 42, text_column: str = "text", label_column: str = "label",
                   label_delimiter: str = "") -> BaselineRun:
    """Train the TF-IDF baseline on the examples the model was fine-tuned on, score it on the
    model's test examples and write ``report/baseline.json``; shows nothing (the verdict and the
    appendix say what it scored and how). With ``full_split`` and a fine-tuning on a train or
    test subsample, also fit it on the whole train split."""
    from nbutils.data.dataset import load_dataset
    from nbutils.training.baseline import BaselineConfig, run_baseline

    paths = run.paths
    # A baseline.json from an earlier build of this report would contradict this one.
    paths.file("baseline").unlink(missing_ok=True)
    if not enabled:
        return BaselineRun(words=["The baseline is switched off (`report_baseline=False`)."])
    try:
        dataset = load_dataset(data_dir, data_format, on_bad_rows=on_bad_rows, text_column=text_column,
                               label_column=label_column, label_delimiter=label_delimiter)
    except NbutilsError as err:
        return BaselineRun(words=[f"**Baseline skipped:** the dataset could not be read: `{err.message}`"])
    inputs = report.baseline_inputs(dataset, run.finetune_metrics, run.predictions)
    result = run_baseline(inputs.train_texts, inputs.train_labels, inputs.test_texts,
                          inputs.test_labels, dataset.label_names, BaselineConfig(seed=seed))
    baseline_pred = result.pop("test_pred")
    baseline = {**result, "data_dir": str(dataset.source), "examples": inputs.how,
                "same_test_examples_as_model": inputs.same_test_as_model}
    words = [f"{baseline['model']}: trained on {baseline['train_examples']:,} examples ({inputs.how}) in "
             f"{baseline['fit_seconds']:.1f} s; scored on {baseline['test_examples']:,} examples, "
             f"{_SAME_TEST[inputs.same_test_as_model]}."
             + (" " + _scores_sentence(baseline["test"]) if baseline["test"].get("multi_label") else "")]
    if full_split and inputs.subsampled:
        full = run_baseline(dataset.texts("train"), report._labels(dataset, "train"), dataset.texts("test"),
                            report._labels(dataset, "test"), dataset.label_names, BaselineConfig(seed=seed))
        full.pop("test_pred")
        baseline["full_split"] = full
        words.append(f"The same baseline on the whole train split ({full['train_examples']:,} examples, "
                     f"{full['fit_seconds']:.1f} s) scores **{full['test']['accuracy']:.2%}** on the whole "
                     f"test split ({full['test_examples']:,} examples): what more data buys a bag of characters.")
    write_json(paths.file("baseline"), baseline)
    return BaselineRun(baseline, baseline_pred, words)


def baseline_section(run: report.RunData, data_dir: str | Path, data_format: str = "auto", **kwargs
                     ) -> tuple[dict | None, Any]:
    """:func:`train_baseline`, then say how it was trained; ``(metrics, test predictions)``."""
    trained = train_baseline(run, data_dir, data_format, **kwargs)
    for line in trained.words:
        say(line)
    return trained.metrics, trained.test_pred


def _scores_sentence(test: dict) -> str:
    if test.get("multi_label"):
        return (f"One SVM per label (one-vs-rest): test micro F1 **{test['micro_f1']:.2%}**, macro F1 "
                f"{test['macro_f1']:.2%}, subset accuracy {test['subset_accuracy']:.2%}.")
    return f"Test accuracy **{test['accuracy']:.2%}**, macro F1 {test['macro_f1']:.2%}."


def multi_label_section(run: report.RunData, baseline: dict | None = None) -> bool:
    """Multi-label runs: the scores that fit several labels per text (micro/macro F1, subset
    accuracy, Hamming loss) for the model and the baseline, the thresholds chosen on dev, and each
    threshold rule on dev and test. Returns whether the run is multi-label (else says so)."""
    import pandas as pd

    info = (run.finetune_metrics or {}).get("multi_label")
    if not info:
        say("One label per text (single-label classification): accuracy and the confusion matrix above apply.")
        return False
    rows = [{"model": "fine-tuned BERT", **_multi_label_scores(run.finetune_metrics["test"])}]
    if baseline and baseline["test"].get("multi_label"):
        rows.append({"model": "TF-IDF + SVM per label", **_multi_label_scores(baseline["test"])})
    display(pd.DataFrame(rows).set_index("model").style.format("{:.4f}"))
    say(f"Several labels per text: one sigmoid output per label, trained with binary cross-entropy. "
        f"A label is given when its score reaches its threshold; the thresholds were chosen on dev "
        f"(rule `{info['threshold_rule']}`; global {info['thresholds']['global']:.2f}). The accuracy above "
        f"is the *subset accuracy* (every label of a text right), and the confusion matrix counts texts "
        f"carrying the row label that were given the column label.")
    thresholds = pd.Series(info["thresholds"]["per_label"], name="per-label threshold").to_frame()
    display(thresholds.style.format("{:.2f}"))
    rules = pd.DataFrame({(split, rule): scores for split in ("dev", "test")
                          for rule, scores in run.finetune_metrics[split]["by_threshold_rule"].items()}).T
    rules.index.names = ["split", "threshold rule"]
    display(rules.style.format("{:.4f}"))
    say("Choose the rule on dev; the test rows show what the choice costs or gains.")
    return True


def _multi_label_scores(m: dict) -> dict:
    return {"micro F1": m["micro_f1"], "macro F1": m["macro_f1"], "subset accuracy": m["subset_accuracy"],
            "samples F1": m["samples_f1"], "Hamming loss": m["hamming_loss"]}


def share(fraction: float) -> str:
    """A share in percent with two significant digits: 0.041%, 4.1%, 41%, 100%."""
    return "n/a" if fraction != fraction else f"{100 * fraction:.2g}%" if fraction < 0.1 else f"{fraction:.0%}"


def results_section(run: report.RunData, baseline: dict | None) -> None:
    """What the verdict does not show: the dev split (and how it was sampled), the baseline on
    the whole train split when fine-tuning used a subsample, the per-class report with the
    baseline's F1 beside it, the confusion matrix and the per-class F1 bars."""
    from nbutils.reporting import plots
    from nbutils.training.metrics import confusion_frame

    if not note_missing(run, "finetune_metrics"):
        return
    metrics = run.finetune_metrics
    dev, config = metrics.get("dev"), metrics.get("config") or {}
    if dev:
        whole = ((run.explore_stats or {}).get("split_sizes") or {}).get("dev")
        sampled = config.get("max_eval_samples")
        how = (f"a stratified sample of {report._n(dev):,} of its {whole:,} examples (`finetune_max_eval_samples`)"
               if sampled and whole and whole > report._n(dev) else f"{report._n(dev):,} examples")
        say(f"**Dev split** ({how}; it chose the checkpoint, so the test split is the honest estimate): "
            f"accuracy {dev['accuracy']:.2%}, macro-F1 {dev['macro_f1']:.2%}.")
    full = (baseline or {}).get("full_split")
    if full:
        say(f"The baseline fitted on the whole train split ({full['train_examples']:,} examples) scores "
            f"{full['test']['accuracy']:.2%} on the whole test split ({full['test_examples']:,} examples).")
    test = metrics["test"]
    per_class = report.per_class_comparison(test, (baseline or {}).get("test"))
    say("**Per class on the test split** (precision, recall, F1, support; the baseline's F1 beside)")
    display(per_class.style.format({c: "{:.3f}" for c in per_class.columns if c != "support"} | {"support": "{:,}"}))
    plots.show_figure(plots.confusion_heatmap(confusion_frame(test)), run.paths.figure("report", "confusion_matrix"))
    plots.show_figure(plots.per_class_f1_bars(per_class), run.paths.figure("report", "per_class_f1"))


def curves_section(run: report.RunData) -> None:
    """The pre-training loss (when the run pre-trained) and the fine-tuning curves."""
    from nbutils.reporting import plots

    paths = run.paths
    if run.pretrain_history is not None and len(run.pretrain_history.dropna(subset=["loss"])):
        recipe = "ELECTRA" if (run.pretrain_metrics or {}).get("recipe") == "electra" else "masked-LM"
        plots.show_figure(plots.loss_curve(run.pretrain_history, title=f"{recipe} pre-training loss"),
                          paths.figure("report", "pretrain_loss"))
    elif run.pretrain_history is not None:
        say("Pre-training logged no loss values (`pretrain/history.csv` has no rows with a loss): "
            "the run was too short for a logging step.")
    elif run.pretrain_metrics is None:
        note_missing(run, "pretrain_metrics")
        say("(Pre-training is optional; without it, fine-tuning starts from the converted model.)")
    if note_missing(run, "finetune_history"):
        from nbutils.training.live import draw_curves

        plots.show_figure(draw_curves(run.finetune_history, title="fine-tuning"),
                          paths.figure("report", "finetune_curves"))


# The freezing summary's columns as a reader reads them, with their formats.
_FREEZING_COLUMNS = {
    "seeds": ("seeds", "{:d}"), "trainable_params": ("trainable parameters", "{:,.0f}"),
    "trainable_fraction": ("trainable share", share), "test_accuracy_mean": ("test accuracy", "{:.2%}"),
    "test_accuracy_std": ("± sd", "{:.2%}"), "test_macro_f1_mean": ("test macro-F1", "{:.2%}"),
    "train_time_s_mean": ("training s", "{:,.1f}"), "samples_per_second_mean": ("samples/s", "{:,.0f}"),
    "peak_memory_mb_mean": ("peak MB", "{:,.0f}"),
}


def freezing_section(run: report.RunData) -> None:
    """The layer-freezing comparison: its own budget said first (it is not the fine-tuning
    above), one row per strategy, the computed findings and the saved figures."""
    from nbutils.reporting import findings

    if note_missing(run, "freezing_results"):
        params = run.parameters
        if params.get("freeze_epochs") is not None:
            train = params.get("freeze_max_train_samples") or "all"
            say(f"Every strategy gets the same smaller budget of its own ({report._fmt(params['freeze_epochs'])} "
                f"epoch(s) on {report._fmt(train)} training examples, `freeze_*` parameters), so its `full` "
                "row is not the fine-tuning above.")
        try:
            summary = findings.summarise(run.freezing_results)
            shown = summary[[c for c in _FREEZING_COLUMNS if c in summary.columns]]
            display(shown.rename(columns={c: _FREEZING_COLUMNS[c][0] for c in shown.columns}).style.format(
                {_FREEZING_COLUMNS[c][0]: _FREEZING_COLUMNS[c][1] for c in shown.columns}, na_rep="n/a"))
            say(findings.describe_findings(run.freezing_results))
        except NbutilsError as err:
            say(f"The freezing results could not be summarised: {err.message}")
    if not show_saved(run.paths, "freezing"):
        say("No layer-freezing figures (`figures/freezing_*.png`) in this run; "
            "notebooks/05_layer_freezing.ipynb writes them.")


def run_section(run: report.RunData) -> None:
    """The appendix's record of the run: state, device, commit, key parameters, the model's
    origin, and every parameter (folded)."""
    if note_missing(run, "manifest"):
        display(report.run_overview(run.manifest))
    model = report.model_overview(run)
    if len(model):
        display(model)
    if run.manifest and run.manifest.get("parameters"):
        table = report.parameters_table(run.manifest)
        display(HTML(f"<details><summary>All {len(table)} parameters of this run</summary>"
                     f"{table.to_html()}</details>"))


def data_section(run: report.RunData) -> None:
    """Key facts of the data and the exploration notebook's figures."""
    if note_missing(run, "explore_stats"):
        display(report.dataset_overview(run.explore_stats))
    if not show_saved(run.paths, "explore"):
        say("No exploration figures (`figures/explore_*.png`) in this run; "
            "notebooks/02_explore_data.ipynb writes them.")


def references_section(run: report.RunData, data_format: str) -> str | None:
    """Published numbers with their dataset and split, the rows comparable with this run marked;
    returns this run's published dataset name (None when it is none of them)."""
    from nbutils.reporting import references

    fmt = (run.explore_stats or {}).get("dataset", {}).get("format") or data_format
    this_dataset = references.dataset_of(fmt, run.label_names)
    table = references.references_table()
    comparable = set(references.comparable_to(this_dataset).index) if this_dataset else set()
    table.insert(0, "comparable", ["yes" if i in comparable else "" for i in table.index])
    say(f"This run's data: **{this_dataset}**; rows marked *yes* are on its test split." if this_dataset
        else "This run's data is neither published THUCNews split, so no published number is comparable.")
    table = table.rename(columns={"accuracy_pct": "accuracy %", "train_size": "train size"})
    display(table.style.format({"accuracy %": "{:.2f}", "train size": "{:,}"}).hide(axis="index"))
    return this_dataset


def files_section(run: report.RunData) -> None:
    """Package versions, each notebook's time, and the report's files."""
    import pandas as pd

    if run.manifest is not None:
        say(report.package_versions(run.manifest))
        durations = report.notebook_durations(run.manifest)
        if len(durations):
            display(durations.style.hide(axis="index"))
    files = report.report_files(run.paths)
    display(pd.DataFrame({"file": files}).style.hide(axis="index"))


def error_analysis(predictions, *, max_examples: int, max_chars: int, baseline: dict | None = None,
                   baseline_pred=None, model_dir: str | Path | None = None) -> None:
    """The most confused class pairs (with example texts), the least confident correct and the
    most confident wrong predictions, texts cut to ``max_chars``; with ``model_dir``, each of those
    wrong predictions with its characters coloured for the chosen class and the runner-up
    (:func:`misclassified_section`); and, when the baseline scored the very same test examples,
    how often the two agree."""
    from nbutils.data.statistics import shorten

    def cut(text: str) -> str:
        return shorten(text, max_chars)

    pairs = report.most_confused_pairs(predictions, top=max_examples, examples=3)
    if len(pairs):
        say("**Most confused class pairs** (errors, and their share of the true class's test examples)")
        joined = [" / ".join(map(cut, texts)) for texts in pairs["examples"]]
        display(pairs.assign(examples=joined).style.format({"share_of_true": "{:.1%}"}).hide(axis="index"))
    else:
        say("No wrong predictions on the test split.")
    say("**Least confident correct predictions**")
    correct = report.least_confident_correct(predictions, max_examples)
    display(correct.assign(text=correct["text"].map(cut))
            .style.format({"confidence": "{:.3f}"}).hide(axis="index"))
    say("**Most confident wrong predictions**")
    wrong = report.most_confident_wrong(predictions, max_examples)
    display(wrong.assign(text=wrong["text"].map(cut))
            .style.format({"confidence": "{:.3f}"}).hide(axis="index"))
    if model_dir is not None and len(wrong):
        misclassified_section(wrong, model_dir, max_chars=max_chars)
    if baseline_pred is not None and baseline and baseline.get("same_test_examples_as_model"):
        import pandas as pd

        agreement = report.agreement_with_baseline(predictions, baseline_pred)
        say("**Model and baseline on the same test examples**")
        display(pd.Series(agreement, name="test examples").to_frame())


def misclassified_section(wrong, model_dir: str | Path, *, max_chars: int) -> None:
    """Each misclassified text, its characters coloured by integrated gradients for the class the
    model chose (``nbutils.explain``), with the true class and the runner-up."""
    from IPython.display import HTML

    from nbutils.explain.display import misclassified_html
    from nbutils.explain.faithfulness import faithfulness_line

    if not Path(model_dir, "config.json").is_file():
        say(f"(No highlighted mistakes: the fine-tuned model `{model_dir}` is not in this run.)")
        return
    say("**Why it chose the wrong class**: each character coloured by how much it raised (red) or "
        "lowered (blue) the probability of the class the model chose (integrated gradients on the "
        "embeddings), with the true class and the runner-up.")
    try:
        display(HTML(misclassified_html(list(wrong["text"]), list(wrong["label"]), model_dir,
                                        max_chars=max_chars)))
    except NbutilsError as err:
        say(f"(No highlighted mistakes: {err.message})")
    line = faithfulness_line(FAITHFULNESS_RESULT)
    if line:
        say(line + " docs/explain.md has the table.")


def calibration_section(run: report.RunData) -> None:
    """ECE before and after the dev-fitted temperature, and the dev/test reliability diagrams
    (from ``finetune/metrics.json``'s ``calibration``; ``nbutils.explain.calibration``)."""
    from nbutils.explain.calibration import calibration_line, calibration_table, reliability_diagram
    from nbutils.reporting import plots

    if not note_missing(run, "finetune_metrics"):
        return
    calibration = run.finetune_metrics.get("calibration")
    if not calibration or "skipped" in calibration:
        say("No calibration in this run: " + ((calibration or {}).get("skipped")
            or "its metrics.json predates temperature scaling (fine-tune again to record it)."))
        return
    say(calibration_line(calibration))
    display(calibration_table(calibration).style.format(
        {"temperature": "{:.3f}", "ece_before": "{:.2%}", "ece_after": "{:.2%}",
         "nll_before": "{:.4f}", "nll_after": "{:.4f}", "examples": "{:,}"}))
    plots.show_figure(reliability_diagram(calibration), run.paths.figure("report", "reliability"))


def ablation_section(baseline: dict | None = None, path: str | Path = ABLATION_SUMMARY):
    """Show the committed ablation of the demo recipe (variant, steps, CPU seconds, dev and test
    accuracy as mean +- std over seeds, test median), the variant best on dev, and this run's
    TF-IDF baseline; returns the table shown, None when there is no summary file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        say(f"No ablation summary at `{path}`: `python benchmarks/ablate_demo.py --out OUT` writes "
            "`OUT/summary.csv`.")
        return None
    rows = pd.read_csv(path)
    pm = lambda mean, sd: "n/a" if pd.isna(mean) else f"{mean:.2%} ± {0 if pd.isna(sd) else sd:.2%}"  # noqa: E731
    table = pd.DataFrame({
        "variant": rows["variant"], "what": rows["what"], "seeds": rows["seeds"],
        "pre-training steps": rows["pretrain_steps"], "fine-tuning steps": rows["finetune_steps"],
        "pre-training CPU s": rows["pretrain_cpu_s"], "fine-tuning CPU s": rows["finetune_cpu_s"],
        "dev accuracy": [pm(m, s) for m, s in zip(rows["dev_acc"], rows["dev_sd"], strict=True)],
        "test accuracy": [pm(m, s) for m, s in zip(rows["test_acc"], rows["test_sd"], strict=True)],
        "test median": rows["test_median"].map(lambda v: "n/a" if pd.isna(v) else f"{v:.2%}"),
    })
    display(table.style.format({c: "{:,.0f}" for c in table.columns if c.endswith(("steps", "CPU s"))},
                               na_rep="n/a").hide(axis="index"))
    # chosen on the dev split, so that picking a variant does not peek at the test split, and among
    # the variants run with the most seeds: a one-seed row can top dev by the luck of its seed
    full = rows[(rows["seeds"] == rows["seeds"].max()) & rows["dev_acc"].notna()]
    best = full.loc[full["dev_acc"].idxmax()] if len(full) else None
    line = f"From `{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}`."
    if best is not None:
        line += (f" Best on dev: **{best['variant']}** (dev {best['dev_acc']:.2%}, test median "
                 f"{best['test_median']:.2%}, {best['seeds']} seed{'s' if best['seeds'] != 1 else ''}; "
                 "among the variants with that many seeds).")
    if baseline:
        line += f" The TF-IDF baseline in this run: {baseline['test']['accuracy']:.2%}."
    say(line)
    return table
