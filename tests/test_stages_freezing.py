"""Notebook 05's stage object (nbutils.stages.freezing): parameters, and the order its cells run in.

The comparison itself runs in the smoke run and in tests/test_freezing.py.
"""

from __future__ import annotations

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.stages.freezing import PARAMETERS, SUMMARY_FORMATS, FreezingComparison


def test_open_names_the_parameters_the_namespace_lacks():
    params = {name: None for name in PARAMETERS if name != "freeze_seeds"}
    with pytest.raises(NbutilsError, match="05_layer_freezing: no parameter freeze_seeds"):
        FreezingComparison.open(params)


def test_the_figures_and_findings_need_the_comparison_first(tmp_path):
    stage = FreezingComparison({"run_dir": str(tmp_path)}, tmp_path, [], [42], None, None)
    for section in (stage.show_accuracy_vs_params, stage.show_accuracy_vs_time, stage.show_curves,
                    stage.show_findings):
        with pytest.raises(NbutilsError, match="stage.run"):
            section()


def test_the_summary_shows_the_columns_findings_computes():
    import pandas as pd

    from nbutils.reporting import findings

    results = pd.DataFrame({"strategy": ["full", "full"], "seed": [1, 2], "trainable_params": [10, 10],
                            "trainable_fraction": [1.0, 1.0], "total_params": [10, 10], "dev_macro_f1": [0.4, 0.5], "test_accuracy": [0.5, 0.7],
                            "test_macro_f1": [0.4, 0.6], "dev_accuracy": [0.5, 0.6], "train_time_s": [1.0, 2.0],
                            "samples_per_second": [10.0, 20.0], "peak_memory_mb": [100.0, 110.0],
                            "peak_memory_kind": ["RSS", "RSS"]})
    summary = findings.summarise(results)
    assert set(SUMMARY_FORMATS) <= set(summary.columns), set(SUMMARY_FORMATS) - set(summary.columns)
