"""Continued masked-LM pre-training (nbutils.pretraining.mlm) on a tiny random BERT of the real vocab."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForPreTraining,
    BertTokenizerFast,
)

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import REPO_ROOT
from nbutils.pretraining.mlm import (
    PretrainConfig,
    continue_pretraining,
    load_mlm_model,
    make_collator,
    split_heldout,
    tokenize_texts,
)
from nbutils.training.tensorboard_logs import read_scalars


def _titles(titles_dir, split: str, n: int) -> list[str]:
    lines = (titles_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()[:n]
    return [line.split("\t")[0] for line in lines]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_dir):
    """A random 1-layer BERT (hidden 32) of the vocabulary in vocab_dir (real: 21,128 tokens), saved as
    BertForPreTraining (MLM + NSP heads, pooler), like the conversion notebook's output."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = BertTokenizerFast(str(vocab_dir / "vocab.txt"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertForPreTraining(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pretrained(tiny_bert, titles_dir, tmp_path_factory):
    """One short run on a small repeated corpus, shared by the tests that inspect its output.

    Held-out texts are removed from training with all their copies, so the held-out score
    measures what the model learnt about headlines in general, not memorised ones."""
    corpus = _titles(titles_dir, "train", 240) * 2
    out = tmp_path_factory.mktemp("pretrain") / "out"
    config = PretrainConfig(max_steps=80, batch_size=16, learning_rate=2e-3, warmup_ratio=0.1,
                            heldout_size=24, logging_steps=5, seed=1)
    return continue_pretraining(corpus, tiny_bert, out, config)


def test_masked_only_head_gives_the_stock_loss_and_gradients(tiny_bert, titles_dir):
    stock = BertForMaskedLM.from_pretrained(tiny_bert)
    ours = load_mlm_model(tiny_bert, masked_only_head=True)
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    features = tokenize_texts(_titles(titles_dir, "train", 32), tokenizer, max_length=48)
    batch = make_collator(tokenizer, seed=3)(features)
    assert (batch["labels"] != -100).sum() > 10
    for model in (stock, ours):
        model.eval()  # no dropout: both see exactly the same computation
        model(**batch).loss.backward()
    assert torch.allclose(stock(**batch).loss, ours(**batch).loss, atol=1e-5)
    ours_params = dict(ours.named_parameters())
    for name, p_stock in stock.named_parameters():
        assert torch.allclose(p_stock.grad, ours_params[name].grad, atol=1e-6), name
    # Only the masked rows reach the vocabulary decoder.
    assert ours(**batch).logits.shape == ((batch["labels"] != -100).sum(), tokenizer.vocab_size)


def test_corpus_vocabulary_head_is_the_softmax_over_those_tokens(tiny_bert, titles_dir):
    model = load_mlm_model(tiny_bert, dropout=0.0)  # train() and eval() then differ in the head only
    model.eval()  # eval() scores the whole vocabulary: the reference
    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    features = tokenize_texts(_titles(titles_dir, "train", 32), tokenizer, max_length=48)
    batch = make_collator(tokenizer, seed=3)(features)
    selected = batch["labels"] != -100
    corpus = sorted({i for f in features for i in f["input_ids"]})
    assert 50 < len(corpus) < tokenizer.vocab_size // 10
    full_logits = model(**batch).logits
    # the reference: the whole vocabulary's logits, cut to the corpus tokens, then cross-entropy
    position = {token: k for k, token in enumerate(corpus)}
    targets = torch.tensor([position[int(t)] for t in batch["labels"][selected]])
    expected = torch.nn.functional.cross_entropy(full_logits[:, corpus], targets)

    model.restrict_output_vocabulary(corpus)
    model.train()
    out = model(**batch)
    assert out.logits.shape == (int(selected.sum()), len(corpus))
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    out.loss.backward()
    grad = model.cls.predictions.bias.grad
    outside = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
    outside[corpus] = False
    assert grad[outside].abs().max() == 0 and grad[~outside].abs().max() > 0
    # evaluation (and the saved model) score the whole vocabulary, with the loss training saw:
    # the tokens outside the corpus have probability 0
    model.eval()
    scored = model(**batch)
    assert scored.logits.shape[-1] == tokenizer.vocab_size
    assert scored.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert scored.logits.softmax(-1)[:, outside].max() == 0

    left_out = int(batch["labels"][selected][0])  # a labelled token left out: a clear error, not a wrong loss
    model.restrict_output_vocabulary(t for t in corpus if t != left_out)
    model.train()
    with pytest.raises(NbutilsError, match="outside the head's restricted vocabulary"):
        model(**batch)


def test_unknown_output_vocabulary_is_refused():
    with pytest.raises(NbutilsError, match="mlm_output_vocabulary"):
        PretrainConfig(output_vocabulary="all")


