"""The report: collecting a run directory, error analysis, references, HTML rendering.

A small, realistic run directory is built by hand (files following CONTRIBUTING.md's schemas,
a 3-class titles-format dataset the baseline can learn), so these tests do not depend on the
other stages having run. The end-to-end smoke test checks the report of a real run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import papermill  # noqa: E402
import pytest  # noqa: E402

from nbutils.core.errors import NbutilsError  # noqa: E402
from nbutils.core.paths import RunPaths  # noqa: E402
from nbutils.reporting import (
    references,  # noqa: E402
    report,
)
from nbutils.training.metrics import classification_metrics  # noqa: E402

LABELS = ["sports", "finance", "game"]
WORDS = {  # each class has its own vocabulary, so a bag of characters separates them
    "sports": ["足球", "篮球", "比赛", "冠军", "球员", "联赛"],
    "finance": ["股票", "银行", "基金", "利率", "投资", "市场"],
    "game": ["游戏", "玩家", "网游", "电竞", "副本", "公测"],
}
SECTIONS = ["1. Results", "Training curves", "Layer freezing", "2. Error analysis", "3. Appendix",
            "3.1 What was run", "3.2 The data", "3.3 The TF-IDF baseline",
            "3.4 How the demo recipe was chosen", "3.5 Published reference numbers",
            "3.6 Packages, timings and files"]


def _texts(label: str, n: int, rng) -> list[str]:
    words = WORDS[label]
    return ["".join(rng.choice(words, size=3)) + f"第{i}条" for i in range(n)]


def make_dataset(folder: Path) -> Path:
    """A titles-format dataset: text<TAB>label_id per line, class.txt with the names."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "class.txt").write_text("\n".join(LABELS), encoding="utf-8")
    for split, n in (("train", 20), ("dev", 4), ("test", 6)):
        lines = [f"{t}\t{i}" for i, name in enumerate(LABELS) for t in _texts(name, n, rng)]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _png(path: Path) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)


