"""Prediction: same answers as one-text-at-a-time inference and as transformers.pipeline, input
order kept, empty and over-long texts handled, the CLI, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.inference.predict import Predictor, main, predict
from nbutils.runtime.device import choose_device

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
    """A tiny random classifier folder, shaped like finetune's output (labels, tokenizer and the
    cut it was trained with); the head's weights spread so labels are not near-ties."""
    return make_random_classifier(vocab_dir / "vocab.txt", LABELS, tmp_path_factory.mktemp("m"), hidden_size=32,
                                  num_layers=2, num_heads=2, intermediate_size=64, head_std=2.0,
                                  prediction_max_length=TRAINED_WITH["max_length"])


def one_by_one(model_dir, texts):
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return np.stack([model(**tok(t, return_tensors="pt")).logits.softmax(-1)[0].numpy() for t in texts])


def test_batched_equals_one_by_one_in_input_order(classifier_dir):
    # several batches, sorted by length inside; torch-fp32: the reference, not a faster backend
    frame = predict(TITLES, classifier_dir, batch_size=3, backend="torch-fp32")
    assert frame["text"].tolist() == TITLES
    probs = frame[[f"prob_{n}" for n in LABELS]].to_numpy()
    expected = one_by_one(classifier_dir, TITLES)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert frame["label"].tolist() == [LABELS[i] for i in expected.argmax(1)]
    assert frame["confidence"].to_numpy() == pytest.approx(expected.max(1), abs=1e-5)


def test_same_labels_as_transformers_pipeline(classifier_dir):
    pipe = transformers.pipeline("text-classification", model=str(classifier_dir), device="cpu")
    assert [r["label"] for r in pipe(TITLES)] == predict(TITLES, classifier_dir, backend="torch-fp32")["label"].tolist()


def test_empty_none_and_overlong_texts(classifier_dir):
    long = "新华社消息，" * 600  # 3,600 characters: far beyond 512 positions
    frame = predict(["", None, long, "体育"], classifier_dir)
    assert len(frame) == 4 and frame["label"].isin(LABELS).all()
    assert frame["text"].tolist()[:2] == ["", ""]
    assert frame["n_tokens"].tolist()[0] == 2  # [CLS] [SEP]
    assert frame["truncated"].tolist() == [False, False, True, False]
    # cut from its first characters only, so its length is not counted unless asked for
    assert pd.isna(frame.loc[2, "n_tokens"]) and frame.loc[3, "n_tokens"] == 4
    counted = predict(["", long], classifier_dir, count_tokens=True)
    assert counted["n_tokens"].tolist() == [2, 3602] and counted["label"][1] == frame["label"][2]
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
    import nbutils.inference.predict  # the module's name differs from the function's: no rebinding

    assert callable(nbutils.predict) and nbutils.predict is not nbutils.inference.predict

    assert nbutils.predict(["体育"], classifier_dir)["label"].tolist() == predict(["体育"], classifier_dir)["label"].tolist()


def test_cpu_prediction_stays_fp32(classifier_dir, monkeypatch):
    # training autocasts to bf16 on a CPU with native bf16; prediction keeps the fp32 weights
    import nbutils.runtime.device

    monkeypatch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: True)
    assert choose_device("cpu").precision == "bf16"
    predictor = Predictor(classifier_dir, device="cpu")
    assert predictor.choice.precision == "fp32"
    assert next(predictor.model.parameters()).dtype == torch.float32


def test_chunked_prediction_gives_the_labels_of_the_all_at_once_path(classifier_dir, monkeypatch):
    """Long texts are predicted in chunks (bounded memory), each cut from windows at its kept ends;
    labels, n_tokens and truncated equal the old path's: every text tokenized whole, cut, and all
    batches formed from one length sort (n_tokens is left empty for texts cut from windows)."""
    import random

    from nbutils.text import tokenization

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
    counted = frame["n_tokens"]
    assert all(pd.isna(n) or n == len(ids) for n, ids in zip(counted, full, strict=True))
    assert all(len(ids) > 64 for n, ids in zip(counted, full, strict=True) if pd.isna(n))
    assert 0 < counted.isna().sum() < (pd.Series([len(ids) for ids in full]) > 64).sum() + 1
    assert frame["truncated"].tolist() == [len(ids) > 64 for ids in full]
    assert frame["text"].tolist() == texts
    assert len(chunks) == 18
    monkeypatch.undo()
    whole = predictor(texts, batch_size=16, max_length=64, truncation="head+tail", count_tokens=True)
    assert whole["n_tokens"].tolist() == [len(ids) for ids in full]
    assert whole["label"].tolist() == frame["label"].tolist()


def _long_texts(n: int, seed: int = 1) -> list[str]:
    """Texts of 1 to ~1,200 characters (most cut at max_length 64), a few empty or blank."""
    import random

    rng = random.Random(seed)
    texts = ["".join(rng.choice(TITLES) for _ in range(rng.randrange(1, 60))) for _ in range(n)]
    texts[3], texts[17] = "", "   "
    return texts


def test_iter_chunks_forms_the_chunks_char_chunks_forms():
    import random

    from nbutils.text.tokenization import char_chunks, iter_chunks

    rng = random.Random(0)
    for _ in range(50):
        texts = ["x" * rng.randrange(0, 40) for _ in range(rng.randrange(0, 60))]
        max_texts, max_chars = rng.randrange(1, 9), rng.randrange(1, 120)
        expected = [texts[a:b] for a, b in char_chunks(texts, max_texts, max_chars)]
        assert list(iter_chunks(iter(texts), max_texts, max_chars)) == expected


