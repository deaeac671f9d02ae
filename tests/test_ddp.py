"""Multi-process training for real: ``torchrun --nproc_per_node 2`` on CPU (gloo) runs the same
``nbutils.training.finetune`` entry point as one process, both ranks finish, and the saved metrics are the
metrics of the saved (gathered) predictions over the whole test split."""

from __future__ import annotations

import json
import os
import subprocess

import pandas as pd
import pytest

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.training.launch import torchrun_command
from nbutils.training.metrics import classification_metrics

pytestmark = pytest.mark.slow


def test_two_process_gloo_training(tmp_path, vocab_dir, titles_dir):
    model = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "tiny", hidden_size=32,
                             num_layers=2, num_heads=2, intermediate_size=64)
    out = tmp_path / "finetune"
    argv = ["--model", model, "--data", titles_dir, "--out", out, "--max-length", "24",
            "--batch-size", "8", "--max-steps", "6", "--eval-steps", "3", "--seed", "5",
            "--max-train-samples", "96", "--max-eval-samples", "40", "--max-test-samples", "41",
            "--early-stopping-patience", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share two cores
    proc = subprocess.run(torchrun_command(2, argv), cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "test accuracy" in log

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2
    assert metrics["train"]["global_step"] == 6
    # 6 steps x 8 per rank x 2 ranks = 96 samples: each rank trained on its own half
    assert metrics["train"]["steps"] * 8 * 2 == 96

    # Gathered predictions cover the whole (odd-sized) test split exactly once, and the saved
    # metrics are recomputable from them.
    preds = pd.read_csv(out / "test_predictions.csv")
    expected = load_dataset(titles_dir).subsample({"train": 96, "dev": 40, "test": 41}, seed=5)
    names = expected.label_names
    truth = dict(zip(expected.texts("test"), (names[i] for i in expected.labels("test")), strict=True))
    assert len(preds) == 41 and sorted(preds["text"]) == sorted(truth)
    assert [truth[t] for t in preds["text"]] == preds["label"].tolist()
    assert classification_metrics(preds["label"], preds["pred"], names) == metrics["test"]
    assert metrics["dev"]["n"] == 40
    assert (out / "model" / "model.safetensors").is_file()
