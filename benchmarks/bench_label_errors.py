"""How many planted label errors does confident learning find? (nbutils.explain.label_errors)

A copy of the THUCNews titles is made with 2% of the train labels flipped at random to another
class (the rows are recorded); the copy goes through the steps of ``find_label_errors`` that notebook 02
runs (out-of-fold TF-IDF SVM probabilities, cross-fitted in 5 folds; cleanlab's
``find_label_issues`` ranked by self-confidence). Reported per seed and as the mean:

- recall of the flipped rows in the lowest 2% of self-confidence (as many rows as were flipped;
  a random 2% finds 2% of them), and the same list's precision;
- the rows cleanlab flags: how many, and how many of the flipped ones they hold.

    python benchmarks/bench_label_errors.py                       # 3 seeds, 2% flipped
    python benchmarks/bench_label_errors.py --seeds 1 --out benchmarks/results/label_errors.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.explain.label_errors import label_issues, out_of_fold_probs, self_confidence
from nbutils.runtime.machine import cpu_name


def noisy_copy(source: Path, out: Path, share: float, seed: int) -> np.ndarray:
    """The titles folder copied to ``out`` with ``share`` of the train labels flipped to a random
    other class; returns the flipped row numbers."""
    shutil.copytree(source, out)
    rows = (out / "train.txt").read_text(encoding="utf-8").splitlines()
    n_classes = len((out / "class.txt").read_text(encoding="utf-8").splitlines())
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(rows), size=round(share * len(rows)), replace=False))
    for i in flipped:
        text, label = rows[i].rsplit("\t", 1)
        rows[i] = f"{text}\t{(int(label) + int(rng.integers(1, n_classes))) % n_classes}"
    (out / "train.txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return flipped


def one_seed(data: Path, share: float, seed: int, folds: int) -> dict:
    """The pipeline of ``find_label_errors`` step by step, keeping every row's self-confidence
    (the table holds only the rows cleanlab flags; the top-2% list ranks all rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        flipped = noisy_copy(data, Path(tmp) / "titles", share, seed)
        dataset = load_dataset(Path(tmp) / "titles")
        texts, labels = list(dataset.texts("train")), np.array(dataset.labels("train"))
        t0 = time.perf_counter()
        probs, info = out_of_fold_probs(texts, labels, len(dataset.label_names), folds=folds, seed=seed)
        ranked = np.argsort(self_confidence(labels, probs), kind="stable")  # most suspect first
        flagged = label_issues(texts, labels, probs, dataset.label_names)["row"].to_numpy()
        seconds = time.perf_counter() - t0
    n, k = len(labels), len(flipped)
    found_top = int(np.isin(ranked[:k], flipped).sum())
    return {"seed": seed, "train_rows": n, "flipped": k, "top_rows": k,
            "found_in_top": found_top, "recall_in_top": found_top / k,
            "precision_in_top": found_top / k, "random_expectation": k / n,
            "cleanlab_flagged": int(len(flagged)),
            "cleanlab_flagged_flipped": int(np.isin(flagged, flipped).sum()),
            "oof_accuracy": info["oof_accuracy"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--share", type=float, default=0.02, help="share of train labels flipped")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--out", default="", help="write the results as JSON here")
    args = parser.parse_args()
    results = []
    for seed in range(args.seeds):
        r = one_seed(Path(args.data), args.share, seed, args.folds)
        results.append(r)
        print(f"seed {seed}: {r['flipped']:,} of {r['train_rows']:,} labels flipped; the "
              f"{r['top_rows']:,} most suspect rows hold {r['found_in_top']:,} of them "
              f"(recall {r['recall_in_top']:.1%}, random {r['random_expectation']:.1%}); cleanlab "
              f"flags {r['cleanlab_flagged']:,} rows, {r['cleanlab_flagged_flipped']:,} of them "
              f"flipped; {r['seconds']:.0f} s", flush=True)
    mean = {key: float(np.mean([r[key] for r in results]))
            for key in ("recall_in_top", "precision_in_top", "random_expectation", "cleanlab_flagged",
                        "cleanlab_flagged_flipped", "oof_accuracy", "seconds")}
    print(f"mean over {len(results)} seed(s): the lowest {args.share:.0%} of self-confidence holds "
          f"{mean['recall_in_top']:.1%} of the flipped rows (random: {mean['random_expectation']:.1%}), "
          f"{mean['recall_in_top'] / mean['random_expectation']:.0f}x chance")
    data = os.path.relpath(args.data, REPO_ROOT)  # repository-relative where it is inside it
    summary = {"command": f"python benchmarks/bench_label_errors.py --data {data} --share {args.share} "
                          f"--seeds {args.seeds} --folds {args.folds}",
               "share_flipped": args.share, "folds": args.folds, "data": data,
               "cpu": cpu_name(), "load_average_at_end": list(os.getloadavg()),
               "mean": mean, "per_seed": results}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print("wrote", args.out)


if __name__ == "__main__":
    main()
