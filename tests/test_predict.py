"""Prediction: same answers as one-text-at-a-time inference and as transformers.pipeline, input
order kept, empty and over-long texts handled, the CLI, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from nbutils.device import choose_device
from nbutils.errors import NbutilsError
from nbutils.io import write_json
from nbutils.prediction import Predictor, main, predict
from nbutils.random_bert import make_random_bert

LABELS = ["体育", "财经", "科技"]
TRAINED_WITH = {"max_length": 128, "truncation": "head", "head_tokens": 0}
TITLES = [
    "中华女子学院：本科层次仅1专业招男生",
    "两天价网站背后重重迷雾：做个网站究竟要多少钱",
    "东5环海棠公社230-290平2居准现房98折优惠",
    "卡佩罗：告诉你德国脚生猛的原因 不希望英德战踢点球",
    "82岁老太为学生做饭扫地44年获授荣誉",
    "体育",
    "记者回访地震中可乐男孩：将受邀赴美国参观",
]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, vocab_dir):
    """A tiny random classifier folder, shaped like finetune's output (labels + tokenizer)."""
    base = make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("m") / "base",
                            hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    out = base.parent / "clf"
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    with torch.no_grad():  # spread the logits so labels are not near-ties
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(out)
    write_json(out / "finetune_config.json", TRAINED_WITH)  # as nbutils.train saves it
    return out


def one_by_one(model_dir, texts):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.stack([model(**tok(t, return_tensors="pt")).logits.softmax(-1)[0].numpy() for t in texts])


def test_batched_equals_one_by_one_in_input_order(classifier_dir):
    frame = predict(TITLES, classifier_dir, batch_size=3)  # several batches, sorted by length inside
    assert frame["text"].tolist() == TITLES
    probs = frame[[f"prob_{n}" for n in LABELS]].to_numpy()
    expected = one_by_one(classifier_dir, TITLES)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert frame["label"].tolist() == [LABELS[i] for i in expected.argmax(1)]
    assert frame["confidence"].to_numpy() == pytest.approx(expected.max(1), abs=1e-5)


def test_same_labels_as_transformers_pipeline(classifier_dir):
    pipe = transformers.pipeline("text-classification", model=str(classifier_dir), device="cpu")
    assert [r["label"] for r in pipe(TITLES)] == predict(TITLES, classifier_dir)["label"].tolist()


def test_empty_none_and_overlong_texts(classifier_dir):
    long = "新华社消息，" * 600  # 3,600 characters: far beyond 512 positions
    frame = predict(["", None, long, "体育"], classifier_dir)
    assert len(frame) == 4 and frame["label"].isin(LABELS).all()
    assert frame["text"].tolist()[:2] == ["", ""]
    assert frame["n_tokens"].tolist()[0] == 2  # [CLS] [SEP]
    assert frame["truncated"].tolist() == [False, False, True, False]
    assert frame.loc[2, "n_tokens"] == 3602
    assert predict("体育", classifier_dir)["text"].tolist() == ["体育"]  # a single string is one text
    assert predict([], classifier_dir).empty


def test_uses_the_training_truncation(classifier_dir, tmp_path):
    write_json(classifier_dir / "finetune_config.json", {"max_length": 8, "truncation": "tail", "head_tokens": 0})
    try:
        predictor = Predictor(classifier_dir)
        cut = predictor.truncator(None, None)
        assert (cut.max_length, cut.truncation) == (8, "tail")
        frame = predictor(["一二三四五六七八九十"])
        assert bool(frame.loc[0, "truncated"])
        tail_only = predictor(["五六七八九十"], max_length=8)  # the last 6 characters: same tokens
        assert frame.loc[0, "label"] == tail_only.loc[0, "label"]
        np.testing.assert_allclose(frame.loc[0, "confidence"], tail_only.loc[0, "confidence"], atol=1e-6)
    finally:
        write_json(classifier_dir / "finetune_config.json", TRAINED_WITH)


