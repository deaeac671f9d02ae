"""ELECTRA pre-training (nbutils.pretraining.electra) on a tiny random BERT of the real vocabulary."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.pretraining.electra import ElectraConfig, build_electra, electra_pretraining


def _titles(titles_dir, n):
    lines = (titles_dir / "train.txt").read_text(encoding="utf-8").splitlines()[:n]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_dir):
    return make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("e") / "init", hidden_size=32,
                            num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=64)


@pytest.fixture(scope="module")
def electra_run(tiny_bert, titles_dir, tmp_path_factory):
    config = ElectraConfig(max_steps=60, batch_size=16, learning_rate=2e-3, max_length=32, heldout_size=32,
                           logging_steps=10, seed=1, dropout=0.0, mlm_probability=0.25)
    return electra_pretraining(_titles(titles_dir, 300), tiny_bert, tmp_path_factory.mktemp("o") / "out", config)


def test_generator_shares_the_discriminators_embeddings(tiny_bert):
    model = build_electra(tiny_bert, ElectraConfig(generator_layers=1))
    assert model.generator.embeddings is model.discriminator.embeddings
    assert model.generator_head.predictions.decoder.weight is model.discriminator.embeddings.word_embeddings.weight
    assert model.generator.config.num_hidden_layers == 1
    assert model.generator.config.intermediate_size == 32  # half the discriminator's


def test_a_batch_with_no_selected_token_trains(tiny_bert):
    # The last batch of an epoch can be 2 short titles with no token selected for masking.
    model = build_electra(tiny_bert, ElectraConfig(generator_layers=1))
    # small ids: valid in the real vocabulary and in the offline fixture's (labels -100: none is masked)
    input_ids = torch.tensor([[1, 5, 6, 2], [1, 7, 8, 2]])
    out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                labels=torch.full_like(input_ids, -100))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert out["gen_total"] == 0


def test_discriminator_learns_to_detect_replacements(electra_run):
    m = electra_run.metrics
    assert m["recipe"] == "electra" and m["steps"] == 60
    # a random head is ~50% right; after training it must beat that clearly on held-out texts
    assert m["replaced_token_accuracy"] > m["replaced_token_accuracy_before"] + 0.1
    assert m["replaced_token_accuracy"] > 0.7
    assert json.loads((electra_run.out_dir / "metrics.json").read_text())["masked_lm_head"].startswith("not trained")


def test_saved_encoder_is_the_trained_discriminator(electra_run, tiny_bert):
    before = load_file(str(tiny_bert / "model.safetensors"))
    after = load_file(str(electra_run.model_dir / "model.safetensors"))
    key = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(before[key], after[key])
    assert torch.equal(before["bert.pooler.dense.weight"], after["bert.pooler.dense.weight"])  # kept, not trained
    clf = AutoModelForSequenceClassification.from_pretrained(str(electra_run.model_dir), num_labels=10)
    assert torch.equal(clf.bert.encoder.layer[0].attention.self.query.weight, after[key])


def test_refuses_existing_output_and_whole_words(electra_run, tiny_bert, titles_dir):
    with pytest.raises(NbutilsError, match="already exists"):
        electra_pretraining(_titles(titles_dir, 100), tiny_bert, electra_run.out_dir,
                            ElectraConfig(max_steps=1, heldout_size=10))
    with pytest.raises(NbutilsError, match="whole-word"):
        ElectraConfig(whole_word_masking=True)


def test_electra_loss_has_its_own_tensorboard_namespace(electra_run):
    """ELECTRA's loss (generator + discriminator) is electra/loss in <run>/tensorboard/<stage>,
    never beside a masked-LM or classification loss."""
    from nbutils.training.tensorboard_logs import read_scalars

    scalars = read_scalars(electra_run.out_dir.parent / "tensorboard" / electra_run.out_dir.name)
    assert "electra/loss" in scalars and len(scalars["electra/loss"]) > 1
    assert not [t for t in scalars if t.startswith(("train/", "mlm/", "finetune/"))], sorted(scalars)
