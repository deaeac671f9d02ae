"""Notebook 01's stage object (nbutils.stages.convert): which source, which checks, in which order.

The demo path (random BERT -> Google's layout -> converted back) runs in the smoke run and in
tests/test_convert.py's notebook test; here the branches the smoke profile never takes: a Hugging
Face folder as the source, a model without a masked-LM head, the demo's vocabulary built from the
train texts, and the order the cells must run in.
"""

from __future__ import annotations

import json

import pytest

from nbutils.core.errors import NbutilsError
from nbutils.stages.convert import PARAMETERS, Conversion


def _params(tmp_path, **values) -> dict:
    return {name: None for name in PARAMETERS} | {
        "run_dir": str(tmp_path / "run"), "headless": True, "overwrite": False, "checkpoint_source": "",
        "data_format": "auto", "data_on_bad_rows": "raise", "data_text_column": "text",
        "data_label_column": "label", "seed": 1} | values


def test_open_needs_every_parameter_and_makes_convert(tmp_path):
    params = _params(tmp_path)
    del params["demo_max_position"]
    with pytest.raises(NbutilsError, match="01_convert_checkpoint: no parameter demo_max_position"):
        Conversion.open(params)
    stage = Conversion.open(_params(tmp_path))
    assert stage.demo and stage.paths.convert.is_dir()
    assert not Conversion.open(_params(tmp_path, checkpoint_source="bert-base-chinese")).demo


def test_the_cells_say_which_one_must_run_first(tmp_path):
    stage = Conversion.open(_params(tmp_path, checkpoint_source="somewhere"))
    with pytest.raises(NbutilsError, match="stage.prepare_source"):
        stage.convert()
    for later in (stage.show_variables, stage.verify, lambda: stage.fill_mask_check("[MASK]")):
        with pytest.raises(NbutilsError, match="stage.convert"):
            later()


def test_a_hugging_face_folder_is_copied_checked_and_probed(tmp_path, vocab_dir, capsys):
    from nbutils.checkpoints.random_bert import make_random_bert

    source = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "hf", hidden_size=32, num_layers=1,
                              num_heads=2, intermediate_size=64, max_position_embeddings=32, seed=3)
    stage = Conversion.open(_params(tmp_path, checkpoint_source=str(source)))
    stage.prepare_source()
    stage.convert()
    stage.show_variables()
    stage.verify()
    stage.fill_mask_check("北京是中国的[MASK]都。")
    shown = capsys.readouterr().out
    assert f"source: {source}" in shown
    assert "No conversion was needed: the source is already a Hugging Face folder." in shown
    assert "RANDOM" not in shown  # only the demo's own random weights say so
    written = json.loads(stage.paths.file("conversion").read_text(encoding="utf-8"))
    assert written["verification"]["ok"] and not written["mapped"]
    assert (stage.paths.converted_model / "config.json").is_file()


def test_a_model_without_a_masked_lm_head_gets_no_fill_in_check(tmp_path, capsys):
    stage = Conversion.open(_params(tmp_path, checkpoint_source="x"))
    stage.report = {"model_class": "BertForSequenceClassification"}
    stage.fill_mask_check("[MASK]")
    assert "BertForSequenceClassification has no masked-LM head: no fill-in check." in capsys.readouterr().out


def test_the_demo_without_a_vocabulary_reads_the_data_once_for_vocab_and_positions(tmp_path, titles_dir,
                                                                                  monkeypatch, capsys):
    import nbutils.data.dataset as dataset_module

    reads = []
    real = dataset_module.load_dataset

    def counted(*args, **kwargs):
        reads.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_dataset", counted)
    stage = Conversion.open(_params(tmp_path, demo_vocab_dir=str(tmp_path / "no-vocab"), data_dir=str(titles_dir),
                                    demo_max_position=0))
    vocab_file = stage._demo_vocab()
    positions = stage._demo_positions(vocab_file)
    shown = capsys.readouterr().out
    assert vocab_file == stage.paths.convert / "demo_vocab.txt" and vocab_file.is_file()
    assert f"no vocab.txt in {tmp_path / 'no-vocab'}: built a character vocabulary" in shown
    assert f"demo BERT: {positions} positions" in shown and 2 <= positions <= 512
    assert len(reads) == 1