def test_cli_table_file_and_csv(classifier_dir, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TITLES[:3]) + "\n", encoding="utf-8")
    assert main(["--model", str(classifier_dir), "--file", str(src), "体育新闻"]) == 0
    printed = capsys.readouterr().out
    assert "label" in printed and "体育新闻" in printed and printed.count("\n") == 5
    out_csv = tmp_path / "p.csv"
    assert main(["--model", str(classifier_dir), "--output", str(out_csv), *TITLES]) == 0
    saved = pd.read_csv(out_csv)
    assert saved["text"].tolist() == TITLES and {f"prob_{n}" for n in LABELS} <= set(saved.columns)
    # an earlier result is never replaced silently
    with pytest.raises(NbutilsError, match="already exists"):
        main(["--model", str(classifier_dir), "--output", str(out_csv), "体育新闻"])
    assert pd.read_csv(out_csv)["text"].tolist() == TITLES
    assert main(["--model", str(classifier_dir), "--output", str(out_csv), "--overwrite", "体育新闻"]) == 0
    assert pd.read_csv(out_csv)["text"].tolist() == ["体育新闻"]


def test_file_lines_split_on_newlines_only(classifier_dir, tmp_path):
    # U+2028 and \x1c are inside a line here; str.splitlines() would split them apart
    lines = ["第一行\u2028仍是第一行", "第二行\x1c也是", "第三行"]
    src = tmp_path / "in.txt"
    src.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    out_csv = tmp_path / "p.csv"
    assert main(["--model", str(classifier_dir), "--file", str(src), "--output", str(out_csv)]) == 0
    assert pd.read_csv(out_csv)["text"].tolist() == lines


def test_errors(classifier_dir, tmp_path):
    with pytest.raises(NbutilsError, match="model folder not found"):
        predict(["x"], tmp_path / "missing")
    with pytest.raises(NbutilsError, match="file not found"):
        main(["--model", str(classifier_dir), "--file", str(tmp_path / "none.txt")])
    with pytest.raises(NbutilsError, match="no texts"):
        main(["--model", str(classifier_dir)])
    with pytest.raises(NbutilsError, match="batch_size"):
        predict(["x"], classifier_dir, batch_size=0)
    assert json.loads((classifier_dir / "config.json").read_text())["id2label"]["0"] == "体育"


def test_package_level_predict_survives_importing_the_prediction_module(classifier_dir):
    import nbutils
    import nbutils.prediction  # the module's name differs from the function's: no rebinding

    assert callable(nbutils.predict) and nbutils.predict is not nbutils.prediction

    assert nbutils.predict(["体育"], classifier_dir)["label"].tolist() == predict(["体育"], classifier_dir)["label"].tolist()


def test_cpu_prediction_stays_fp32(classifier_dir, monkeypatch):
    # training autocasts to bf16 on a CPU with native bf16; prediction keeps the fp32 weights
    import nbutils.device

    monkeypatch.setattr(nbutils.device, "cpu_has_native_bf16", lambda: True)
    assert choose_device("cpu").precision == "bf16"
    predictor = Predictor(classifier_dir, device="cpu")
    assert predictor.choice.precision == "fp32"
    assert next(predictor.model.parameters()).dtype == torch.float32


def test_chunked_prediction_gives_the_labels_of_the_all_at_once_path(classifier_dir, monkeypatch):
    """Long texts are predicted in chunks (bounded memory); labels and n_tokens equal the old
    path's: every text tokenized whole, cut, and all batches formed from one length sort."""
    import random

    from nbutils import tokenization

    rng = random.Random(0)
    texts = ["".join(rng.choice(TITLES) for _ in range(rng.randrange(1, 60))) for _ in range(120)]
    predictor = Predictor(classifier_dir, device="cpu")
    cut = predictor.truncator(64, "head+tail")
    full = predictor.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    reference = predictor.logits([cut.cut(ids) for ids in full], batch_size=16).argmax(-1)
    chunks = []

    def chunks_of_seven(t):  # many small chunks, each sorted and batched on its own
        chunks.extend((a, min(a + 7, len(t))) for a in range(0, len(t), 7))
        return iter(chunks)

    monkeypatch.setattr(tokenization, "char_chunks", chunks_of_seven)
    frame = predictor(texts, batch_size=16, max_length=64, truncation="head+tail")
    assert [LABELS.index(x) for x in frame["label"]] == reference.tolist()
    assert frame["n_tokens"].tolist() == [len(ids) for ids in full]
    assert frame["truncated"].tolist() == [len(ids) > 64 for ids in full]
    assert frame["text"].tolist() == texts
    assert len(chunks) == 18
