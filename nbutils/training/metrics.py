"""Classification metrics in the project's schema ``M`` (see CONTRIBUTING.md), from scikit-learn;
for multi-label data (a 0/1 matrix per split) also the decision thresholds chosen on dev.

Always computed on the full set of predictions (under DDP, ``Trainer.predict`` gathers every
rank's predictions first), never averaged per batch or per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nbutils.core.errors import NbutilsError
from nbutils.inference.predict import FIXED_THRESHOLD, THRESHOLD_RULES, sigmoid, threshold_vector  # noqa: F401 (re-exported)


def _as_indices(values: Sequence, label_names: Sequence[str], what: str) -> np.ndarray:
    """Accept label ids or label names; return ids, with a clear error for unknown names."""
    arr = np.asarray(list(values))
    if arr.dtype.kind in "iu":
        bad = arr[(arr < 0) | (arr >= len(label_names))]
        if bad.size:
            raise NbutilsError(
                f"{what} contains label id {int(bad[0])}, outside 0..{len(label_names) - 1}",
                fix="pass the label_names the model was trained with",
            )
        return arr.astype(np.int64)
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(v) for v in arr if str(v) not in index})
    if unknown:
        raise NbutilsError(
            f"{what} contains unknown label name(s) {unknown[:5]}; known: {list(label_names)}",
            fix="check the label column and class list of the dataset",
        )
    return np.array([index[str(v)] for v in arr], dtype=np.int64)


def classification_metrics(
    y_true: Sequence, y_pred: Sequence, label_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro/weighted precision-recall-F1, per-class report and confusion matrix.

    ``y_true``/``y_pred`` may be integer ids or label names. Every class in ``label_names``
    appears in ``per_class`` and the confusion matrix, even if absent from this sample.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    label_names = [str(n) for n in label_names]
    true = _as_indices(y_true, label_names, "y_true")
    pred = _as_indices(y_pred, label_names, "y_pred")
    if len(true) != len(pred):
        raise NbutilsError(f"{len(true)} true labels but {len(pred)} predictions")
    if len(true) == 0:
        raise NbutilsError("no examples to score", fix="check that the split is not empty")

    labels = list(range(len(label_names)))
    out: dict[str, Any] = {"accuracy": float(accuracy_score(true, pred)), "n": int(len(true))}
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            true, pred, labels=labels, average=avg, zero_division=0
        )
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(label_names)
    }
    out["confusion_matrix"] = confusion_matrix(true, pred, labels=labels).tolist()
    return out


def multilabel_metrics(y_true, y_pred, label_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of multi-label predictions: ``y_true``/``y_pred`` are 0/1 matrices (texts x labels).

    ``accuracy`` is the subset accuracy (every label of a text right; also ``subset_accuracy``),
    then micro, macro, weighted and per-text (``samples``) precision-recall-F1, the Hamming loss,
    ``per_class`` (precision, recall, F1, support per label) and ``confusion_matrix``: texts that
    carry the row label and were given the column label (its diagonal holds the true positives,
    the row sums exceed the support where other labels are predicted alongside).
    """
    from sklearn.metrics import accuracy_score, hamming_loss, precision_recall_fscore_support

    label_names = [str(n) for n in label_names]
    true, pred = _as_label_matrix(y_true, label_names, "y_true"), _as_label_matrix(y_pred, label_names, "y_pred")
    if true.shape != pred.shape:
        raise NbutilsError(f"{true.shape[0]} true label rows but {pred.shape[0]} predicted rows")
    if len(true) == 0:
        raise NbutilsError("no examples to score", fix="check that the split is not empty")
    out: dict[str, Any] = {"multi_label": True, "accuracy": float(accuracy_score(true, pred)),
                           "n": int(len(true))}
    out["subset_accuracy"] = out["accuracy"]
    out["hamming_loss"] = float(hamming_loss(true, pred))
    for avg in ("micro", "macro", "weighted", "samples"):
        p, r, f, _ = precision_recall_fscore_support(true, pred, average=avg, zero_division=0)
        out[f"{avg}_precision"], out[f"{avg}_recall"], out[f"{avg}_f1"] = float(p), float(r), float(f)
    p, r, f, s = precision_recall_fscore_support(true, pred, average=None, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(label_names)
    }
    out["confusion_matrix"] = (true.T.astype(np.int64) @ pred.astype(np.int64)).tolist()
    out["predicted_labels_per_text"] = float(pred.sum(axis=1).mean())
    out["texts_without_label"] = int((pred.sum(axis=1) == 0).sum())
    return out


