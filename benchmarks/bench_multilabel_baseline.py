"""The multi-label TF-IDF baseline (one linear SVM per label) on pseudo-multi-label THUCNews titles.

THUCNews titles carry one label each. Texts with several labels are built from them: each text
joins 1 to 3 real headlines of different classes with "；" and carries their classes (the split
of each headline is kept, so no headline is in two splits). This measures the baseline and the
scores the report shows on text a person wrote, not the fixture's word lists; it says nothing about
naturally multi-label data, whose labels overlap in meaning.

    python benchmarks/bench_multilabel_baseline.py [--titles data/raw/thucnews-titles] [--train 6000]

Prints the CPU, the load average, the sizes and the scores; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import time

import numpy as np

from nbutils.data.dataset import load_dataset
from nbutils.training.baseline import run_baseline

LABELS_PER_TEXT = (1, 1, 2, 2, 3)  # drawn uniformly: 40% one label, 40% two, 20% three


def pseudo_multi_label(titles, labels, n: int, n_classes: int, seed: int):
    """``n`` texts of 1-3 headlines of different classes, and their 0/1 label rows."""
    rng = random.Random(seed)
    by_class = {c: [t for t, y in zip(titles, labels, strict=True) if y == c] for c in range(n_classes)}
    for pool in by_class.values():
        rng.shuffle(pool)
    texts, rows = [], []
    for _ in range(n):
        classes = rng.sample(range(n_classes), rng.choice(LABELS_PER_TEXT))
        if any(not by_class[c] for c in classes):
            break
        texts.append("；".join(by_class[c].pop() for c in classes))
        row = np.zeros(n_classes, dtype=int)
        row[classes] = 1
        rows.append(row.tolist())
    return texts, rows


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            found = re.search(r"^model name\s*:\s*(.+)$", info.read(), re.M)
        return found.group(1).strip() if found else platform.machine()
    except OSError:
        return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--titles", default="data/raw/thucnews-titles")
    parser.add_argument("--train", type=int, default=6000, help="pseudo-multi-label train texts")
    parser.add_argument("--test", type=int, default=2000, help="pseudo-multi-label test texts")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    ds = load_dataset(args.titles)
    n = len(ds.label_names)
    train = pseudo_multi_label(ds.texts("train"), ds.labels("train"), args.train, n, args.seed)
    test = pseudo_multi_label(ds.texts("test"), ds.labels("test"), args.test, n, args.seed + 1)
    start = time.perf_counter()
    result = run_baseline(*train, *test, ds.label_names)
    wall = time.perf_counter() - start
    m = result["test"]
    print(f"cpu: {_cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"train {len(train[0]):,} texts, test {len(test[0]):,} texts, {n} labels, "
          f"{np.mean([sum(r) for r in test[1]]):.2f} labels per test text")
    print(f"one-vs-rest TF-IDF + linear SVM: micro-F1 {m['micro_f1']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
          f"samples-F1 {m['samples_f1']:.4f}, subset accuracy {m['subset_accuracy']:.4f}, "
          f"Hamming loss {m['hamming_loss']:.4f}; fit {result['fit_seconds']:.1f} s, wall {wall:.1f} s")


if __name__ == "__main__":
    main()
