"""Likely label errors: self-confidence is the out-of-fold probability of the given label,
cleanlab's flagged rows come most suspect first, planted label flips in real titles are found far
above chance, the CSV is written whole or not at all, and multi-label data is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbutils.core.errors import NbutilsError
from nbutils.data.dataset import load_dataset
from nbutils.explain.label_errors import (
    find_label_errors,
    label_issues,
    self_confidence,
    write_label_issues,
)


def test_self_confidence_is_the_probability_of_the_given_label():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 50)
    labels = rng.integers(0, 4, 50)
    assert self_confidence(labels, probs) == pytest.approx(probs[np.arange(50), labels])


def test_flagged_rows_are_ranked_by_self_confidence_and_name_both_labels():
    rng = np.random.default_rng(1)
    n, names = 600, ["a", "b", "c"]
    labels = rng.integers(0, 3, n)
    probs = np.full((n, 3), 0.05)
    probs[np.arange(n), labels] = 0.9
    flipped = rng.choice(n, 30, replace=False)
    given = labels.copy()
    given[flipped] = (labels[flipped] + 1) % 3  # the model is sure of the true class
    table = label_issues([f"t{i}" for i in range(n)], given, probs, names)
    assert set(table["row"]) == set(flipped)
    assert table["given_prob"].is_monotonic_increasing and table["rank"].tolist() == list(range(1, 31))
    row = table.iloc[0]
    assert row["given"] == names[given[row["row"]]] and row["suspected"] == names[labels[row["row"]]]
    assert row["text"] == f"t{row['row']}"


def test_planted_flips_in_real_titles_are_found_far_above_chance(titles_dir, tmp_path):
    dataset = load_dataset(titles_dir).subsample({"train": 3000, "dev": 10, "test": 10}, seed=0)
    texts, labels = list(dataset.texts("train")), np.array(dataset.labels("train"))
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(labels), 60, replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, len(dataset.label_names), 60)) % len(dataset.label_names)
    folder = tmp_path / "noisy"
    folder.mkdir()
    (folder / "train.txt").write_text("".join(f"{t}\t{y}\n" for t, y in zip(texts, noisy, strict=True)), "utf-8")
    for split in ("dev", "test"):
        (folder / f"{split}.txt").write_text(
            "".join(f"{t}\t{y}\n" for t, y in zip(dataset.texts(split), dataset.labels(split), strict=True)), "utf-8")
    (folder / "class.txt").write_text("".join(f"{n}\n" for n in dataset.label_names), "utf-8")
    table, info = find_label_errors(load_dataset(folder), folds=3)
    assert info["rows"] == 3000 and info["flagged"] == len(table)
    found = np.isin(table["row"].head(60), flipped).mean()  # precision of the 2% most suspect
    assert found > 0.2, f"only {found:.0%} of the top 2% were flipped rows (chance: 2%)"
    out = write_label_issues(table, tmp_path / "issues.csv")
    assert pd.read_csv(out)["row"].tolist() == table["row"].tolist()
    with pytest.raises(NbutilsError, match="already exists"):
        write_label_issues(table, out)


def test_multi_label_datasets_are_refused_and_the_notebook_section_says_so(capsys, tmp_path):
    from nbutils.explain.label_errors import show_label_errors

    class MultiLabel:
        multi_label = True

    with pytest.raises(NbutilsError, match="not yet for multi-label"):
        find_label_errors(MultiLabel())
    assert show_label_errors(MultiLabel(), tmp_path / "issues.csv") is None
    assert "not yet for multi-label" in capsys.readouterr().out and not (tmp_path / "issues.csv").exists()


def test_no_process_pool_is_forked(monkeypatch):
    """cleanlab forks a multiprocessing pool by default; a fork of a process whose threads hold locks
    (torch's OpenMP pool, the tokenizer's) can hang forever, so the search runs in this process."""
    import multiprocessing
    import multiprocessing.pool

    import cleanlab.filter  # noqa: F401 (imported before Pool is replaced: its imports subclass it)
    import numpy as np

    from nbutils.explain.label_errors import label_issues

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    monkeypatch.setattr(multiprocessing.pool, "Pool", no_pool)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    probs = rng.dirichlet(np.ones(3), size=len(labels))
    probs[np.arange(len(labels)), labels] += 2.0
    probs /= probs.sum(1, keepdims=True)
    probs[:3] = [[0.02, 0.96, 0.02], [0.02, 0.96, 0.02], [0.02, 0.02, 0.96]]  # three given label 0
    table = label_issues([f"t{i}" for i in range(len(labels))], labels, probs, ["a", "b", "c"])
    assert {0, 1, 2} <= set(table["row"])
