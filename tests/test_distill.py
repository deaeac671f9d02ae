"""Distillation from the TF-IDF SVM (nbutils.training.distill): honest out-of-fold targets, the loss, the hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.data.dataset import load_dataset
from nbutils.training.distill import (
    DistillConfig,
    SvmTeacher,
    crossfit_teacher_probs,
    fit_temperature,
)
from nbutils.training.finetune import FinetuneConfig, finetune


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


def texts_with_some_signal(rng, n: int, classes: int = 3) -> tuple[list[str], np.ndarray]:
    """Texts of 3 characters from their class's pool among 9 any class may have; 30% of the
    labels redrawn at random: a classifier learns something, far from everything."""
    labels = rng.integers(0, classes, size=n)
    texts = []
    for y in labels:
        chars = np.concatenate([rng.integers(40 * y, 40 * y + 40, size=3), rng.integers(1000, 6000, size=9)])
        rng.shuffle(chars)
        texts.append("".join(chr(0x4E00 + int(c)) for c in chars))
    flip = rng.random(n) < 0.3
    labels[flip] = rng.integers(0, classes, size=int(flip.sum()))
    return texts, labels


def test_duplicates_do_not_leak_into_the_out_of_fold_scores():
    """Every train text planted twice: with plain stratified folds a text's copy sits in another
    fold and hands its "held-out" score the label; grouped by text, the out-of-fold accuracy
    falls to what the same SVM scores on texts it never saw."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from nbutils.training.baseline import BaselineConfig, build_baseline

    rng = np.random.default_rng(3)
    texts, labels = texts_with_some_signal(rng, 400)
    unseen, unseen_labels = texts_with_some_signal(rng, 1000)
    planted, planted_labels = texts + texts, np.concatenate([labels, labels])
    svm = build_baseline(BaselineConfig(seed=0)).fit(planted, planted_labels)
    heldout = float((svm.predict(unseen) == unseen_labels).mean())
    _, info = crossfit_teacher_probs(planted, planted_labels, 3, folds=5, seed=0)
    plain = cross_val_predict(build_baseline(BaselineConfig(seed=0)), planted, planted_labels,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0))
    leaked = float((plain == planted_labels).mean())
    assert 0.45 < heldout < 0.95  # the data has signal, and room above it for a leak to show
    assert leaked > heldout + 0.08  # what plain folds report: the duplicates' labels
    assert abs(info["oof_accuracy"] - heldout) < 0.06
    assert info["grouped_by_text"] and info["duplicate_rows"] == 400


def test_grouped_folds_keep_copies_together_and_equal_plain_folds_without_copies():
    from sklearn.model_selection import StratifiedKFold

    from nbutils.data.dataset import grouped_stratified_folds, text_groups

    rng = np.random.default_rng(0)
    texts = [f"t{i}" for i in rng.integers(0, 60, size=200)]  # many texts several times
    labels = rng.integers(0, 3, size=200)
    folds = grouped_stratified_folds(labels, text_groups(texts), 4, seed=7)
    assert sorted(np.concatenate([scored for _, scored in folds]).tolist()) == list(range(200))
    for fit, scored in folds:
        assert not {texts[i] for i in fit} & {texts[i] for i in scored}
    distinct = [f"u{i}" for i in range(200)]
    plain = StratifiedKFold(4, shuffle=True, random_state=7).split(np.zeros(200), labels)
    for (fit, scored), (plain_fit, plain_scored) in zip(grouped_stratified_folds(labels, text_groups(distinct), 4, 7),
                                                      plain, strict=True):
        assert fit.tolist() == plain_fit.tolist() and scored.tolist() == plain_scored.tolist()


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
