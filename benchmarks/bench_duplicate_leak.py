"""Does cross-fitting leak through duplicates? The distillation teacher's out-of-fold accuracy on
data where every train text occurs twice, with plain stratified folds and with the folds grouped
by text (``nbutils.training.distill.crossfit_teacher_probs``), beside the same SVM's accuracy on
texts it never saw. The data is tests/test_distill.py's synthetic one (some signal, 30% of the
labels redrawn), so the numbers are those the test checks the relations of::

    python benchmarks/bench_duplicate_leak.py [--texts 400] [--seed 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=400, help="distinct train texts, each planted twice")
    parser.add_argument("--seed", type=int, default=3, help="seed of the synthetic data")
    args = parser.parse_args(argv)
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from nbutils.runtime import configure_process

    configure_process()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_distill import texts_with_some_signal

    from nbutils.training.baseline import BaselineConfig, build_baseline
    from nbutils.training.distill import crossfit_teacher_probs

    rng = np.random.default_rng(args.seed)
    texts, labels = texts_with_some_signal(rng, args.texts)
    unseen, unseen_labels = texts_with_some_signal(rng, 1000)
    planted, planted_labels = texts + texts, np.concatenate([labels, labels])
    svm = build_baseline(BaselineConfig(seed=0)).fit(planted, planted_labels)
    heldout = float((svm.predict(unseen) == unseen_labels).mean())
    plain = cross_val_predict(build_baseline(BaselineConfig(seed=0)), planted, planted_labels,
                              cv=StratifiedKFold(5, shuffle=True, random_state=0))
    _, info = crossfit_teacher_probs(planted, planted_labels, 3, folds=5, seed=0)
    print(f"accuracy on 1,000 unseen texts:       {heldout:.1%}")
    print(f"out-of-fold, plain stratified folds:  {float((plain == planted_labels).mean()):.1%}")
    print(f"out-of-fold, folds grouped by text:   {info['oof_accuracy']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
