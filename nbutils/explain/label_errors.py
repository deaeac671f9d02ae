"""Which training labels are probably wrong: confident learning on out-of-fold probabilities.

1. Every train text gets class probabilities from a model that never saw it: the TF-IDF SVM
   cross-fitted exactly as the distillation teacher is (``nbutils.distill.crossfit_teacher_probs``:
   stratified folds, one temperature fitted to the out-of-fold scores; where the data has
   duplicates, the folds keep a text's copies together).
2. cleanlab's ``find_label_issues`` (Northcutt et al. 2021, "Confident Learning") flags the rows
   whose given label disagrees with what the out-of-fold model is confident of, ranked by
   self-confidence: the probability the model gives the *given* label, lowest first.
3. The table lists each flagged row with its given and suspected label; ``write_label_issues``
   saves it as a CSV for a person to review (nothing is changed in the data).

benchmarks/bench_label_errors.py measures it: flip 2% of the train labels at random, and count
how many of the flipped rows the lowest 2% of self-confidence finds (random: 2%).
Multi-label datasets are refused (not yet: cleanlab's multi-label variant would need per-label
out-of-fold scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nbutils.core.errors import NbutilsError

COLUMNS = ["rank", "row", "text", "given", "suspected", "given_prob", "suspected_prob"]


def out_of_fold_probs(texts: Sequence[str], labels: Sequence[int], n_classes: int, *,
                      folds: int = 5, seed: int = 42):
    """``(probs [n, n_classes], info)``: each row from a TF-IDF SVM fitted without that text."""
    from nbutils.training.distill import crossfit_teacher_probs

    return crossfit_teacher_probs(texts, labels, n_classes, folds=folds, seed=seed)


def self_confidence(labels: Sequence[int], probs):
    """The out-of-fold probability of each row's given label (cleanlab's label quality score
    ``self_confidence``): low means the label is suspect."""
    import numpy as np
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(np.asarray(labels), np.asarray(probs),
                                               method="self_confidence"))


def label_issues(texts: Sequence[str], labels: Sequence[int], probs, label_names: Sequence[str]):
    """The rows cleanlab's ``find_label_issues`` flags, most suspect (lowest self-confidence)
    first: ``rank, row`` (index in the split), ``text, given, suspected`` (the out-of-fold
    model's top class), ``given_prob`` and ``suspected_prob``."""
    import numpy as np
    import pandas as pd
    from cleanlab.filter import find_label_issues

    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    if len(labels) != len(probs) or len(texts) != len(labels):
        raise NbutilsError(f"{len(texts)} texts, {len(labels)} labels and {len(probs)} probability rows")
    # n_jobs=1: cleanlab otherwise forks a pool of processes, and a fork of a process whose threads
    # hold locks (torch's OpenMP pool, the tokenizer's) can wait forever on one of them
    rows = find_label_issues(labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1)
    suspected = probs[rows].argmax(1)
    return pd.DataFrame({
        "rank": np.arange(1, len(rows) + 1), "row": rows,
        "text": [texts[int(i)] for i in rows],
        "given": [label_names[int(y)] for y in labels[rows]],
        "suspected": [label_names[int(y)] for y in suspected],
        "given_prob": probs[rows, labels[rows]], "suspected_prob": probs[rows, suspected],
    }, columns=COLUMNS)


def find_label_errors(dataset, *, split: str = "train", folds: int = 5, seed: int = 42):
    """:func:`label_issues` of one split of a loaded dataset (``nbutils.data.load_dataset``);
    returns ``(table, info)`` where ``info`` says what scored the rows and how many were flagged."""
    if getattr(dataset, "multi_label", False):
        raise NbutilsError("finding likely label errors is not yet for multi-label datasets",
                           fix="docs/explain.md "
                               "says what works for multi-label models")
    texts, labels = list(dataset.texts(split)), [int(y) for y in dataset.labels(split)]
    probs, info = out_of_fold_probs(texts, labels, len(dataset.label_names), folds=folds, seed=seed)
    table = label_issues(texts, labels, probs, dataset.label_names)
    info = {**info, "split": split, "rows": len(labels), "flagged": len(table),
            "method": "cleanlab find_label_issues (confident learning), ranked by self-confidence"}
    return table, info


def write_label_issues(table, path: str | Path, *, overwrite: bool = False) -> Path:
    """The table as a UTF-8 CSV (written aside, then renamed; an existing file only with ``overwrite``)."""
    from nbutils.core.io import atomic_file

    with atomic_file(path, overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False, encoding="utf-8")
    return Path(path)


def show_label_errors(dataset, csv_path: str | Path, *, folds: int = 5, show: int = 20,
                      seed: int = 42, overwrite: bool = True):
    """Notebook 02's section: find the likely label errors of the train split, write them to
    ``csv_path`` and show the ``show`` most suspect rows; ``folds`` 0 skips it, and so does a
    multi-label dataset (not yet supported; it says so)."""
    from IPython.display import display

    if folds == 0:
        print("likely label errors: skipped (explore_label_error_folds = 0)")
        return None
    if getattr(dataset, "multi_label", False):
        print("likely label errors: skipped, not yet for multi-label datasets (docs/explain.md)")
        return None
    smallest = _smallest_class(dataset)
    if smallest < folds:
        # every class must be in every fold's training part (nbutils.training.distill)
        print(f"likely label errors: skipped, the smallest class has {smallest} distinct train texts, fewer than "
              f"the {folds} cross-fitting folds (lower explore_label_error_folds, or add training examples)")
        return None
    table, info = find_label_errors(dataset, folds=folds, seed=seed)
    write_label_issues(table, csv_path, overwrite=overwrite)
    print(f"{info['flagged']:,} of {info['rows']:,} train rows ({info['flagged'] / info['rows']:.1%}) "
          f"flagged by confident learning on {info['folds']}-fold out-of-fold TF-IDF SVM scores "
          f"(out-of-fold accuracy {info['oof_accuracy']:.1%}); all of them in {csv_path}")
    display(table.head(show).style.format({"given_prob": "{:.3f}", "suspected_prob": "{:.3f}"})
            .hide(axis="index"))
    return table


__all__ = ["find_label_errors", "label_issues", "out_of_fold_probs", "self_confidence",
           "show_label_errors", "write_label_issues"]


def _smallest_class(dataset, split: str = "train") -> int:
    """Distinct train texts of the rarest class (0 when a class has none): cross-fitting groups
    copies of a text into one fold, so copies do not count twice."""
    distinct = set(zip(dataset.texts(split), (int(y) for y in dataset.labels(split)), strict=True))
    counts = [0] * len(dataset.label_names)
    for _, label in distinct:
        counts[label] += 1
    return min(counts, default=0)
