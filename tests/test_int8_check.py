"""The int8 graph is offered to ``--backend auto`` only where its labels agree with the fp32 graph's
on real texts, checked at export: where the texts come from, what is recorded, and what ``auto``
then tries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.inference import backends, int8_check, onnx_files
from nbutils.inference.onnx_export import REPORT_FILE, _check_int8, describe_check, export_onnx
from nbutils.inference.predict import OnnxPredictor, Predictor

LABELS = ["体育", "财经", "科技"]
TITLES = ["中华女子学院：本科层次仅1专业招男生", "两天价网站背后重重迷雾：做个网站究竟要多少钱",
          "东5环海棠公社230-290平2居准现房98折优惠", "卡佩罗：告诉你德国脚生猛的原因 不希望英德战踢点球",
          "82岁老太为学生做饭扫地44年获授荣誉", "记者回访地震中可乐男孩：将受邀赴美国参观"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NBUTILS_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def run_model(tmp_path_factory, vocab_dir, titles_dir):
    """A tiny classifier inside a pipeline-run layout (runs/<run>/finetune/model + manifest.json)."""
    root = tmp_path_factory.mktemp("int8")
    clf = make_random_classifier(vocab_dir / "vocab.txt", LABELS, root / "made", hidden_size=32, num_layers=2,
                                 num_heads=2, intermediate_size=64, head_std=2.0, prediction_max_length=64)
    folder = root / "run" / "finetune" / "model"
    shutil.copytree(clf, folder)  # where a pipeline run keeps its fine-tuned model
    write_json(root / "run" / "manifest.json", {"parameters": {"data_dir": str(titles_dir), "data_format": "auto"}})
    return folder


@pytest.fixture(scope="module")
def exported(run_model):
    """The model exported once (the slow part: tracing the graph), int8 checked on the run's data."""
    return export_onnx(run_model, run_model.parent / "export", check_texts=None), run_model.parent / "export"


def _copy(exported, tmp_path):
    shutil.copytree(exported[1], tmp_path / "export")
    return tmp_path / "export"


def test_the_runs_dataset_checks_the_export_and_the_record_matches_a_recount(exported, titles_dir):
    report, export = exported
    check = report[int8_check.CHECK_KEY]
    assert check["texts"] == min(int8_check.CHECK_TEXTS, len(_dev_texts(titles_dir)))
    assert "dev split" in check["source"] and str(titles_dir) in check["source"]
    assert json.loads((export / REPORT_FILE).read_text())[int8_check.CHECK_KEY] == check
    assert "offered to --backend auto" in describe_check(check)
    # recount with the two predictors, as a user would
    texts = int8_check._spread(_dev_texts(titles_dir), int8_check.CHECK_TEXTS)
    fp32 = OnnxPredictor(export, "onnx")(texts)["label"]
    int8 = OnnxPredictor(export, "onnx-int8")(texts)["label"]
    assert check["agreement"] == pytest.approx(float((fp32 == int8).mean()))
    assert check["offered_to_auto"] == (min(check["agreement"], check["estimated_agreement"]) >= backends.AGREEMENT_BAR)


def _dev_texts(titles_dir):
    from nbutils.data.dataset import load_dataset

    return list(load_dataset(titles_dir).texts("dev"))


def test_texts_from_a_file_or_a_dataset_and_clear_errors(tmp_path, titles_dir):
    lines = tmp_path / "texts.txt"
    lines.write_text("一\n\n二\n三\n", encoding="utf-8")
    texts, source = int8_check.texts_from_path(lines)
    assert texts == ["一", "二", "三"] and "3 lines" in source
    assert int8_check.texts_from_path(lines, n=2)[0] == ["一", "二"]
    texts, source = int8_check.texts_from_path(titles_dir, n=50)
    assert len(texts) == 50 and "dev split" in source
    with pytest.raises(NbutilsError, match="not found") as err:
        int8_check.texts_from_path(tmp_path / "missing.txt")
    assert "--check-texts" in err.value.fix
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(NbutilsError, match="no texts"):
        int8_check.texts_from_path(tmp_path / "empty.txt")


def test_a_model_outside_a_run_is_exported_but_its_int8_not_offered(run_model, exported, tmp_path):
    alone = tmp_path / "alone"
    shutil.copytree(run_model, alone)
    assert int8_check.texts_from_run(alone) is None
    check = _check_int8(alone, exported[1], None)
    assert check["texts"] == 0 and not check["offered_to_auto"]
    said = describe_check(check)
    assert "not offered to --backend auto" in said and f"nbutils export-onnx {alone} --check-texts" in said
    # its cached export (as `nbutils export-onnx MODEL` writes it): auto leaves int8 out and says why
    cached = backends.export_cache(alone)
    shutil.copytree(exported[1], cached)
    report = json.loads((cached / REPORT_FILE).read_text())
    (cached / REPORT_FILE).write_text(json.dumps({**report, int8_check.CHECK_KEY: check}), encoding="utf-8")
    candidates, skipped = Predictor(alone, "cpu")._candidates()
    assert "onnx" in candidates and "onnx-int8" not in candidates
    assert any(s.startswith("onnx-int8 (its labels were not checked") and "--check-texts" in s for s in skipped)
    # asked for explicitly, it still runs
    assert len(Predictor(alone, "cpu", backend="onnx-int8")(TITLES)) == len(TITLES)


def test_an_int8_graph_below_the_bar_is_left_out_with_the_measured_agreement(exported, tmp_path):
    export = _copy(exported, tmp_path)
    report = json.loads((export / REPORT_FILE).read_text())
    report[int8_check.CHECK_KEY].update(agreement=0.97, estimated_agreement=0.96, offered_to_auto=False)
    (export / REPORT_FILE).write_text(json.dumps(report), encoding="utf-8")
    why = onnx_files.why_not_offered(export)
    assert "97.00%" in why and "99.5%" in why and "--backend onnx-int8" in why
    report.pop(int8_check.CHECK_KEY)  # an export from before the check existed
    (export / REPORT_FILE).write_text(json.dumps(report), encoding="utf-8")
    assert "never checked" in onnx_files.why_not_offered(export)


def test_a_flipped_label_counts_against_the_bar(monkeypatch, exported):
    export = exported[1]
    flipped = {"n": 0}
    real_logits = OnnxPredictor.logits

    def int8_flips_one(self, ids, batch_size):
        out = real_logits(self, ids, batch_size)
        if self.requested == "onnx-int8":  # one text's label moves to another class
            flipped["n"] += 1
            out = out.copy()
            out[0] = np.roll(out[0], 1)
        return out

    monkeypatch.setattr(OnnxPredictor, "logits", int8_flips_one)
    check = int8_check.int8_agreement(export, TITLES * 10, "test")
    assert flipped["n"] == 1 and check["texts"] == 60
    assert check["agreement"] == pytest.approx(59 / 60) and not check["offered_to_auto"]