def _as_label_matrix(values, label_names: Sequence[str], what: str) -> np.ndarray:
    matrix = np.asarray(values)
    if matrix.ndim != 2 or matrix.shape[1] != len(label_names):
        raise NbutilsError(f"{what} has shape {matrix.shape}; a multi-label matrix has one column per label "
                           f"({len(label_names)})", fix="pass the label_names the model was trained with")
    if not np.isin(matrix, (0, 1)).all():
        raise NbutilsError(f"{what} holds values other than 0 and 1", fix="threshold the scores first")
    return matrix.astype(np.int8)


# --- multi-label decision thresholds -------------------------------------------------------

# thresholds tried on dev: 0.05, 0.06, ..., 0.95
THRESHOLD_GRID = np.round(np.arange(5, 96) / 100, 2)


def choose_thresholds(y_true, scores, label_names: Sequence[str], grid=THRESHOLD_GRID) -> dict[str, Any]:
    """Decision thresholds for multi-label scores, chosen on ``(y_true, scores)`` (the dev split).

    ``global``: the one threshold for every label with the best micro-F1; ``per_label``: for each
    label the threshold with its best F1 (a label without positives here keeps the global one,
    since any threshold gives it F1 0). Ties go to the threshold nearest 0.5. Returns
    ``{"global": t, "per_label": {name: t}, "fixed": 0.5, "grid": [first, last, step]}``.
    """
    true = _as_label_matrix(y_true, label_names, "y_true").astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != true.shape:
        raise NbutilsError(f"scores have shape {scores.shape}, labels {true.shape}")
    grid = np.asarray(grid, dtype=np.float64)
    positives = true.sum(axis=0)
    tp = np.stack([((scores >= t) & true).sum(axis=0) for t in grid])  # grid x labels
    predicted = np.stack([(scores >= t).sum(axis=0) for t in grid])
    fp, fn = predicted - tp, positives[None, :] - tp
    micro = _f1(tp.sum(axis=1), fp.sum(axis=1), fn.sum(axis=1))
    global_t = float(grid[_best(micro, grid)])
    per_label = {}
    for j, name in enumerate(label_names):
        f1 = _f1(tp[:, j], fp[:, j], fn[:, j])
        per_label[str(name)] = float(grid[_best(f1, grid)]) if positives[j] else global_t
    return {"global": global_t, "per_label": per_label, "fixed": FIXED_THRESHOLD,
            "grid": [float(grid[0]), float(grid[-1]), float(np.round(grid[1] - grid[0], 6)) if len(grid) > 1 else 0.0]}


def _f1(tp, fp, fn) -> np.ndarray:
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros(np.shape(tp), dtype=np.float64), where=denominator > 0)


def _best(f1: np.ndarray, grid: np.ndarray) -> int:
    ties = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return int(ties[np.argmin(np.abs(grid[ties] - 0.5))])


def metrics_summary(metrics: dict[str, Any]) -> str:
    """Dev and test scores in two lines: accuracy and macro-F1; for multi-label metrics micro-F1,
    macro-F1 and subset accuracy, under the threshold rule that decided."""
    lines = []
    for split in ("dev", "test"):
        m = metrics[split]
        if m.get("multi_label"):
            lines.append(f"{split:<4} micro-F1 {m['micro_f1']:.4f}  macro-F1 {m['macro_f1']:.4f}  subset accuracy "
                         f"{m['subset_accuracy']:.4f}  ({m['threshold_rule']} thresholds chosen on dev)")
        else:
            lines.append(f"{split:<4} accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}")
    return "\n".join(lines)


def per_class_table(metrics: dict[str, Any]):
    """The per-class report as a DataFrame (rows: classes, then the averages: macro and weighted,
    and micro first for multi-label metrics)."""
    import pandas as pd

    rows = [{"class": name, **vals} for name, vals in metrics["per_class"].items()]
    total = sum(v["support"] for v in metrics["per_class"].values())
    for avg in (("micro", "macro", "weighted", "samples") if metrics.get("multi_label") else ("macro", "weighted")):
        rows.append(
            {
                "class": f"{avg} avg",
                "precision": metrics[f"{avg}_precision"],
                "recall": metrics[f"{avg}_recall"],
                "f1": metrics[f"{avg}_f1"],
                "support": total,
            }
        )
    return pd.DataFrame(rows).set_index("class")