def make_run(root: Path, data_dir: Path, *, skip: tuple[str, ...] = ()) -> RunPaths:
    """A run directory as the pipeline writes it, leaving out the stages named in ``skip``."""
    paths = RunPaths(root)
    root.mkdir(parents=True)
    names = ["01_convert_checkpoint", "02_explore_data", "03_pretrain_mlm", "04_finetune",
             "05_layer_freezing", "06_report"]
    manifest = {
        "profile": "synthetic", "parameters": {"data_dir": str(data_dir), "data_format": "titles",
                                               "seed": 42, "finetune_epochs": 1},
        "git_commit": "0123456789abcdef", "packages": {"torch": "2.13.0", "pandas": "3.1"},
        "device": "CPU (2 threads)", "host": "test", "started": "2026-01-01T00:00:00",
        "ended": "2026-01-01T00:05:00", "status": "ok",
        "notebooks": [{"name": n, "status": "ok", "duration_s": 1.5 + i, "error": None,
                       "executed_path": f"notebooks/{n}.ipynb"} for i, n in enumerate(names)],
    }
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    if "convert" not in skip:
        paths.convert.mkdir()
        (paths.convert / "conversion_report.json").write_text(json.dumps(
            {"source": "/models/google_checkpoint", "source_kind": "TensorFlow checkpoint",
             "tensor_count": 46, "bytes": 2_874_920, "crc32c_verified": 46, "vocab_size": 21128,
             "model_class": "BertForPreTraining", "skipped": [], "initialized_fresh": []}))
    if "explore" not in skip:
        paths.explore.mkdir()
        stats = {"dataset": {"source": str(data_dir), "format": "titles", "label_names": LABELS},
                 "split_sizes": {"train": 60, "dev": 12, "test": 18},
                 "imbalance_ratio": {"train": 1.0},
                 "lengths": {"chars": {"by_split": {"train": {"p50": 9, "p95": 10, "max": 10}}}},
                 "recommended_max_length": 16, "tokenizer": {"unk_rate": 0.001},
                 "quality": {"duplicates": {"train": {"count": 0}}, "leakage": {"pairs": {"train-test": 0}}}}
        (paths.explore / "stats.json").write_text(json.dumps(stats, ensure_ascii=False), encoding="utf-8")
        _png(paths.figure("explore", "class_balance"))
    if "pretrain" not in skip:
        paths.pretrain.mkdir()
        (paths.pretrain / "metrics.json").write_text(json.dumps(
            {"masked_token_accuracy": 0.31, "steps": 40, "train_runtime_s": 12.0}))
        pd.DataFrame({"step": [10, 20, 30, 40], "loss": [9.0, 7.5, 6.1, 5.2]}).to_csv(
            paths.pretrain / "history.csv", index=False)
    if "finetune" not in skip:
        paths.finetune.mkdir()
        test = pd.read_csv(data_dir / "test.txt", sep="\t", header=None, names=["text", "label_id"])
        rng = np.random.default_rng(1)
        pred = test["label_id"].to_numpy().copy()
        pred[[0, 1, 7]] = [1, 1, 2]  # three known mistakes: sports->finance twice, finance->game
        probs = rng.dirichlet(np.ones(3), size=len(test))
        probs[np.arange(len(test)), pred] += 2
        probs /= probs.sum(axis=1, keepdims=True)
        frame = pd.DataFrame({"text": test["text"], "label": [LABELS[i] for i in test["label_id"]],
                              "pred": [LABELS[i] for i in pred], "confidence": probs.max(axis=1)})
        for i, name in enumerate(LABELS):
            frame[f"prob_{name}"] = probs[:, i]
        frame.to_csv(paths.finetune / "test_predictions.csv", index=False)
        m = classification_metrics(frame["label"], frame["pred"], LABELS)
        metrics = {"label_names": LABELS, "dev": m, "test": m,
                   "train": {"runtime_s": 3.0, "samples_per_second": 20.0, "train_samples": 60,
                             "total_params": 1_000, "trainable_params": 1_000},
                   "device": {"device": "cpu", "name": "CPU (2 threads)", "precision": "fp32"},
                   "model_source": str(paths.converted_model),
                   "config": {"seed": 42, "max_train_samples": 45}}  # a subsample of the 60
        (paths.finetune / "metrics.json").write_text(json.dumps(metrics))
        pd.DataFrame({"step": [1, 2, 3, 4], "epoch": [0.25, 0.5, 0.75, 1.0],
                      "loss": [1.1, 0.9, None, 0.5], "learning_rate": [1e-5] * 4,
                      "eval_loss": [None, 0.8, None, 0.6], "eval_accuracy": [None, 0.7, None, 0.83],
                      "eval_macro_f1": [None, 0.68, None, 0.82]}).to_csv(
            paths.finetune / "history.csv", index=False)
    if "freezing" not in skip:
        paths.freezing.mkdir()
        rows = []
        for strategy, trainable, acc in (("full", 1000, 0.83), ("classifier_only", 30, 0.6)):
            for seed in (1, 2):
                rows.append({"strategy": strategy, "seed": seed, "trainable_params": trainable,
                             "total_params": 1000, "train_time_s": 2.0, "samples_per_second": 30.0,
                             "peak_memory_mb": 100.0, "dev_accuracy": acc, "dev_macro_f1": acc,
                             "test_accuracy": acc + 0.01 * seed, "test_macro_f1": acc})
        pd.DataFrame(rows).to_csv(paths.freezing / "results.csv", index=False)
        pd.DataFrame({"strategy": ["full"], "seed": [1], "step": [1], "loss": [1.0],
                      "eval_accuracy": [0.8], "eval_macro_f1": [0.8]}).to_csv(
            paths.freezing / "history.csv", index=False)
        _png(paths.figure("freezing", "accuracy_vs_params"))
    return paths


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return make_dataset(tmp_path / "data")


