"""Notebook 03's stage object (nbutils.stages.pretrain): switched off, train split only, the recipe's
scores and probes.

The pre-training itself runs in the smoke run and in tests/test_pretrain.py and test_electra.py;
here the stage's own decisions run with the training replaced by a recorder.
"""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from nbutils.core.errors import NbutilsError
from nbutils.stages import pretrain as stage_module
from nbutils.stages.pretrain import PARAMETERS, Pretraining, fill_mask_rows, scores_table

MLM_METRICS = {"masked_token_accuracy_before": 0.01, "masked_token_accuracy": 0.31,
               "heldout_mlm_loss_before": 9.9, "heldout_mlm_loss": 4.2,
               "replaced_token_accuracy_before": 0.5, "replaced_token_accuracy": 0.93}


def _params(tmp_path, **values) -> dict:
    return {name: None for name in PARAMETERS} | {
        "run_dir": str(tmp_path / "run"), "headless": True, "overwrite": False, "mlm_enabled": True,
        "mlm_recipe": "mlm", "mlm_heldout_size": 10, "device": "cpu", "precision": "fp32"} | values


def test_switched_off_it_says_so_once_and_every_cell_does_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(stage_module, "display", lambda *a: pytest.fail("a switched-off stage showed something"))
    stage = Pretraining.open(_params(tmp_path, mlm_enabled=False))
    for cell in (stage.load_texts, lambda: stage.train(overwrite=True), stage.show_scores,
                 lambda: stage.show_fill_mask(["[MASK]"])):
        assert cell() is None
    shown = capsys.readouterr().out
    assert shown.count("switched off (mlm_enabled = False)") == 1
    assert not any(line.startswith("pre-training ") for line in shown.splitlines())
    assert not stage.paths.pretrain.exists()


def test_only_the_train_split_reaches_pre_training(tmp_path, monkeypatch):
    import nbutils.data.dataset as dataset_module
    import nbutils.pretraining.electra as electra

    asked, trained = [], {}
    fake = SimpleNamespace(texts=lambda split: asked.append(split) or [f"{split} text {i}" for i in range(30)])
    monkeypatch.setattr(dataset_module, "load_dataset", lambda *a, **k: fake)

    class Config:
        @staticmethod
        def from_params(params):
            return "config"

    def pretrain(texts, model_dir, out_dir, config, *, figure_path, overwrite):
        trained.update(texts=texts, config=config, overwrite=overwrite)
        return SimpleNamespace(metrics={"steps": 3, "train_runtime_s": 1, "epochs": 0.1, "tokens_per_s": 10.0},
                               figure=figure_path, history=pd.DataFrame({"loss": [1.0]}), model_dir=out_dir)

    monkeypatch.setattr(electra, "pretraining_recipe", lambda recipe: (Config, pretrain))
    monkeypatch.setattr(stage_module, "display", lambda *a: None)
    monkeypatch.setattr(stage_module, "Image", lambda filename: filename)
    stage = Pretraining.open(_params(tmp_path))
    with pytest.raises(NbutilsError, match="stage.load_texts"):
        stage.train(overwrite=False)
    stage.load_texts()
    stage.train(overwrite=False)
    assert asked == ["train"]
    assert trained == {"texts": [f"train text {i}" for i in range(30)], "config": "config", "overwrite": False}
    assert stage.result.metrics["steps"] == 3


def test_the_scores_shown_follow_the_recipe():
    mlm = scores_table(MLM_METRICS, "mlm")
    assert list(mlm.index) == ["masked-token accuracy", "masked-LM loss"]
    assert mlm.loc["masked-LM loss"].tolist() == [9.9, 4.2]
    electra = scores_table(MLM_METRICS, "electra")
    assert electra.loc["replaced-token detection accuracy (discriminator)"].tolist() == [0.5, 0.93]
    assert electra.loc["masked-token accuracy (generator)"].tolist() == [0.01, 0.31]


def test_the_probe_compares_before_and_after_and_electra_has_none(tmp_path, monkeypatch, capsys):
    import nbutils.pretraining.fill_mask as fill_mask

    monkeypatch.setattr(fill_mask, "masked_lm_top_k",
                        lambda folder, text, k: [[(f"{folder}-{t}", 0.5 / (t + 1)) for t in range(k)]])
    rows = fill_mask_rows(["a[MASK]", "b[MASK]"], "base", "adapted", k=2)
    assert [(r["text"], r["model"]) for r in rows] == [("a[MASK]", "before"), ("a[MASK]", "after"),
                                                     ("b[MASK]", "before"), ("b[MASK]", "after")]
    assert rows[1]["top 2"] == "adapted-0 0.50  adapted-1 0.25"
    stage = Pretraining.open(_params(tmp_path, mlm_recipe="electra"))
    stage.show_fill_mask(["a[MASK]"])
    assert "ELECTRA trains a detector, not a mask filler" in capsys.readouterr().out
