"""Multi-process training for real: ``torchrun --nproc_per_node 2`` on CPU (gloo) runs the same
``nbutils.training.finetune`` entry point as one process, both ranks finish, the saved metrics are the
metrics of the saved (gathered) predictions over the whole test split, and two processes train
the way one process does with the same global batch (what ``finetune_num_gpus`` > 1 promises)."""

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


def train(nproc: int, batch_size: int, model, titles_dir, out):
    argv = ["--model", model, "--data", titles_dir, "--out", out, "--max-length", "24",
            "--batch-size", str(batch_size), "--max-steps", "6", "--eval-steps", "3", "--seed", "5",
            "--learning-rate", "5e-3", "--precision", "fp32", "--max-train-samples", "96",
            "--max-eval-samples", "40", "--max-test-samples", "41", "--early-stopping-patience", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two ranks share two cores
    proc = subprocess.run(torchrun_command(nproc, argv), cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "test accuracy" in log
    return json.loads((out / "metrics.json").read_text()), pd.read_csv(out / "history.csv")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_dir):
    """A small random BERT without dropout: the ranks' dropout masks would differ from one process's."""
    folder = make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("model") / "tiny", hidden_size=32,
                              num_layers=2, num_heads=2, intermediate_size=64)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, tiny_model, titles_dir):
    out = tmp_path_factory.mktemp("ddp") / "finetune"
    return (*train(2, 8, tiny_model, titles_dir, out), out)


def test_two_process_gloo_training(two_processes, titles_dir):
    metrics, _, out = two_processes

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


def test_two_processes_train_as_one_process_with_the_same_global_batch(two_processes, tiny_model, titles_dir,
                                                                         tmp_path):
    """2 ranks x 8 texts per step against 1 process x 16. Both shuffle with the same seeded sampler
    (accelerate's SeedableRandomSampler), and each rank takes every other batch of 8, so step k
    sees the same 16 texts; DDP averages the two ranks' mean gradients, which is the mean over the
    16 when the halves are equal. Without dropout and in fp32 the two runs are the same arithmetic
    in another summation order (float32 rounding, ~1e-7 relative per operation), so the logged
    losses and gradient norms agree to 1e-5 relative. A wrong scaling (the loss multiplied or not
    divided by the number of processes) or ranks training on the same texts would show at once in
    the per-step losses; a wrong gather in the metrics. The predictions come from logits equal to
    ~1e-6, so they agree except where two classes tie that closely: at most one text of each split
    may change label."""
    two_metrics, two_history, _ = two_processes
    one_metrics, one_history = train(1, 16, tiny_model, titles_dir, tmp_path / "one")
    assert one_metrics["train"]["world_size"] == 1 and two_metrics["train"]["world_size"] == 2
    assert one_metrics["train"]["global_step"] == two_metrics["train"]["global_step"] == 6
    steps = one_history.dropna(subset=["loss"])
    other = two_history.dropna(subset=["loss"])
    assert steps["step"].tolist() == other["step"].tolist() and len(steps) == 6
    assert steps["loss"].to_numpy() == pytest.approx(other["loss"].to_numpy(), rel=1e-5)
    assert steps["grad_norm"].to_numpy() == pytest.approx(other["grad_norm"].to_numpy(), rel=1e-5)
    assert steps["loss"].iloc[0] != pytest.approx(steps["loss"].iloc[-1], rel=1e-3)  # the weights moved
    for split in ("dev", "test"):
        one, two = one_metrics[split], two_metrics[split]
        assert one["n"] == two["n"]
        assert abs(one["accuracy"] - two["accuracy"]) <= 1 / one["n"] + 1e-12