@pytest.fixture
def run(tmp_path, data_dir) -> RunPaths:
    return make_run(tmp_path / "run", data_dir)


# --- collecting -------------------------------------------------------------------------------


def test_load_run_reads_every_stage(run):
    data = report.load_run(run.root)
    for name in report.SOURCES:
        assert getattr(data, name) is not None, name
    assert data.problems == {}
    assert data.label_names == LABELS
    assert data.missing("finetune_metrics", "freezing_results") is None


def test_missing_and_broken_inputs_are_named(tmp_path, data_dir):
    paths = make_run(tmp_path / "run", data_dir, skip=("freezing",))
    (paths.pretrain / "metrics.json").write_text("{not json")
    data = report.load_run(paths.root)
    assert data.freezing_results is None and data.pretrain_metrics is None
    text = data.missing("freezing_results", "pretrain_metrics")
    assert "freezing/results.csv" in text and "05_layer_freezing" in text
    assert "pretrain/metrics.json" in text and "could not be read" in text


def test_predictions_without_required_columns_are_a_problem(run):
    pd.DataFrame({"text": ["a"], "label": ["x"]}).to_csv(run.finetune / "test_predictions.csv", index=False)
    data = report.load_run(run.root)
    assert data.predictions is None
    assert "pred" in data.problems["predictions"]


def test_load_run_of_a_missing_folder(tmp_path):
    with pytest.raises(NbutilsError, match="does not exist"):
        report.load_run(tmp_path / "nope")


# --- error analysis on a table with known answers ---------------------------------------------


@pytest.fixture
def predictions() -> pd.DataFrame:
    rows = [  # text, label, pred, confidence
        ("a1", "A", "A", 0.99), ("a2", "A", "A", 0.51), ("a3", "A", "B", 0.90),
        ("a4", "A", "B", 0.60), ("a5", "A", "C", 0.95), ("b1", "B", "B", 0.40),
        ("b2", "B", "A", 0.70), ("c1", "C", "C", 0.80), ("c2", "C", "B", 0.55),
    ]
    return pd.DataFrame(rows, columns=["text", "label", "pred", "confidence"])


def test_most_confused_pairs(predictions):
    pairs = report.most_confused_pairs(predictions, top=3, examples=2)
    assert list(zip(pairs["true"], pairs["predicted"], pairs["errors"], strict=True)) == [
        ("A", "B", 2), ("A", "C", 1), ("B", "A", 1)]  # ties broken by class names
    assert pairs["share_of_true"].iloc[0] == pytest.approx(2 / 5)
    assert pairs["examples"].iloc[0] == ["a3", "a4"]  # most confident mistake first


def test_least_confident_correct_and_most_confident_wrong(predictions):
    assert report.least_confident_correct(predictions, 2)["text"].tolist() == ["b1", "a2"]
    assert report.most_confident_wrong(predictions, 3)["text"].tolist() == ["a5", "a3", "b2"]


def test_no_mistakes_gives_an_empty_pairs_table(predictions):
    right = predictions[predictions["label"] == predictions["pred"]]
    assert report.most_confused_pairs(right).empty
    assert report.most_confident_wrong(right).empty


def test_agreement_with_baseline(predictions):
    baseline = ["A", "B", "A", "B", "A", "A", "B", "C", "C"]
    assert report.agreement_with_baseline(predictions, baseline) == {
        "both right": 2, "only the model right": 2, "only the baseline right": 4, "both wrong": 1}
    with pytest.raises(NbutilsError, match="same test examples"):
        report.agreement_with_baseline(predictions, baseline[:-1])


def test_error_analysis_needs_the_prediction_columns(predictions):
    with pytest.raises(NbutilsError, match="confidence"):
        report.most_confident_wrong(predictions.drop(columns="confidence"))


# --- tables and summary -----------------------------------------------------------------------


