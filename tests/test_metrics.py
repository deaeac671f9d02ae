"""Metrics schema M: values checked by hand on a small example and against sklearn's report."""

from __future__ import annotations

import pytest
from sklearn.metrics import classification_report

from nbutils.core.errors import NbutilsError
from nbutils.training.metrics import classification_metrics, confusion_frame, per_class_table

NAMES = ["体育", "财经", "科技"]


def test_hand_computed_example():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = classification_metrics(y_true, y_pred, NAMES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # class 0: P 1/2 R 1/2; class 1: P 2/3 R 1; class 2: P 1 R 1/2
    assert m["per_class"]["体育"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["财经"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["财经"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    for key in ("macro_precision", "macro_recall", "weighted_precision", "weighted_recall", "weighted_f1"):
        assert 0 <= m[key] <= 1


def test_names_and_ids_agree_and_match_sklearn():
    y_true = [0, 1, 2, 2, 1, 0, 0]
    y_pred = [0, 2, 2, 1, 1, 0, 2]
    by_id = classification_metrics(y_true, y_pred, NAMES)
    by_name = classification_metrics([NAMES[i] for i in y_true], [NAMES[i] for i in y_pred], NAMES)
    assert by_id == by_name
    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert by_id["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
    assert by_id["weighted_recall"] == pytest.approx(report["weighted avg"]["recall"])


def test_absent_class_still_reported():
    m = classification_metrics([0, 0], [0, 1], NAMES)
    assert m["per_class"]["科技"]["support"] == 0
    assert len(m["confusion_matrix"]) == 3 and all(len(r) == 3 for r in m["confusion_matrix"])


def test_tables():
    m = classification_metrics([0, 1, 2], [0, 1, 1], NAMES)
    table = per_class_table(m)
    assert list(table.index) == NAMES + ["macro avg", "weighted avg"]
    assert table.loc["weighted avg", "support"] == 3
    cm = confusion_frame(m)
    assert cm.loc["科技", "财经"] == 1


def test_bad_labels_are_clear_errors():
    with pytest.raises(NbutilsError, match="unknown label name"):
        classification_metrics(["体育"], ["娱乐"], NAMES)
    with pytest.raises(NbutilsError, match="outside 0..2"):
        classification_metrics([0], [3], NAMES)
    with pytest.raises(NbutilsError, match="2 true labels but 1"):
        classification_metrics([0, 1], [0], NAMES)
    with pytest.raises(NbutilsError, match="no examples"):
        classification_metrics([], [], NAMES)