def confusion_frame(metrics: dict[str, Any]):
    """The confusion matrix as a labelled DataFrame (rows: true class, columns: predicted)."""
    import pandas as pd

    names = list(metrics["per_class"])
    return pd.DataFrame(
        metrics["confusion_matrix"],
        index=pd.Index(names, name="true"),
        columns=pd.Index(names, name="predicted"),
    )


# --- calibration -------------------------------------------------------------------------------

CALIBRATION_BINS = 15  # equal-width confidence bins (Guo et al. 2017 use 15)


def _softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


def reliability_bins(probs, labels, n_bins: int = CALIBRATION_BINS) -> list[dict[str, float]]:
    """Top-label reliability table: ``n_bins`` equal-width bins of the confidence (the highest
    probability) over ``(0, 1]``, each with its number of examples, mean confidence and accuracy
    (an empty bin has ``count`` 0 and None for the means: it stays valid JSON). The first bin also takes confidence 0."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise NbutilsError(f"reliability bins need probabilities [n, classes] and n labels, got "
                           f"{probs.shape} and {labels.shape}")
    if n_bins < 1:
        raise NbutilsError(f"n_bins={n_bins}", fix="use at least one bin, e.g. 15")
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    # bin b holds confidences in (b/n, (b+1)/n]
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = which == b
        count = int(inside.sum())
        rows.append({"low": b / n_bins, "high": (b + 1) / n_bins, "count": count,
                     "confidence": float(confidence[inside].mean()) if count else None,
                     "accuracy": float(correct[inside].mean()) if count else None})
    return rows


def expected_calibration_error(probs, labels, n_bins: int = CALIBRATION_BINS) -> float:
    """ECE (Naeini et al. 2015; Guo et al. 2017): the example-weighted mean over confidence bins of
    |accuracy - mean confidence| of the top label (:func:`reliability_bins`)."""
    rows = reliability_bins(probs, labels, n_bins)
    total = sum(r["count"] for r in rows)
    if total == 0:
        raise NbutilsError("expected calibration error of no examples")
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / total)


def fit_temperature(scores, labels) -> float:
    """The scale ``s`` for which ``softmax(s * scores)`` has the lowest log-loss on ``labels``."""
    import numpy as np
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)

    def nll(log_scale):
        logp = log_softmax(np.exp(log_scale) * scores, axis=1)
        return -logp[np.arange(len(labels)), labels].mean()

    best = minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded")
    return float(np.exp(best.x))


def temperature_scaling(dev_logits, dev_labels, test_logits, test_labels,
                        n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """Fit one temperature ``T`` on the dev split (lowest log-loss of ``softmax(logits / T)``;
    Guo et al. 2017) and measure ECE and log-loss before and after on dev and test. ``T`` never
    changes which class wins, only how sure the model says it is. Returns ``{"temperature",
    "fitted_on": "dev", "n_bins", "dev": {...}, "test": {...}}`` where each split holds
    ``ece_before``, ``ece_after``, ``nll_before``, ``nll_after`` and the reliability ``bins_before``
    and ``bins_after``."""
    dev_logits = np.asarray(dev_logits, dtype=np.float64)
    dev_labels = np.asarray(dev_labels)
    if len(dev_labels) < 2:
        raise NbutilsError(f"temperature scaling needs dev examples, got {len(dev_labels)}",
                           fix="give the dev split at least a few examples (finetune_max_eval_samples)")
    temperature = 1.0 / fit_temperature(dev_logits, dev_labels)  # it returns the scale 1 / T
    out: dict[str, Any] = {"temperature": temperature, "fitted_on": "dev", "n_bins": n_bins,
                           "method": "temperature scaling (Guo et al. 2017), lowest dev log-loss"}
    for split, logits, labels in (("dev", dev_logits, dev_labels), ("test", test_logits, test_labels)):
        logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
        entry: dict[str, Any] = {"examples": int(len(labels))}
        for when, probs in (("before", _softmax(logits)), ("after", _softmax(logits / temperature))):
            entry[f"ece_{when}"] = expected_calibration_error(probs, labels, n_bins)
            entry[f"nll_{when}"] = float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean())
            entry[f"bins_{when}"] = reliability_bins(probs, labels, n_bins)
        out[split] = entry
    return out