@pytest.mark.parametrize("count_tokens", [False, True])
def test_streamed_file_prediction_equals_the_in_memory_path(classifier_dir, tmp_path, count_tokens):
    """The file path (read, predicted and written a chunk at a time) gives the labels
    of the in-memory path and of all texts tokenized whole, cut and batched from one length sort,
    for chunks that end inside a batch (7, 20, 33 texts with batches of 16), a character limit,
    and the default chunks (then the CSV is byte for byte the in-memory table's). By default a
    long text's n_tokens is an empty field; with count_tokens every count is written."""
    from nbutils.data.dataset import text_lines
    from nbutils.inference.predict import write_predictions

    texts = _long_texts(90)
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    predictor = Predictor(classifier_dir, device="cpu")
    cut = predictor.truncator(64, "head+tail")
    full = predictor.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    reference = [LABELS[i] for i in predictor.logits([cut.cut(ids) for ids in full], batch_size=16).argmax(-1)]
    in_memory = predictor(texts, batch_size=16, max_length=64, truncation="head+tail", count_tokens=count_tokens)
    assert in_memory["label"].tolist() == reference
    assert in_memory["truncated"].tolist() == [len(ids) > 64 for ids in full]
    for i, chunking in enumerate([{"max_texts": 7}, {"max_texts": 20}, {"max_texts": 33}, {"max_chars": 2000}, {}]):
        out = tmp_path / f"out{i}.csv"
        frames = predictor.frames(text_lines(src), batch_size=16, max_length=64, truncation="head+tail",
                                  count_tokens=count_tokens, **chunking)
        assert write_predictions(frames, out) == len(texts)
        streamed = pd.read_csv(out, keep_default_na=False)
        assert streamed["label"].tolist() == reference, chunking
        assert streamed["text"].tolist() == texts
        written = streamed["n_tokens"].astype(str).tolist()
        if count_tokens:
            assert written == [str(len(ids)) for ids in full]
        else:  # a count, or empty for a text cut from its windows (always a cut one)
            assert all(w in ("", str(len(ids))) and (w or len(ids) > 64) for w, ids in zip(written, full, strict=True))
            assert "" in written
        assert streamed["truncated"].tolist() == in_memory["truncated"].tolist()
        assert streamed["empty"].tolist() == [not t.strip() for t in texts]
        probs = [f"prob_{n}" for n in LABELS]
        np.testing.assert_allclose(streamed[probs].to_numpy(), in_memory[probs].to_numpy(), atol=1e-6)
    assert out.read_text(encoding="utf-8") == in_memory.to_csv(index=False, lineterminator="\n")


def test_cli_json_counts_tokens_only_when_asked(classifier_dir, capsys):
    long = "新华社消息，" * 600
    assert main(["--model", str(classifier_dir), "--json", "--max-length", "64", long]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["n_tokens"] is None and row["truncated"] is True
    assert main(["--model", str(classifier_dir), "--json", "--max-length", "64", "--count-tokens", long]) == 0
    counted = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counted["n_tokens"] == 3602 and counted["truncated"] is True and counted["label"] == row["label"]


def test_a_file_is_read_a_chunk_at_a_time(classifier_dir):
    """Memory is bounded by the chunk: the next texts are read only when the next table is asked for."""
    pulled = []

    def lines():
        for text in _long_texts(50):
            pulled.append(text)
            yield text

    frames = Predictor(classifier_dir, device="cpu").frames(lines(), batch_size=4, max_texts=8)
    first = next(frames)
    assert len(first) == 8 and len(pulled) <= 9  # the chunk, plus the text that closed it
    assert sum(len(f) for f in frames) == 42 and len(pulled) == 50


def test_streamed_output_is_all_or_nothing(classifier_dir, tmp_path):
    """A bad line, an error or Ctrl-C after chunks were written leaves no output and no temporary
    file, and an earlier output as it was; the bad line is named by file and line."""
    from nbutils.core.errors import DataError
    from nbutils.data.dataset import text_lines
    from nbutils.inference.predict import predict_file, write_predictions

    src = tmp_path / "in.txt"
    src.write_bytes(("\n".join(TITLES * 5) + "\n").encode("utf-8") + "坏行\n".encode("gbk") + "体育\n".encode())
    out = tmp_path / "out.csv"
    predictor = Predictor(classifier_dir, device="cpu")
    with pytest.raises(DataError, match=r"in.txt:36: undecodable bytes \(not UTF-8\)"):
        write_predictions(predictor.frames(text_lines(src), max_texts=4), out)
    assert list(tmp_path.iterdir()) == [src]
    out.write_text("an earlier result\n", encoding="utf-8")
    with pytest.raises(DataError, match="in.txt:36"):
        main(["--model", str(classifier_dir), "--file", str(src), "--output", str(out), "--overwrite"])

    def interrupted():
        frames = predictor.frames(TITLES * 5, max_texts=4)
        yield next(frames)
        yield next(frames)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_predictions(interrupted(), out, overwrite=True)
    assert sorted(tmp_path.iterdir()) == [src, out] and out.read_text(encoding="utf-8") == "an earlier result\n"
    with pytest.raises(NbutilsError, match="already exists"):
        predict_file(src, classifier_dir, out)
    good = tmp_path / "good.txt"
    good.write_text("\n".join(TITLES) + "\n", encoding="utf-8")
    assert predict_file(good, classifier_dir, out, overwrite=True) == len(TITLES)
    assert pd.read_csv(out)["text"].tolist() == TITLES
