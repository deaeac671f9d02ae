"""Distillation from the TF-IDF SVM (nbutils.distill): honest out-of-fold targets, the loss, the hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nbutils.data import load_dataset
from nbutils.distill import DistillConfig, SvmTeacher, crossfit_teacher_probs, fit_temperature
from nbutils.errors import NbutilsError
from nbutils.random_bert import make_random_bert
from nbutils.train import FinetuneConfig, finetune


def test_fit_temperature_recovers_the_scale():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 5))
    probs = np.exp(3.0 * scores)
    probs /= probs.sum(1, keepdims=True)
    labels = np.array([rng.choice(5, p=p) for p in probs])
    assert fit_temperature(scores, labels) == pytest.approx(3.0, rel=0.15)


def test_teacher_scores_each_text_without_having_seen_it():
    # Texts of unique random characters with random labels: nothing generalises, so a teacher that
    # had seen a text would score it right (near 100%); a cross-fitted one is at chance.
    rng = np.random.default_rng(1)
    texts = ["".join(chr(0x4E00 + int(c)) for c in rng.integers(0, 20000, size=12)) for _ in range(300)]
    labels = rng.integers(0, 3, size=300)
    probs, info = crossfit_teacher_probs(texts, labels, 4, folds=3, seed=0)
    assert probs.shape == (300, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.all(probs[:, 3] < 0.5)  # a class absent from train never becomes confident
    assert info["oof_accuracy"] < 0.5  # chance is 1/3; in-sample it would be ~1.0
    assert info["folds"] == 3


def test_teacher_learns_real_titles(real_titles_dir):
    ds = load_dataset(real_titles_dir).subsample({"train": 600}, seed=0)
    probs, info = crossfit_teacher_probs(ds.texts("train"), ds.labels("train"), 10, folds=3)
    assert info["oof_accuracy"] > 0.4  # chance 0.1: the targets carry real knowledge
    assert info["scale"] > 0


def test_loss_mixes_label_and_teacher():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    hard = torch.tensor([0, 2])
    soft = torch.softmax(logits, -1)  # teacher agrees with the student exactly
    rows = torch.cat([hard[:, None].float(), soft], 1)
    ce = F.cross_entropy(logits, hard)
    only_label = SvmTeacher(DistillConfig(alpha=0.0)).loss({"logits": logits}, rows)
    only_teacher = SvmTeacher(DistillConfig(alpha=1.0)).loss({"logits": logits}, rows)
    half = SvmTeacher(DistillConfig(alpha=0.5)).loss({"logits": logits}, rows)
    assert only_label == pytest.approx(float(ce))
    assert only_teacher == pytest.approx(0.0, abs=1e-6)  # KL(p || p) = 0
    assert half == pytest.approx(0.5 * float(ce), rel=1e-5)
    # dev/test batches carry plain labels: cross-entropy only
    assert SvmTeacher(DistillConfig(alpha=0.9)).loss({"logits": logits}, hard) == pytest.approx(float(ce))
    # with a temperature: still zero when student and teacher agree, T^2-scaled KL otherwise
    assert SvmTeacher(DistillConfig(alpha=1.0, temperature=2.0)).loss({"logits": logits}, rows) == \
        pytest.approx(0.0, abs=1e-5)
    other = torch.cat([hard[:, None].float(), torch.full((2, 3), 1 / 3)], 1)
    t2 = SvmTeacher(DistillConfig(alpha=1.0, temperature=2.0)).loss({"logits": logits}, other)
    expected = 4 * F.kl_div(F.log_softmax(logits / 2, -1), torch.full((2, 3), 1 / 3), reduction="batchmean")
    assert t2 == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("bad", [dict(alpha=1.5), dict(folds=1), dict(label_smoothing=1.0), dict(temperature=0)])
def test_bad_settings_are_errors(bad):
    with pytest.raises(NbutilsError):
        DistillConfig(**bad)


def test_too_few_examples_per_class_is_a_clear_error():
    with pytest.raises(NbutilsError, match="folds"):
        crossfit_teacher_probs(["体育", "财经", "房产", "股票"], [0, 0, 1, 1], 2, folds=5)


def test_finetune_with_teacher(tmp_path, vocab_dir, titles_dir):
    model = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "m", hidden_size=32, num_layers=1,
                             num_heads=2, intermediate_size=64)
    ds = load_dataset(titles_dir).subsample({"train": 60, "dev": 20, "test": 20}, seed=1)
    config = FinetuneConfig(max_length=24, batch_size=8, eval_batch_size=16, learning_rate=5e-4, max_steps=4,
                            eval_steps=2, early_stopping_patience=0, logging_steps=1, seed=3)
    runs = {}
    for alpha in (0.0, 1.0):
        teacher = SvmTeacher(DistillConfig(alpha=alpha, folds=2))
        runs[alpha] = finetune(ds, model, tmp_path / f"ft{alpha}", config, save_model=False, teacher=teacher)
    d = runs[1.0].metrics["distillation"]
    assert d["alpha"] == 1.0 and d["folds"] == 2 and 0 <= d["oof_accuracy"] <= 1
    assert runs[1.0].metrics["test"]["n"] == 20  # the student is scored on test; the teacher never sees it
    first = {a: float(r.history["loss"].dropna().iloc[0]) for a, r in runs.items()}
    # same seed, same weights, same first batch: only the loss differs (CE vs KL to the teacher)
    assert first[0.0] != pytest.approx(first[1.0], rel=1e-3)