def test_loss_decreases_and_heldout_accuracy_rises(pretrained):
    history = pretrained.history
    assert list(history.columns[:3]) == ["step", "epoch", "loss"]
    # the corpus head starts at about ln(tokens in the corpus), ~7 here, not ln(21,128) ~ 10
    assert history["loss"].iloc[-1] < history["loss"].iloc[0] - 0.25
    m = pretrained.metrics
    assert m["steps"] == 80 == m["max_steps"]
    assert m["masked_token_accuracy"] > m["masked_token_accuracy_before"]
    assert m["heldout_mlm_loss"] < m["heldout_mlm_loss_before"]
    assert m["tokens_per_s"] > 0
    # the default head trained over the corpus's tokens only (scored over all of them)
    assert m["config"]["output_vocabulary"] == "corpus"
    assert 50 < m["model"]["trained_output_tokens"] < m["model"]["vocab_size"] // 10


def test_writes_the_contract_files(pretrained):
    out = pretrained.out_dir
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "loss.png", "metrics.json", "model"]
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["masked_token_accuracy"] == pretrained.metrics["masked_token_accuracy"]
    assert pd.read_csv(out / "history.csv")["step"].tolist() == pretrained.history["step"].tolist()
    config = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["architectures"] == ["BertForMaskedLM"]
    origin = json.loads((out / "model" / "weights_origin.json").read_text(encoding="utf-8"))
    assert origin["pretrained"] is True and "masked-LM pre-trained 80 steps" in origin["how"]


def test_writes_tensorboard_events(pretrained):
    """The run is <run>/tensorboard/<stage>; the masked-LM loss under mlm/ (never beside a
    classification loss), the held-out scores in the eval/ family."""
    scalars = read_scalars(pretrained.out_dir.parent / "tensorboard" / pretrained.out_dir.name)
    assert {"mlm/loss", "mlm/learning_rate"} <= scalars.keys()
    assert not [t for t in scalars if t.startswith(("train/", "heldout/", "finetune/"))], sorted(scalars)
    steps = pretrained.metrics["steps"]
    accuracy = scalars["eval/mlm_masked_token_accuracy"]
    assert [step for step, _ in accuracy] == [0, steps]
    assert accuracy[-1][1] == pytest.approx(pretrained.metrics["masked_token_accuracy"])
    assert scalars["eval/mlm_loss"][0][1] == pytest.approx(pretrained.metrics["heldout_mlm_loss_before"])


def test_output_loads_for_classification_without_missing_encoder_weights(pretrained):
    model, info = AutoModelForSequenceClassification.from_pretrained(
        pretrained.model_dir, num_labels=10, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]
    adapted = load_mlm_model(pretrained.model_dir)
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight,
                       adapted.bert.encoder.layer[0].output.dense.weight)


def test_keeps_the_checkpoints_pooler(pretrained, tiny_bert):
    # MLM does not train the pooler, but fine-tuning starts from it (NSP-trained in Google's).
    source = BertForPreTraining.from_pretrained(tiny_bert)
    model = AutoModelForSequenceClassification.from_pretrained(pretrained.model_dir, num_labels=10)
    assert torch.equal(model.bert.pooler.dense.weight, source.bert.pooler.dense.weight)
    BertTokenizerFast.from_pretrained(pretrained.model_dir)  # tokenizer travels with the model


def test_refuses_to_overwrite_an_earlier_result(pretrained, tiny_bert):
    with pytest.raises(NbutilsError, match="already exists"):
        continue_pretraining(["体育新闻"] * 50, tiny_bert, pretrained.out_dir, PretrainConfig(heldout_size=5))


def test_the_step_budget_decides_whatever_the_clock(tiny_bert, titles_dir, tmp_path, monkeypatch):
    """A slow or busy machine trains the same model, only later: with every clock reading
    1,000 s later at each look (a machine 'slower' than any real one), the same steps run with
    the same learning rates and give bit-identical losses and weights."""
    import time

    texts = _titles(titles_dir, "train", 120)
    config = PretrainConfig(max_steps=6, batch_size=8, heldout_size=8, logging_steps=1, learning_rate=1e-3)
    normal = continue_pretraining(texts, tiny_bert, tmp_path / "normal", config)

    for name in ("monotonic", "time", "perf_counter"):
        real = getattr(time, name)
        calls = iter(range(10**9))
        monkeypatch.setattr(time, name, lambda real=real, calls=calls: real() + 1000.0 * next(calls))
    slow = continue_pretraining(texts, tiny_bert, tmp_path / "slow", config)
    monkeypatch.undo()

    assert slow.metrics["steps"] == normal.metrics["steps"] == 6
    columns = ["step", "loss", "learning_rate", "grad_norm"]
    pd.testing.assert_frame_equal(slow.history[columns], normal.history[columns])
    assert slow.metrics["heldout_mlm_loss"] == normal.metrics["heldout_mlm_loss"]
    assert (tmp_path / "slow/model/model.safetensors").read_bytes() == \
        (tmp_path / "normal/model/model.safetensors").read_bytes()
    assert normal.history["learning_rate"].iloc[-1] <= 0.2 * config.learning_rate  # decayed over the steps


def test_there_is_no_time_budget():
    with pytest.raises(TypeError):
        PretrainConfig(max_steps=10, time_budget_s=60.0)


