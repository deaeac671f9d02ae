"""Weights: what a load means, said in one line when it is the expected new head, loudly when not."""

from __future__ import annotations

import pytest

from nbutils.checkpoints.random_bert import make_random_bert


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_dir):
    return make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("m") / "model", hidden_size=16,
                            num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=32, seed=1)


def test_a_random_bert_says_its_weights_were_never_pretrained(tiny_model):
    from nbutils.checkpoints.weights import random_weights_warning, weights_origin

    assert weights_origin(tiny_model)["pretrained"] is False
    assert "RANDOM weights" in random_weights_warning(tiny_model)
    assert weights_origin(tiny_model.parent)["pretrained"] is None  # no record: no claim either way
    assert random_weights_warning(tiny_model.parent) is None

# --------------------------------------------------------------- what a load means, said briefly

NEW_HEAD = {"missing_keys": {"classifier.weight", "classifier.bias"},
            "unexpected_keys": {"cls.predictions.bias", "cls.seq_relationship.weight"},
            "mismatched_keys": set(), "error_msgs": []}


def test_expected_new_head_is_one_line():
    from nbutils.checkpoints.weights import describe_loading

    text, mismatch = describe_loading(NEW_HEAD, "m")
    assert not mismatch and "\n" not in text
    assert "new classifier head" in text and "cls.predictions, cls.seq_relationship" in text
    assert "expected when a pre-trained encoder gets a new task head" in text
    refit = {**NEW_HEAD, "missing_keys": set(), "unexpected_keys": set(),
             "mismatched_keys": {("classifier.weight", (3, 8), (10, 8))}}
    text, mismatch = describe_loading(refit, "m")
    assert not mismatch and "replaced by a new one" in text


@pytest.mark.parametrize("field, key, word", [
    ("missing_keys", "bert.encoder.layer.0.output.dense.weight", "MISSING"),
    ("unexpected_keys", "bert.encoder.layer.7.output.dense.weight", "UNUSED"),
    ("mismatched_keys", ("bert.embeddings.word_embeddings.weight", (21128, 8), (100, 8)), "ANOTHER SHAPE"),
])
def test_real_mismatches_stay_loud_and_listed(field, key, word):
    from nbutils.checkpoints.weights import describe_loading

    info = {**NEW_HEAD, field: {*NEW_HEAD.get(field, set()), key}}
    text, mismatch = describe_loading(info, "m")
    assert mismatch and word in text and (key[0] if isinstance(key, tuple) else key) in text


def test_loading_an_encoder_for_classification_prints_one_line_not_the_load_report(tiny_model, capsys, caplog):
    from transformers import AutoModelForSequenceClassification

    from nbutils.checkpoints.weights import load_pretrained

    model = load_pretrained(AutoModelForSequenceClassification, tiny_model, num_labels=3)
    assert model.config.num_labels == 3
    out = capsys.readouterr()
    assert "UNEXPECTED" not in out.out + out.err + caplog.text  # transformers' table
    assert out.out.count("\n") == 1 and "new classifier head" in out.out
    # nothing allowed: loading BertForPreTraining as a masked-LM leaves the pooler and NSP unused
    from transformers import BertForMaskedLM

    with pytest.warns(UserWarning, match=r"UNUSED.*bert\.pooler\.dense\.bias"):
        load_pretrained(BertForMaskedLM, tiny_model, new_ok=(), unused_ok=())


def test_the_same_load_message_is_said_once_inside_say_loading_once(tiny_model, capsys):
    """The freezing comparison loads one encoder per strategy and seed: one message, not six."""
    from transformers import AutoModelForSequenceClassification

    from nbutils.checkpoints.weights import load_pretrained, say_loading_once

    with say_loading_once():
        for _ in range(3):
            load_pretrained(AutoModelForSequenceClassification, tiny_model, num_labels=3)
    assert capsys.readouterr().out.count("new classifier head") == 1
    load_pretrained(AutoModelForSequenceClassification, tiny_model, num_labels=3)  # outside: said again
    assert capsys.readouterr().out.count("new classifier head") == 1
