"""What notebook 06 shows, for the sections that do more than display one table: prose lines,
"this input is missing" notes, an earlier stage's saved figures, the TF-IDF baseline trained
beside the model, the error analysis, and the ablation that chose the demo recipe.

The tables themselves are built in ``nbutils.reporting.report`` from the run directory; this module puts
them on the page (IPython ``display``), so the notebook stays prose and one call per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from IPython.display import Image, Markdown, display

from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.reporting import report

# The ablation of the demo recipe that docs/results.md shows (benchmarks/ablate_demo.py writes it as
# <out>/summary.csv; the committed copy is the one the demo profile was chosen from).
ABLATION_SUMMARY = REPO_ROOT / "benchmarks" / "results" / "ablate_demo_summary.csv"


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
    figures = report.stage_figures(paths, stage)
    for path in figures:
        display(Image(filename=str(path)))
    return figures


# How the baseline's test examples relate to the model's (BaselineInputs.same_test_as_model).
_SAME_TEST = {True: "the very test examples the fine-tuned model was scored on",
              False: "**not** the same test examples as the model's predictions: compare with care",
              None: "the test split (the model's test predictions are not in this run)"}


def baseline_section(run: report.RunData, data_dir: str | Path, data_format: str = "auto", *,
                     on_bad_rows: str = "raise", enabled: bool = True, full_split: bool = True,
                     seed: int = 42, text_column: str = "text",
                     label_column: str = "label") -> tuple[dict | None, Any]:
    """Train the TF-IDF baseline on the examples the model was fine-tuned on, score it on the
    model's test examples, write ``report/baseline.json`` and say what it scored. With
    ``full_split`` and a subsampled fine-tuning, also fit it on the whole train split.
    Returns ``(baseline metrics, its test predictions)``, ``(None, None)`` when skipped."""
    from nbutils.data.dataset import load_dataset
    from nbutils.training.baseline import BaselineConfig, run_baseline

    paths = run.paths
    # A baseline.json from an earlier build of this report would contradict this one.
    paths.file("baseline").unlink(missing_ok=True)
    if not enabled:
        say("The baseline is switched off (`report_baseline=False`).")
        return None, None
    try:
        dataset = load_dataset(data_dir, data_format, on_bad_rows=on_bad_rows, text_column=text_column,
                               label_column=label_column)
    except NbutilsError as err:
        say(f"**Baseline skipped:** the dataset could not be read: `{err.message}`")
        return None, None
    inputs = report.baseline_inputs(dataset, run.finetune_metrics, run.predictions)
    result = run_baseline(inputs.train_texts, inputs.train_labels, inputs.test_texts,
                          inputs.test_labels, dataset.label_names, BaselineConfig(seed=seed))
    baseline_pred = result.pop("test_pred")
    baseline = {**result, "data_dir": str(dataset.source), "examples": inputs.how,
                "same_test_examples_as_model": inputs.same_test_as_model}
    if full_split and inputs.subsampled:
        full = run_baseline(dataset.texts("train"), dataset.labels("train"), dataset.texts("test"),
                            dataset.labels("test"), dataset.label_names, BaselineConfig(seed=seed))
        full.pop("test_pred")
        baseline["full_split"] = full
    write_json(paths.file("baseline"), baseline)
    say(f"{baseline['model']}: trained on {baseline['train_examples']:,} examples ({inputs.how}) in "
        f"{baseline['fit_seconds']:.1f} s; scored on {baseline['test_examples']:,} examples, "
        f"{_SAME_TEST[inputs.same_test_as_model]}. Test accuracy **{baseline['test']['accuracy']:.2%}**, "
        f"macro F1 {baseline['test']['macro_f1']:.2%}.")
    if "full_split" in baseline:
        full = baseline["full_split"]
        say(f"The same baseline on the whole train split ({full['train_examples']:,} examples, "
            f"{full['fit_seconds']:.1f} s) scores **{full['test']['accuracy']:.2%}** on the whole "
            f"test split ({full['test_examples']:,} examples): what more data buys a bag of characters.")
    return baseline, baseline_pred


def error_analysis(predictions, *, max_examples: int, max_chars: int, baseline: dict | None = None,
                   baseline_pred=None) -> None:
    """The most confused class pairs (with example texts), the least confident correct and the
    most confident wrong predictions, texts cut to ``max_chars``; and, when the baseline scored
    the very same test examples, how often the two agree."""
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
    if baseline_pred is not None and baseline and baseline.get("same_test_examples_as_model"):
        import pandas as pd

        agreement = report.agreement_with_baseline(predictions, baseline_pred)
        say("**Model and baseline on the same test examples**")
        display(pd.Series(agreement, name="test examples").to_frame())


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
    display(table.style.hide(axis="index"))
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