def test_trains_only_on_the_texts_it_is_given(tiny_bert, titles_dir, tmp_path, monkeypatch):
    import nbutils.pretraining.mlm as pretrain

    seen: list[str] = []
    original = pretrain.tokenize_texts

    def spy(texts, *args, **kwargs):
        seen.extend(texts)
        return original(texts, *args, **kwargs)

    monkeypatch.setattr(pretrain, "tokenize_texts", spy)
    train = _titles(titles_dir, "train", 60)
    result = continue_pretraining(train, tiny_bert, tmp_path / "out",
                                  PretrainConfig(max_steps=2, batch_size=8, heldout_size=10))
    assert sorted(seen) == sorted(train)  # every text once: 50 to train on, 10 held out
    assert result.metrics["train_texts"] == 50 and result.metrics["heldout_texts"] == 10
    forbidden = set(_titles(titles_dir, "dev", 10_000)) | set(_titles(titles_dir, "test", 10_000))
    assert not forbidden & set(seen) - set(train)


def test_notebook_passes_only_the_train_split():
    import inspect

    import nbformat

    from nbutils.stages.pretrain import Pretraining

    nb = nbformat.read(REPO_ROOT / "notebooks" / "03_pretrain_mlm.ipynb", as_version=4)
    # the notebook goes through its stage object, which reads the train texts and calls the
    # recipe's function (masked LM or ELECTRA) on them only (tests/test_stages_pretrain.py runs it)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code") + inspect.getsource(Pretraining)
    assert "Pretraining.open(globals())" in code
    assert "pretrain(self.train_texts," in code
    assert 'texts("train")' in code
    assert 'texts("dev")' not in code and 'texts("test")' not in code


def test_heldout_split_is_seeded_and_disjoint():
    texts = [f"标题{i}" for i in range(100)]
    train, held = split_heldout(texts, 10, seed=5)
    assert (train, held) == split_heldout(texts, 10, seed=5)
    assert len(held) == 10 and not set(train) & set(held) and sorted(train + held) == sorted(texts)
    # a duplicated headline is held out with all its copies, never trained on through another
    doubled = texts + texts[:50]
    train, held = split_heldout(doubled, 10, seed=5)
    assert len(held) == 10 and not set(train) & set(held)


def test_rejects_too_few_texts_and_a_missing_model(tiny_bert, tmp_path):
    with pytest.raises(NbutilsError, match="heldout_size"):
        continue_pretraining(["一条新闻"] * 5, tiny_bert, tmp_path / "a", PretrainConfig(heldout_size=10))
    with pytest.raises(NbutilsError, match="not a model folder"):
        continue_pretraining(["一条新闻"] * 50, tmp_path / "nope", tmp_path / "b", PretrainConfig(heldout_size=10))
    with pytest.raises(NbutilsError, match="max_steps"):
        PretrainConfig(max_steps=0)


def test_whole_word_masking_masks_jieba_words_whole(tiny_bert):
    pytest.importorskip("jieba")
    import jieba

    tokenizer = BertTokenizerFast.from_pretrained(tiny_bert)
    texts = ["中国足球队在北京举行新闻发布会", "房地产市场调控政策继续收紧"] * 16
    features = tokenize_texts(texts, tokenizer, max_length=48, whole_word_masking=True)
    # Offsets shifted by word index: a gap exactly at each jieba word boundary.
    words = [w for w, _, _ in jieba.tokenize(texts[0])]
    starts = [s for (s, e), (ps, pe) in zip(features[0]["offset_mapping"][2:-1], features[0]["offset_mapping"][1:-2],
                                           strict=True) if s != pe]
    assert len(starts) == len(words) - 1
    batch = make_collator(tokenizer, whole_word_masking=True, mlm_probability=0.3, seed=0)(features)
    masked_chars = 0
    for row, text in enumerate(texts):
        masked = (batch["labels"][row, 1:len(text) + 1] != -100).tolist()
        position = 0
        for word, start, end in jieba.tokenize(text):
            flags = set(masked[start:end])
            assert len(flags) == 1, f"word {word!r} partly masked"
            masked_chars += sum(masked[start:end])
            position = end
        assert position == len(text)
    assert masked_chars > 0


def test_cli_pretrains_on_the_train_split(tiny_bert, titles_dir, tmp_path, capsys):
    from nbutils.cli import main

    data = tmp_path / "titles"
    data.mkdir()
    trained: set[str] = set()
    for split, n in (("train", 40), ("dev", 10), ("test", 10)):
        lines = (titles_dir / f"{split}.txt").read_text(encoding="utf-8").splitlines()
        if split != "train":  # a class without train rows is refused by the loader
            lines = [line for line in lines if line.rpartition("\t")[2] in trained]
        lines = lines[:n]
        trained |= {line.rpartition("\t")[2] for line in lines}
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (data / "class.txt").write_bytes((titles_dir / "class.txt").read_bytes())
    out = tmp_path / "out"
    argv = ["pretrain", str(data), str(tiny_bert), str(out), "--max-steps", "2", "--batch-size", "8",
            "--heldout-size", "8", "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train_texts"] + metrics["heldout_texts"] == 40  # train split only
    assert "masked-token accuracy" in capsys.readouterr().out
    assert main(argv) == 2  # the earlier result is not overwritten