def test_results_table_puts_baseline_beside_the_model(run):
    data = report.load_run(run.root)
    m = data.finetune_metrics["test"]
    baseline = {"model": "tfidf", "test": {**m, "accuracy": 0.5}}
    table = report.results_table(data.finetune_metrics, baseline)
    assert table["split"].tolist() == ["dev", "test", "test"]
    assert table["accuracy"].tolist() == [pytest.approx(15 / 18)] * 2 + [0.5]
    assert table["examples"].tolist() == [18, 18, 18]
    per_class = report.per_class_comparison(m, baseline["test"])
    assert per_class.loc["sports", "support"] == 6 and "baseline_f1" in per_class


def test_summary_markdown_states_key_numbers_and_gaps(tmp_path, data_dir):
    paths = make_run(tmp_path / "run", data_dir, skip=("pretrain",))
    data = report.load_run(paths.root)
    baseline = {"model": "tfidf", "test": {**data.finetune_metrics["test"], "accuracy": 0.9}}
    text = report.summary_markdown(data, baseline, title="T")
    assert text.startswith("# T")
    assert "83.33%" in text and "90.00%" in text
    assert "does not beat" in text and "-6.67 accuracy points" in text
    assert "not checked to be the same" in text  # no claim the run did not verify
    same = report.summary_markdown(data, {**baseline, "same_test_examples_as_model": True}, title="T")
    assert "on the same 18 test examples" in same and "not checked" not in same
    assert "pretrain/metrics.json" in text  # named as missing
    assert "84.50%, strategy `full`" in text  # the best freezing strategy, mean over seeds


def test_a_distilled_model_is_disclosed(tmp_path, data_dir):
    paths = make_run(tmp_path / "run", data_dir)
    data = report.load_run(paths.root)
    baseline = {"model": "tfidf", "test": {**data.finetune_metrics["test"], "accuracy": 0.5}}
    assert "distilled" not in report.summary_markdown(data, baseline, title="T")
    data.finetune_metrics["distillation"] = {"teacher": "svm", "alpha": 0.5, "folds": 5, "oof_accuracy": 0.88}
    text = report.summary_markdown(data, baseline, title="T")
    assert "beats the TF-IDF baseline" in text
    assert "Disclosure: the model was distilled from the TF-IDF SVM" in text and "alpha=0.5" in text
    assert "88.00%" in text and "never shown to the teacher" in text
    assert "distilled from" in report.model_overview(data).index


def test_random_starting_weights_are_said_loudly(tmp_path, data_dir):
    paths = make_run(tmp_path / "run", data_dir)
    data = report.load_run(paths.root)
    assert report.random_weights_note(data) is None  # no record: nothing claimed
    metrics = json.loads((paths.finetune / "metrics.json").read_text())
    metrics["model_weights"] = {"pretrained": False, "how": "random initialisation (seed 42)"}
    (paths.finetune / "metrics.json").write_text(json.dumps(metrics))
    data = report.load_run(paths.root)
    note = report.random_weights_note(data)
    assert "never pre-trained" in note and "seed 42" in note
    assert note in report.summary_markdown(data, title="T")
    assert report.model_overview(data).loc["starting weights", "value"].startswith("RANDOM, never pre-trained")


def test_baseline_inputs_follow_the_finetuning_subsample(data_dir):
    from nbutils.data.dataset import load_dataset

    dataset = load_dataset(data_dir, "titles")
    same = report.baseline_inputs(dataset, {"config": {"seed": 3}})
    assert len(same.train_texts) == 60 and len(same.test_texts) == 18 and same.same_test_as_model is None
    sub = report.baseline_inputs(dataset, {"config": {"seed": 3, "max_train_samples": 30,
                                                      "max_test_samples": 9}})
    expected = dataset.subsample({"train": 30, "dev": None, "test": 9}, seed=3)
    assert sub.train_texts == expected.texts("train") and sub.test_texts == expected.texts("test")
    preds = pd.DataFrame({"text": expected.texts("test")})
    assert report.baseline_inputs(dataset, {"config": {"seed": 3, "max_train_samples": 30,
                                                       "max_test_samples": 9}}, preds).same_test_as_model
    assert report.baseline_inputs(dataset, None, preds).same_test_as_model is False


