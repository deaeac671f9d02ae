"""A TF-IDF character n-gram + linear classifier baseline, trained and scored inside the run.

A bag of character n-grams is strong on short Chinese news text: a headline's topic is often
given away by one or two characteristic words. A fine-tuned BERT that does not beat this
baseline on the same train and test examples has learned little beyond keywords, so the report
shows the two side by side.

Characters, not words: no Chinese word segmenter is needed, and unigrams plus bigrams cover
most two-character words. A linear SVM (liblinear) fits the ~34k-title training split in a few
seconds on one core; its scores are not probabilities, which the comparison does not need.

Multi-label data (labels given as 0/1 rows, one column per label) gets one SVM per label
(scikit-learn's ``OneVsRestClassifier``); a label is given where its SVM's margin is positive,
and the scores are the multi-label ones (micro/macro F1, subset accuracy).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nbutils.core.errors import NbutilsError


@dataclass(frozen=True)
class BaselineConfig:
    """The baseline's few knobs; the defaults are what the report uses."""

    ngram_min: int = 1
    ngram_max: int = 2  # trigrams add features and fit time without helping on titles
    C: float = 0.5  # inverse regularisation strength of the linear SVM
    sublinear_tf: bool = True  # 1 + log(tf): a repeated character counts less than a new one
    max_features: int | None = None  # None = the whole n-gram vocabulary of the train split
    seed: int = 42

    def describe(self) -> str:
        return (f"TF-IDF character {self.ngram_min}-{self.ngram_max}-grams + linear SVM "
                f"(C={self.C}, scikit-learn)")


def build_baseline(config: BaselineConfig = BaselineConfig(), *, multi_label: bool = False):
    """An unfitted scikit-learn pipeline: character n-gram TF-IDF, then LinearSVC (one per label,
    one-vs-rest, with ``multi_label``)."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    if not 1 <= config.ngram_min <= config.ngram_max:
        raise NbutilsError(f"bad n-gram range {config.ngram_min}..{config.ngram_max}",
                           fix="use 1 <= ngram_min <= ngram_max, e.g. 1 and 2")
    vectorizer = TfidfVectorizer(
        analyzer="char", ngram_range=(config.ngram_min, config.ngram_max),
        sublinear_tf=config.sublinear_tf, max_features=config.max_features,
        lowercase=True, dtype=np.float32,
    )
    svm = LinearSVC(C=config.C, random_state=config.seed)
    return make_pipeline(vectorizer, OneVsRestClassifier(svm) if multi_label else svm)


def _check_texts(texts: Sequence, labels: Sequence, what: str) -> tuple[list[str], list]:
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise NbutilsError(f"{what}: {len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise NbutilsError(f"{what}: no examples", fix="check that the split is not empty")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise NbutilsError(f"{what}: example {bad} is {type(texts[bad]).__name__}, not text")
    return texts, labels


def run_baseline(
    train_texts: Sequence[str],
    train_labels: Sequence,
    test_texts: Sequence[str],
    test_labels: Sequence,
    label_names: Sequence[str],
    config: BaselineConfig = BaselineConfig(),
) -> dict[str, Any]:
    """Fit on the train examples, score on the test examples; a JSON-ready result.

    Labels may be ids or names (as ``nbutils.training.metrics.classification_metrics`` accepts), or 0/1
    rows with one column per label of ``label_names`` (multi-label: one-vs-rest SVMs, the metrics
    of ``nbutils.training.metrics.multilabel_metrics``, ``test_pred`` the given labels joined by ``|``).
    Returns ``{"model", "config", "train_examples", "test_examples", "fit_seconds",
    "predict_seconds", "test": M, "test_pred": [...]}`` with ``M`` the project's metrics schema
    and ``test_pred`` the predicted label names in test order.
    """
    import numpy as np

    from nbutils.training.metrics import classification_metrics, multilabel_metrics

    train_texts, train_labels = _check_texts(train_texts, train_labels, "baseline train split")
    test_texts, test_labels = _check_texts(test_texts, test_labels, "baseline test split")
    multi_label = np.asarray(train_labels).ndim == 2
    if not multi_label and len(set(map(str, train_labels))) < 2:
        raise NbutilsError("baseline train split has only one class; a classifier needs two or more",
                           fix="use a larger (or stratified) training sample")

    model = build_baseline(config, multi_label=multi_label)
    t0 = time.perf_counter()
    model.fit(train_texts, np.asarray(train_labels) if multi_label else train_labels)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = model.predict(test_texts)
    predict_s = time.perf_counter() - t0

    names = [str(n) for n in label_names]
    if multi_label:
        test = multilabel_metrics(np.asarray(test_labels), pred, names)
        test["threshold_rule"] = "svm margin > 0"
        pred_names = ["|".join(names[j] for j in np.flatnonzero(row)) for row in pred]
    else:
        test = classification_metrics(test_labels, pred.tolist(), names)
        pred_names = [names[p] if not isinstance(p, str) else p for p in pred.tolist()]
    return {
        "model": config.describe(),
        "config": asdict(config),
        "train_examples": len(train_texts),
        "test_examples": len(test_texts),
        "fit_seconds": round(fit_s, 3),
        "predict_seconds": round(predict_s, 3),
        "test": test,
        "test_pred": pred_names,
    }
