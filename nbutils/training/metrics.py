"""Classification metrics in the project's schema ``M`` (see CONTRIBUTING.md), from scikit-learn.

Always computed on the full set of predictions (under DDP, ``Trainer.predict`` gathers every
rank's predictions first), never averaged per batch or per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nbutils.core.errors import NbutilsError


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


def per_class_table(metrics: dict[str, Any]):
    """The per-class report as a DataFrame (rows: classes, then macro and weighted averages)."""
    import pandas as pd

    rows = [{"class": name, **vals} for name, vals in metrics["per_class"].items()]
    total = sum(v["support"] for v in metrics["per_class"].values())
    for avg in ("macro", "weighted"):
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