# --- references -------------------------------------------------------------------------------


def test_references_never_mix_datasets_or_splits():
    titles = references.comparable_to(references.TITLES)
    assert set(titles["dataset"]) == {references.TITLES}
    assert titles["split"].str.startswith("test").all()
    assert 94.83 in titles["accuracy_pct"].tolist()
    cnews = references.comparable_to(references.CNEWS)
    assert set(cnews["dataset"]) == {references.CNEWS} and 98.0 not in cnews["accuracy_pct"].tolist()
    pybert = [r for r in references.REFERENCES if "pybert" in r.model][0]
    assert not pybert.is_test_split and "validation" in pybert.split
    assert all(r.source for r in references.REFERENCES)
    assert references.comparable_to(None).empty


def test_dataset_of():
    assert references.dataset_of("titles") == references.TITLES
    assert references.dataset_of("auto", ["体育", "财经", "房产", "家居", "教育", "科技", "时尚",
                                          "时政", "游戏", "娱乐"]) == references.CNEWS
    assert references.dataset_of("table", LABELS) is None


# --- rendering --------------------------------------------------------------------------------


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img[^>]+src="([^"]*)"', html)


def test_render_html_hides_code_and_embeds_images(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("## Section A"),
        nbformat.v4.new_code_cell("secret_code_marker = 1"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "in.ipynb"
    nbformat.write(nb, src)
    executed = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(src), str(executed), kernel_name="python3", progress_bar=False)
    out = report.render_html(executed, tmp_path / "r" / "report.html", title="T")
    html = out.read_text(encoding="utf-8")
    assert "Section A" in html and "secret_code_marker" not in html


def _check_html(html: str) -> None:
    for heading in SECTIONS:
        assert heading in html, heading
    # the verdict first, then results, error analysis, appendix
    order = [html.index(marker) for marker in ("What was run:", "1. Results", "2. Error analysis", "3. Appendix")]
    assert order == sorted(order), order
    sources = _img_sources(html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    alts = re.findall(r"<img[^>]*?alt=\"([^\"]*)\"", html)
    assert len(alts) == len(sources) and all(a.strip() and a != "figure" for a in alts), alts
    assert not any("/" in a for a in alts), "a path in a figure's alt text"
    assert "note_missing(" not in html and "report.load_run" not in html  # no code inputs
    assert "Traceback" not in html
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"http", html), "nothing loaded from the network"
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    assert "not recorded yet" not in text and "…" not in text and "..." not in text, "a placeholder or a cut value"
    raw = re.search(r"\b\d+\.\d{5,}\b(?!\)|, arXiv)", text.replace("arXiv:1906.08101", ""))
    assert not raw, raw
    prose = [re.sub(r"<[^>]+>", "", p).strip() for p in re.findall(r"<(?:p|li)>(.*?)</(?:p|li)>", html, flags=re.S)]
    repeated = {p for p in prose if len(p) > 40 and prose.count(p) > 1}
    assert not repeated, repeated
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    assert len(tables) == len(set(tables)), "a table shown twice"


def test_report_notebook_exports_itself_under_the_runner(run):
    """As `nbutils run` executes it: the last cell finds its saved copy in the manifest."""
    executed = run.notebooks / "06_report.ipynb"
    run.notebooks.mkdir()
    manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    manifest["notebooks"][-1]["status"] = "running"  # as the runner records it while executing
    run.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    manifest["status"], manifest["ended"] = "running", None  # the runner marks the run finished after 06
    manifest["planned"] = [n["name"] for n in manifest["notebooks"]]
    run.manifest.write_text(json.dumps(manifest), encoding="utf-8")
    from nbutils.pipeline.runlock import RunLock

    with RunLock(run.root):  # as the runner holds it while 06 runs
        papermill.execute_notebook(
            str(report.REPORT_NOTEBOOK), str(executed), kernel_name="python3", progress_bar=False,
            cwd=str(report.REPORT_NOTEBOOK.parent),
            parameters={"run_dir": str(run.root), "headless": True, "data_dir": str(run.root.parent / "data"),
                        "data_format": "titles", "report_title": "Synthetic run"})
    html = (run.report / "report.html").read_text(encoding="utf-8")
    _check_html(html)
    assert "Synthetic run" in html
    assert re.search(r"report written at \d{4}-\d\d-\d\d \d\d:\d\d UTC; stages finished 5/5", html)
    assert "running" not in re.sub(r"<style.*?</style>|<[^>]+>", " ", html, flags=re.S)
    verdict = html[:html.index("1. Results")]
    assert "83.33%" in verdict and "TF-IDF baseline" in verdict and "points" in verdict  # model, baseline, gap
    assert "46 tensors, 2.9 MB, 46 CRC32C-verified" in html and "CPU (2 threads), fp32" in html
    assert len(_img_sources(html)) >= 5  # explore + pretrain + curves + confusion + F1 + freezing
    assert "Missing from this run" not in html

    baseline = json.loads((run.report / "baseline.json").read_text(encoding="utf-8"))
    assert baseline["same_test_examples_as_model"] is True
    assert baseline["train_examples"] == 45 and baseline["full_split"]["train_examples"] == 60
    assert "The baseline fitted on the whole train split (60 examples)" in html
    assert baseline["test"]["accuracy"] > 1 / len(LABELS)
    assert {"macro_f1", "per_class", "confusion_matrix"} <= set(baseline["test"])
    summary = (run.report / "summary.md").read_text(encoding="utf-8")
    assert summary.startswith("# Synthetic run") and "83.33%" in summary
    for name in ("confusion_matrix", "per_class_f1", "finetune_curves", "pretrain_loss"):
        assert run.figure("report", name).is_file(), name


def test_report_file_list_leaves_out_temporary_files(run):
    run.report.mkdir()
    (run.report / "summary.md").write_text("x")
    (run.report / ".06_report-abc123").mkdir()
    (run.report / ".report.html.tmp-xyz").write_text("half")
    assert report.report_files(run) == sorted(["report/summary.md", *[
        p.relative_to(run.root).as_posix() for p in run.figures.glob("*.png")]])


def test_rebuild_of_a_run_missing_stages(tmp_path, data_dir):
    """`nbutils report RUN_DIR` on a run without pre-training, freezing or exploration."""
    from nbutils.cli import main

    paths = make_run(tmp_path / "run", data_dir, skip=("pretrain", "freezing", "explore"))
    (paths.report).mkdir()
    (paths.report / "report.html").write_text("old report")
    assert main(["report", str(paths.root)]) == 0
    html = (paths.report / "report.html").read_text(encoding="utf-8")
    _check_html(html)
    for named in ("freezing/results.csv", "05_layer_freezing", "explore/stats.json",
                  "02_explore_data", "pretrain/metrics.json"):
        assert named in html, named
    assert (paths.report / "06_report.ipynb").is_file()
    assert (paths.report / "baseline.json").is_file() and (paths.report / "summary.md").is_file()


def test_report_of_a_missing_run_dir_is_a_clear_error(tmp_path, capsys):
    from nbutils.cli import main

    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failing_rebuild_keeps_the_previous_report(run, tmp_path):
    broken = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('run_dir: str = ""  # run\nheadless: bool = True  # headless\n'
                                  'report_write_html: bool = False  # export',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("raise ValueError('boom')"),
    ])
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "broken.ipynb"
    nbformat.write(broken, path)
    run.report.mkdir()
    (run.report / "report.html").write_text("previous report")
    with pytest.raises(NbutilsError, match="boom") as err:
        report.build_report(run.root, notebook=path)
    assert "06_report.failed.ipynb" in str(err.value)
    assert (run.report / "06_report.failed.ipynb").is_file()
    assert (run.report / "report.html").read_text() == "previous report"
    assert not [p for p in run.report.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_training_summary_formats_scalars():
    table = report.training_summary({"train_samples": 33590.0, "runtime_s": 3.493193, "kind": "rss",
                                     "nested": {"a": 1}})
    assert table["value"].to_dict() == {"train samples": "33,590", "runtime s": "3.493", "kind": "rss"}


def test_ablation_section_shows_mean_sd_and_the_best_variant(tmp_path, monkeypatch):
    from nbutils.reporting import sections as report_sections

    shown = []
    monkeypatch.setattr(report_sections, "say", shown.append)
    monkeypatch.setattr(report_sections, "display", lambda *a, **k: None)
    summary = tmp_path / "summary.csv"
    summary.write_text(
        "variant,what,seeds,errors,pretrain_steps,finetune_steps,pretrain_s,finetune_s,pretrain_ms_per_step,"
        "finetune_ms_per_step,pretrain_cpu_s,finetune_cpu_s,dev_acc,dev_sd,test_acc,test_sd,test_median\n"
        "demo,the demo profile,3,0,3000,2100,1,1,1,1,318.0,82.0,0.85,0.01,0.853,0.004,0.853\n"
        "ft4,\"fine-tune 4 epochs, not 2\",3,0,3000,4200,1,1,1,1,318.0,160.0,0.86,0.02,0.861,0.001,0.862\n"
        "pt12000,one lucky seed,1,0,12000,2100,1,1,1,1,900.0,82.0,0.90,0.0,0.89,0.0,0.89\n",
        encoding="utf-8")
    table = report_sections.ablation_section({"test": {"accuracy": 0.903}}, summary)
    assert list(table["variant"]) == ["demo", "ft4", "pt12000"]
    assert list(table["test accuracy"]) == ["85.30% ± 0.40%", "86.10% ± 0.10%", "89.00% ± 0.00%"]
    # the one-seed row has the highest dev accuracy but is not eligible
    assert "Best on dev: **ft4** (dev 86.00%, test median 86.20%, 3 seeds;" in shown[-1] and "90.30%" in shown[-1]
    assert report_sections.ablation_section(None, tmp_path / "missing.csv") is None
    assert "No ablation summary" in shown[-1]


def test_stages_text_counts_the_planned_stages_but_the_report():
    manifest = {"planned": ["01_a", "02_b", "06_report"],
                "notebooks": [{"name": "01_a", "status": "ok"}, {"name": "02_b", "status": "failed"},
                              {"name": "02_b", "status": "ok"}, {"name": "06_report", "status": "running"}]}
    assert report.stages_text(manifest, now="T") == "report written at T; stages finished 2/2"
    manifest["notebooks"][2]["status"] = "interrupted"
    assert report.stages_text(manifest, now="T").endswith("stages finished 1/2")


def test_title_and_verdict_come_from_the_run_not_a_fixed_dataset(tmp_path, data_dir):
    """A user's own table: the title names its file, not THUCNews."""
    paths = make_run(tmp_path / "run", data_dir)
    data = report.load_run(paths.root)
    assert report.default_title(data) == "Synthetic run: a BERT fine-tuned on THUCNews titles (3 classes)"
    data.explore_stats["dataset"].update(format="table", source="/home/me/reviews.csv")
    title = report.default_title(data)
    assert "reviews.csv" in title and "THUCNews" not in title and title.startswith("Synthetic run:")
    verdict = report.verdict_markdown(data, {"test": data.finetune_metrics["test"] | {"accuracy": 0.5},
                                             "same_test_examples_as_model": True})
    assert "reviews.csv" in verdict and "+33.33 points" in verdict and "beats the TF-IDF baseline" in verdict


def test_shares_keep_two_significant_digits():
    from nbutils.reporting.sections import share

    assert [share(x) for x in (0.00041, 0.041, 0.41, 1.0)] == ["0.041%", "4.1%", "41%", "100%"]
