"""`make figures`: the README figures are redrawn from a run's tables, small, with the run's own class names."""

from __future__ import annotations

import json
import warnings

import pandas as pd
import pytest

from nbutils.core.errors import NbutilsError
from nbutils.reporting.figures import MAX_BYTES, make_figures

NAMES = ["财经", "体育", "游戏"]  # names as a dataset with Chinese labels has them


def fake_run(root):
    run = root / "20260101-000000-demo"
    (run / "finetune").mkdir(parents=True)
    (run / "freezing").mkdir()
    pd.DataFrame({"step": [10, 20, 30], "loss": [2.0, 1.5, 1.2], "eval_loss": [None, 1.4, 1.1],
                  "eval_accuracy": [None, 0.6, 0.7], "eval_macro_f1": [None, 0.55, 0.68]}
                 ).to_csv(run / "finetune" / "history.csv", index=False)
    test = {"accuracy": 0.7, "macro_f1": 0.68, "n": 30,
            "per_class": {n: {"f1": 0.7} for n in NAMES},
            "confusion_matrix": [[8, 1, 1], [1, 7, 2], [2, 2, 6]]}
    (run / "finetune" / "metrics.json").write_text(json.dumps({"test": test}), encoding="utf-8")
    pd.DataFrame({"strategy": ["full", "classifier_only"], "seed": [1, 1],
                  "trainable_params": [1000, 10], "train_time_s": [2.0, 1.0],
                  "test_accuracy": [0.7, 0.4]}).to_csv(run / "freezing" / "results.csv", index=False)
    return run


def test_figures_are_drawn_small_with_the_runs_own_class_names(tmp_path):
    run = fake_run(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = make_figures(run, tmp_path / "figures")
    assert [p.name for p in written] == ["training_curves.png", "confusion_matrix.png", "freezing_comparison.png"]
    assert all(1000 < p.stat().st_size < MAX_BYTES for p in written)
    assert not [w for w in caught if "missing from font" in str(w.message)]  # 财经 体育 游戏 drawn


def test_confusion_labels_are_the_class_names_as_a_users_run_draws_them(tmp_path, monkeypatch):
    """No names added that a user's own run does not draw (e.g. a translation in front)."""
    from nbutils.reporting import plots

    seen = []
    real = plots.confusion_heatmap
    monkeypatch.setattr(plots, "confusion_heatmap", lambda frame, **kw: seen.append(list(frame.index)) or real(frame, **kw))
    run = fake_run(tmp_path)
    names = ["finance", "sports", "game"]
    metrics = json.loads((run / "finetune" / "metrics.json").read_text(encoding="utf-8"))
    metrics["test"]["per_class"] = {n: {"f1": 0.7} for n in names}
    (run / "finetune" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    make_figures(run, tmp_path / "figures")
    assert seen == [names]


def test_a_run_without_finetuning_is_refused(tmp_path):
    with pytest.raises(NbutilsError, match="no finetune/metrics.json"):
        make_figures(tmp_path, tmp_path / "figures")
