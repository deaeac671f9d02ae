"""max_length against the data (nbutils.training.length_fit): the share cut, said where it bites."""

from __future__ import annotations

import pytest

from nbutils.core.errors import NbutilsError, entered_through
from nbutils.text.vocab import build_tokenizer
from nbutils.training.length_fit import (
    WARN_SHARE,
    check_positions,
    measure_length_fit,
    model_positions,
    needed_positions,
)

SHORT, LONG = "国足客场战平对手", "这是一条很长的商品评论，" * 30  # 8 and 360 characters


@pytest.fixture(scope="module")
def tokenizer(vocab_dir):
    return build_tokenizer(vocab_dir / "vocab.txt")


def test_a_fitting_max_length_says_nothing_loud(tokenizer):
    fit = measure_length_fit([SHORT] * 50, tokenizer, 32)
    assert fit["truncated_share"] == 0 and fit["warning"] is None
    assert fit["longest_tokens"] == len(tokenizer(SHORT)["input_ids"]) == 10
    assert fit["needed_max_length"] == 16  # 10 tokens -> the next multiple of 8


@pytest.mark.parametrize(("entry", "option"), [("run", "-p finetune_max_length=368"),
                                               ("notebook", "finetune_max_length = 368"),
                                               ("cli", "--max-length 368")])
def test_a_max_length_that_cuts_many_texts_names_the_share_and_the_fix(tokenizer, entry, option):
    texts = [LONG] * 30 + [SHORT] * 70
    with entered_through(entry):
        fit = measure_length_fit(texts, tokenizer, 48, positions=512)
    assert fit["truncated_share"] == pytest.approx(0.30) and fit["truncated_share"] > WARN_SHARE
    assert fit["needed_max_length"] == 368  # 360 characters + [CLS] [SEP] -> 362 -> 368
    assert "max_length 48 cuts 30.0% of the train texts" in fit["warning"]
    assert "exploration recommends 368" in fit["warning"] and option in fit["warning"]


def test_exploration_s_recommendation_is_quoted_and_the_positions_named(tokenizer):
    with entered_through("run"):
        fit = measure_length_fit([LONG] * 10, tokenizer, 128, positions=128, recommended=384)
    assert "exploration recommends 384" in fit["warning"]
    assert "128 positions" in fit["warning"] and "-p demo_max_position=384" in fit["warning"]


def test_a_max_length_beyond_the_model_s_positions_is_an_error_naming_both_settings():
    with entered_through("run"), pytest.raises(NbutilsError) as err:
        check_positions(360, 128)
    assert "more than the model's 128 position embeddings" in err.value.message
    assert "-p finetune_max_length=128" in err.value.fix and "-p demo_max_position=360" in err.value.fix
    check_positions(128, 128)
    check_positions(4096, None)  # unknown: the tokenizer's own check applies


def test_needed_positions_and_model_positions(vocab_dir, tmp_path):
    from nbutils.checkpoints.random_bert import make_random_bert

    assert needed_positions([SHORT] * 99 + [LONG], vocab_dir / "vocab.txt") == 16  # 99% fit
    assert needed_positions([LONG] * 10, vocab_dir / "vocab.txt") == 368
    model = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "m", hidden_size=32, num_layers=1,
                             num_heads=2, intermediate_size=64, max_position_embeddings=368)
    assert model_positions(model) == 368 and model_positions(tmp_path) is None


def test_the_report_repeats_the_line(tmp_path):
    from nbutils.reporting.report import length_fit_note

    class Run:  # what length_fit_note reads of a loaded run
        finetune_metrics = {"length_fit": {"warning": "max_length 48 cuts 62.0% of the train texts"}}

    assert "62.0%" in length_fit_note(Run()) and "do not fit the data" in length_fit_note(Run())
    Run.finetune_metrics = {"length_fit": {"warning": None}}
    assert length_fit_note(Run()) is None
