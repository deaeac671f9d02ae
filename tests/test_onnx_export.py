"""ONNX export: a tiny fine-tuned classifier round-trips through model.onnx / model.int8.onnx with
the same logits and labels as PyTorch, via the Python API and the CLI; bad inputs are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.cli import main as cli_main
from nbutils.core.errors import NbutilsError
from nbutils.inference.onnx_export import FP32_TOLERANCE, INT8_FILE, ONNX_FILE, export_onnx
from nbutils.inference.predict import OnnxPredictor, Predictor, predict

LABELS = ["体育", "财经", "科技"]
TITLES = [
    "中华女子学院：本科层次仅1专业招男生",
    "两天价网站背后重重迷雾：做个网站究竟要多少钱",
    "东5环海棠公社230-290平2居准现房98折优惠",
    "卡佩罗：告诉你德国脚生猛的原因 不希望英德战踢点球",
    "",
    "体育",
    "记者回访地震中可乐男孩：将受邀赴美国参观" * 10,  # longer than max_position_embeddings
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, vocab_dir):
    """A tiny random classifier folder shaped like finetune's output, and its ONNX export."""
    root = tmp_path_factory.mktemp("onnx")
    base = make_random_bert(vocab_dir / "vocab.txt", root / "base", hidden_size=32, num_layers=2,
                            num_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    with torch.no_grad():  # spread the logits so labels are not near-ties
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(root / "clf")
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(root / "clf")
    # as nbutils.training.finetune saves it (prediction refuses to guess the training max_length)
    (root / "clf" / "finetune_config.json").write_text(
        json.dumps({"max_length": 64, "truncation": "head", "head_tokens": 0}), encoding="utf-8")
    # as fine-tuning saves it: export copies it, both backends divide the logits by it
    (root / "clf" / "calibration.json").write_text(json.dumps({"temperature": 1.7}), encoding="utf-8")
    report = export_onnx(root / "clf", root / "export")
    return {"base": base, "clf": root / "clf", "export": root / "export", "report": report}


def test_export_writes_both_graphs_and_a_checked_report(tiny):
    export = tiny["export"]
    assert (export / ONNX_FILE).is_file() and (export / INT8_FILE).is_file()
    assert (export / INT8_FILE).stat().st_size < (export / ONNX_FILE).stat().st_size / 2
    report = json.loads((export / "onnx_export.json").read_text(encoding="utf-8"))
    assert report["max_abs_logit_diff"]["fp32"] <= FP32_TOLERANCE * max(1, report["max_abs_logit"])
    assert [2, 64] in report["checked_shapes"]  # a full-length batch was checked too
    assert not [p for p in export.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_onnx_logits_equal_pytorch_on_real_texts(tiny):
    torch_pred = Predictor(tiny["clf"], "cpu", backend="torch-fp32")
    onnx_pred = OnnxPredictor(tiny["export"], "onnx", threads=1)
    cut = torch_pred.truncator(None, None)
    ids = [cut.cut(x) for x in torch_pred.tokenizer(TITLES, add_special_tokens=True)["input_ids"]]
    assert max(map(len, ids)) == 64  # the over-long title was cut to the model's length
    expected = torch_pred.logits(ids, batch_size=3)
    np.testing.assert_allclose(onnx_pred.logits(ids, batch_size=3), expected, atol=FP32_TOLERANCE, rtol=0)
    int8 = OnnxPredictor(tiny["export"], "onnx-int8", threads=1).logits(ids, batch_size=3)
    assert np.abs(int8 - expected).max() < 0.2  # int8 is close, not equal


def test_predict_api_same_table_and_labels_for_every_backend(tiny):
    ours = predict(TITLES, tiny["clf"], device="cpu", backend="torch-fp32")
    for backend in ("onnx", "onnx-int8"):
        theirs = predict(TITLES, tiny["export"], backend=backend)
        assert list(theirs.columns) == list(ours.columns)
        assert theirs["text"].tolist() == ours["text"].tolist()
        assert theirs[["n_tokens", "truncated"]].equals(ours[["n_tokens", "truncated"]])
        if backend == "onnx":
            assert theirs["label"].tolist() == ours["label"].tolist()
            np.testing.assert_allclose(theirs["confidence"], ours["confidence"], atol=1e-5)


def test_cli_export_and_predict_with_onnx_backend(tiny, tmp_path, capsys):
    out = tmp_path / "cli-export"
    assert cli_main(["export-onnx", str(tiny["clf"]), str(out), "--no-int8"]) == 0
    assert (out / ONNX_FILE).is_file() and not (out / INT8_FILE).exists()
    capsys.readouterr()
    assert cli_main(["predict", "--backend", "onnx", "--model", str(out), *TITLES[:2]]) == 0
    printed = capsys.readouterr().out
    expected = predict(TITLES[:2], tiny["clf"], device="cpu", backend="torch-fp32")["label"].tolist()
    assert all(label in printed for label in expected)
    # int8 was not exported: a clear error, not a crash
    assert cli_main(["predict", "--backend", "onnx-int8", "--model", str(out), "体育"]) == 2
    assert "no model.int8.onnx" in capsys.readouterr().err


def test_export_refuses_missing_model_and_unfinetuned_model(tiny, tmp_path):
    with pytest.raises(NbutilsError, match="model folder not found"):
        export_onnx(tmp_path / "nope", tmp_path / "out")
    # a pre-trained/converted BERT has no classification head: exporting it would serve guesses
    with pytest.raises(NbutilsError, match="not a fine-tuned classifier"):
        export_onnx(tiny["base"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites_silently(tiny):
    before = (tiny["export"] / ONNX_FILE).stat().st_mtime_ns
    with pytest.raises(NbutilsError, match="already exists"):
        export_onnx(tiny["clf"], tiny["export"])
    assert (tiny["export"] / ONNX_FILE).stat().st_mtime_ns == before


def test_onnx_backend_errors_name_the_fix(tiny, tmp_path):
    with pytest.raises(NbutilsError, match="PyTorch model folder"):
        OnnxPredictor(tiny["clf"], "onnx")  # the fine-tuned folder, not its export
    with pytest.raises(NbutilsError, match="folder not found"):
        OnnxPredictor(tmp_path / "missing", "onnx")
    with pytest.raises(NbutilsError, match="unknown backend"):
        predict(["体育"], tiny["export"], backend="tensorrt")


def test_onnx_backends_are_calibrated_and_explained_by_occlusion(tiny, capsys):
    from nbutils.explain.attributions import explain

    assert json.loads((tiny["export"] / "calibration.json").read_text())["temperature"] == 1.7
    assert OnnxPredictor(tiny["export"], "onnx", threads=1).temperature == 1.7
    ours = explain(TITLES[:3], tiny["clf"], method="occlusion")
    theirs = explain(TITLES[:3], tiny["export"], backend="onnx")  # auto: occlusion, no gradients here
    for a, b in zip(ours, theirs, strict=True):
        assert b.method == "occlusion" and b.label == a.label
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-4)
    capsys.readouterr()
    assert cli_main(["predict", "--backend", "onnx", "--model", str(tiny["export"]), "--explain",
                     TITLES[0]]) == 0
    assert "top characters (occlusion)" in capsys.readouterr().out
    assert cli_main(["predict", "--backend", "onnx", "--model", str(tiny["export"]), "--explain",
                     "--explain-method", "integrated-gradients", TITLES[0]]) == 2
    assert "needs the PyTorch model" in capsys.readouterr().err
