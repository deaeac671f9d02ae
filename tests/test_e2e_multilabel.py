"""End to end on multi-label data: `nbutils run --profile smoke -p data_dir=<the committed
multi-label fixture> -p data_label_delimiter=|` through every notebook that reads labels, then
checks on what each stage wrote (labels per text, sigmoid head and thresholds, predictions,
freezing, baseline, report). Masked-LM pre-training (03) reads texts only: it is left out. Smoke sizes: this checks the plumbing, not accuracy (the smoke BERT learns little)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbutils.core.paths import RunPaths
from nbutils.data.dataset import load_dataset
from nbutils.data.statistics import label_cardinality

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "multilabel-mini"


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory, vocab_dir) -> RunPaths:
    run_dir = tmp_path_factory.mktemp("runs") / "multilabel"
    params = {"data_dir": FIXTURE, "data_label_delimiter": "|", "demo_vocab_dir": vocab_dir,
              "explore_vocab_dir": vocab_dir, "freeze_strategies": "[full]",
              "report_baseline_full_split": "false"}
    command = [sys.executable, "-m", "nbutils.cli", "run", "--profile", "smoke", "--run-dir", str(run_dir),
               "--cell-timeout", "600", "--only", "01,02,04,05,06", *[a for k, v in params.items() for a in ("-p", f"{k}={v}")]]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return RunPaths(run_dir)


def test_every_stage_ran_on_the_multi_label_data(ml_run: RunPaths):
    manifest = json.loads(ml_run.manifest.read_text())
    assert manifest["status"] == "ok"
    assert all(n["status"] == "ok" for n in manifest["notebooks"])
    assert [n["name"][:2] for n in manifest["notebooks"]] == ["01", "02", "04", "05", "06"]


def test_exploration_counts_labels_per_text(ml_run: RunPaths):
    stats = json.loads((ml_run.explore / "stats.json").read_text())
    ds = load_dataset(FIXTURE, label_delimiter="|")
    assert stats["dataset"]["multi_label"] is True and stats["dataset"]["label_names"] == ds.label_names
    assert stats["multi_label"]["cardinality"]["train"] == label_cardinality(ds.label_matrix("train"))
    cooccurrence = np.array(stats["multi_label"]["cooccurrence_train"])
    assert cooccurrence.diagonal().tolist() == ds.class_counts()["train"].tolist()
    assert (ml_run.figures / "explore_label_cooccurrence.png").is_file()


def test_finetuning_trained_a_sigmoid_head_and_kept_its_thresholds(ml_run: RunPaths):
    metrics = json.loads((ml_run.finetune / "metrics.json").read_text())
    model = ml_run.finetune / "model"
    assert json.loads((model / "config.json").read_text())["problem_type"] == "multi_label_classification"
    saved = json.loads((model / "finetune_config.json").read_text())["multi_label"]
    assert saved == metrics["multi_label"] and saved["threshold_rule"] == "per_label"
    test = metrics["test"]
    assert test["multi_label"] and 0 <= test["subset_accuracy"] <= test["micro_f1"] + 1e-9 <= 1 + 1e-9
    preds = pd.read_csv(ml_run.finetune / "test_predictions.csv", keep_default_na=False)
    names = metrics["label_names"]
    thresholds = np.array([saved["thresholds"]["per_label"][n] for n in names])
    decided = preds[[f"prob_{n}" for n in names]].to_numpy() >= thresholds
    assert preds["pred"].map(lambda p: sorted(filter(None, p.split("|")))).tolist() == [
        sorted(names[j] for j in np.flatnonzero(row)) for row in decided]
    true = np.array([[n in row.split("|") for n in names] for row in preds["label"]])
    assert test["subset_accuracy"] == pytest.approx(float((true == decided).all(axis=1).mean()))


def test_freezing_and_the_report_speak_multi_label(ml_run: RunPaths):
    results = pd.read_csv(ml_run.freezing / "results.csv")
    assert {"test_micro_f1", "dev_micro_f1"} <= set(results.columns)
    baseline = json.loads((ml_run.report / "baseline.json").read_text())
    assert baseline["test"]["multi_label"] and "micro_f1" in baseline["test"]
    assert baseline["same_test_examples_as_model"] is True
    html = (ml_run.report / "report.html").read_text(encoding="utf-8")
    assert "Several labels per text" in html and "per-label threshold" in html and "subset accuracy" in html
