"""The TF-IDF character n-gram baseline: learns a tiny hand-made task, returns schema M."""

from __future__ import annotations

import time

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.training.baseline import BaselineConfig, run_baseline

NAMES = ["sports", "finance", "game"]
KEYWORDS = [["足球", "篮球", "冠军"], ["股票", "银行", "基金"], ["游戏", "玩家", "电竞"]]
FILLER = ["今天", "消息", "报道", "记者", "最新", "昨日"]


def _examples(n_per_class: int, offset: int):
    texts, labels = [], []
    for label, words in enumerate(KEYWORDS):
        for i in range(n_per_class):
            j = i + offset
            texts.append(FILLER[j % 6] + words[j % 3] + FILLER[(j + 2) % 6] + words[(j + 1) % 3])
            labels.append(label)
    return texts, labels


def test_beats_chance_and_returns_schema_m():
    train_texts, train_labels = _examples(12, 0)
    test_texts, test_labels = _examples(5, 100)
    result = run_baseline(train_texts, train_labels, test_texts, test_labels, NAMES)
    test = result["test"]
    assert test["accuracy"] > 1 / len(NAMES) + 0.3  # chance is 1/3; keywords give it away
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
                "weighted_recall", "weighted_f1", "per_class", "confusion_matrix"):
        assert key in test, key
    assert list(test["per_class"]) == NAMES
    assert sum(map(sum, test["confusion_matrix"])) == len(test_texts)
    assert result["train_examples"] == 36 and result["test_examples"] == 15
    assert len(result["test_pred"]) == 15 and set(result["test_pred"]) <= set(NAMES)
    correct = sum(p == NAMES[t] for p, t in zip(result["test_pred"], test_labels, strict=True))
    assert correct / 15 == pytest.approx(test["accuracy"])


def test_label_names_work_as_labels_and_runs_are_deterministic():
    train_texts, train_labels = _examples(8, 0)
    test_texts, test_labels = _examples(4, 50)
    by_name = run_baseline(train_texts, [NAMES[i] for i in train_labels], test_texts,
                           [NAMES[i] for i in test_labels], NAMES)
    by_id = run_baseline(train_texts, train_labels, test_texts, test_labels, NAMES)
    assert by_name["test_pred"] == by_id["test_pred"]
    assert by_name["test"]["confusion_matrix"] == by_id["test"]["confusion_matrix"]


@pytest.mark.parametrize(
    ("train", "labels", "message"),
    [
        (["a", "b"], [0, 0], "only one class"),
        (["a", "b"], [0], "2 texts but 1 labels"),
        ([], [], "no examples"),
        (["a", None], [0, 1], "not text"),
    ],
)
def test_bad_input_is_a_clear_error(train, labels, message):
    with pytest.raises(NbutilsError, match=message):
        run_baseline(train, labels, ["a"], [0], ["x", "y"])


def test_bad_ngram_range():
    with pytest.raises(NbutilsError, match="n-gram range"):
        run_baseline(["a", "b"], [0, 1], ["a"], [0], ["x", "y"], BaselineConfig(ngram_min=2, ngram_max=1))


@pytest.mark.slow
def test_real_titles_split(real_titles_dir):
    """On the THUCNews titles mirror (33,590 train / 10,000 test): measured, not assumed."""
    from nbutils.data.dataset import load_dataset

    ds = load_dataset(real_titles_dir, "titles")
    t0 = time.perf_counter()
    result = run_baseline(ds.texts("train"), ds.labels("train"), ds.texts("test"), ds.labels("test"),
                          ds.label_names)
    print(f"baseline on titles: accuracy {result['test']['accuracy']:.4f}, macro F1 "
          f"{result['test']['macro_f1']:.4f}, fit {result['fit_seconds']:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s")
    assert result["test_examples"] == 10_000
    assert result["test"]["accuracy"] > 0.85
