"""Choosing the inference backend: the probe, the rule, the cache, and ``auto`` end to end
through Predictor, predict_file and the CLI (the choice and why stored beside the predictions)."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.inference import backends
from nbutils.inference.predict import Predictor, main, predict_file

LABELS = ["体育", "财经", "科技"]
TITLES = ["中华女子学院：本科层次仅1专业招男生", "两天价网站背后重重迷雾：做个网站究竟要多少钱",
          "东5环海棠公社230-290平2居准现房98折优惠", "卡佩罗：告诉你德国脚生猛的原因 不希望英德战踢点球",
          "82岁老太为学生做饭扫地44年获授荣誉", "体育", "记者回访地震中可乐男孩：将受邀赴美国参观"] * 3


@pytest.fixture(scope="module")
def clf(tmp_path_factory, vocab_dir):
    root = tmp_path_factory.mktemp("backends")
    base = make_random_bert(vocab_dir / "vocab.txt", root / "base", hidden_size=32, num_layers=2,
                            num_heads=2, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    with torch.no_grad():
        model.classifier.weight.normal_(0, 2.0)
    model.save_pretrained(root / "clf")
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(root / "clf")
    write_json(root / "clf" / "finetune_config.json", {"max_length": 64, "truncation": "head", "head_tokens": 0})
    return root / "clf"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NBUTILS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_names_aliases_and_a_clear_error():
    assert backends.normalize("torch") == "torch-fp32" and backends.normalize(None) == "auto"
    assert backends.normalize(" ONNX-int8 ") == "onnx-int8"
    with pytest.raises(NbutilsError, match="unknown backend 'tensorrt'") as err:
        backends.normalize("tensorrt")
    assert "--backend" in err.value.fix and "torch-bf16" in err.value.fix


def result(speed, agreement=1.0, texts=64):
    return {"texts_per_s": speed, "agreement": agreement, "texts": texts}


def test_the_rule_fastest_exact_enough_with_a_margin_over_the_reference():
    ref = "torch-fp32"
    assert backends.choose({ref: result(10), "torch-bf16": result(30)})[0] == "torch-bf16"
    # faster but below the agreement bar: excluded, and the reason names it
    best, why = backends.choose({ref: result(10), "torch-bf16": result(30), "onnx-int8": result(50, 0.98)})
    assert best == "torch-bf16" and "excluded onnx-int8" in why and "98.0%" in why
    # a probe without a flip can still fail on the estimate
    slow_ok = {ref: result(10), "onnx-int8": {**result(50), "estimated_agreement": 0.99}}
    assert backends.choose(slow_ok)[0] == ref
    # a gain within timing noise does not trade exactness for nothing
    assert backends.choose({ref: result(10), "onnx": result(10 * backends.MIN_GAIN * 0.99)})[0] == ref
    # a candidate that failed is reported, not chosen
    best, why = backends.choose({ref: result(10), "onnx": {"error": "RuntimeError: boom"}})
    assert best == ref and "failed onnx (RuntimeError: boom)" in why
    with pytest.raises(NbutilsError, match="reference backend torch-fp32 could not run"):
        backends.choose({ref: {"error": "x"}, "onnx": result(5)})


def test_probe_times_and_checks_labels_against_the_reference():
    def make(delay, flip=False):
        def run(rows):
            time.sleep(delay * len(rows))
            logits = np.array([[len(r) % 3 == k for k in range(3)] for r in rows], dtype=float)
            return logits[:, ::-1] if flip else logits

        return run

    def broken(rows):
        raise RuntimeError("no kernel")

    ids = [[1] * (n % 7 + 2) for n in range(40)]
    out = backends.probe({"ref": make(0.002), "fast": make(0.0005), "wrong": make(0.0005, flip=True),
                          "broken": broken}, ids, seconds=2.0, max_texts=32)
    assert list(out) == ["ref", "fast", "wrong", "broken"]
    assert out["fast"]["texts_per_s"] > 2 * out["ref"]["texts_per_s"]
    assert out["ref"]["agreement"] == 1.0 and out["fast"]["agreement"] == 1.0
    assert out["wrong"]["agreement"] < 1.0 and "no kernel" in out["broken"]["error"]
    assert 4 <= out["ref"]["texts"] <= 32
    # a slow reference shrinks the probe to stay near the time asked for
    slow = backends.probe({"ref": make(0.05), "other": make(0.05)}, ids, seconds=0.5, max_texts=32)
    assert slow["ref"]["texts"] < 32


def test_a_slow_model_s_probe_stays_within_its_budget_first_calls_included():
    calls = []

    def slow(rows):  # 0.1 s a text: a bert-base on 512-token texts, scaled down
        calls.append(len(rows))
        time.sleep(0.1 * len(rows))
        return np.ones((len(rows), 2))

    start = time.perf_counter()
    out = backends.probe({"ref": slow, "other": slow}, [[1, 2]] * 64, seconds=1.0, max_texts=64)
    took = time.perf_counter() - start
    assert took < 1.5, took  # the old minimum of 8 texts x 3 rounds x 2 candidates took 5 s
    assert 1 <= out["ref"]["texts"] <= 4 and calls[:2] == [1, 1]
    assert backends.probe_size(10.0, 0.01, 64) == (64, backends.PROBE_ROUNDS)  # fast: all texts, 3 rounds
    assert backends.probe_size(1.0, 0.1, 64) == (10, 1)  # slow: one round of what fits
    assert backends.probe_size(0.0, 0.1, 64) == (1, 1)  # over budget already: still one text


def test_the_re_check_of_a_winner_takes_what_its_speed_allows():
    results = {"torch-fp32": result(2, texts=2), "torch-bf16": result(8, texts=2)}
    # 1/2 + 1/8 s a text for both: 8 of the 64 first texts fit in 5 s
    assert backends.verify_size(results, "torch-bf16", "torch-fp32", 5.0, 64) == 8
    assert backends.verify_size(results, "torch-bf16", "torch-fp32", 0.1, 64) == 2  # never fewer than probed
    assert backends.verify_size({"torch-fp32": result(1000), "onnx": result(2000)}, "onnx", "torch-fp32",
                                5.0, 64) == 64


def test_estimated_agreement_tracks_the_flip_rate_and_sees_rare_flips_on_few_texts():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 2, (4000, 10))
    candidate = reference + rng.normal(0, 0.03, reference.shape)
    actual = (candidate.argmax(1) == reference.argmax(1)).mean()
    assert 0.97 < actual < 0.995  # a backend that flips about 1% of labels
    assert backends.estimated_agreement(reference, candidate) == pytest.approx(actual, abs=0.004)
    assert backends.estimated_agreement(reference, reference) == 1.0
    # on 64-text probes, counting flips often sees none; the estimate is below the bar far more often
    counted = estimated = 0
    for start in range(0, 4000, 64):
        ref, cand = reference[start:start + 64], candidate[start:start + 64]
        counted += (cand.argmax(1) == ref.argmax(1)).mean() < backends.AGREEMENT_BAR
        estimated += backends.estimated_agreement(ref, cand) < backends.AGREEMENT_BAR
    assert estimated > counted and estimated >= 0.8 * (4000 // 64)


def test_a_winner_timed_on_few_texts_is_checked_on_the_whole_first_batch():
    def ref(rows):
        return np.array([[1.0, 0.0] for _ in rows])

    def late_flip(rows):  # agrees on the first 8 texts, flips one of the next
        return np.array([[0.0, 1.0] if i == 20 else [1.0, 0.0] for i, _ in enumerate(rows)])

    ids = [[1, 2]] * 64
    results = {"torch-fp32": result(10, texts=8), "onnx-int8": result(40, texts=8)}
    assert backends.choose(results)[0] == "onnx-int8"
    backends.verify(results, "onnx-int8", {"torch-fp32": ref, "onnx-int8": late_flip}, ids)
    assert results["onnx-int8"]["verified_on"] == 64 and results["onnx-int8"]["agreement"] == 63 / 64
    best, why = backends.choose(results)
    assert best == "torch-fp32" and "excluded onnx-int8" in why


def test_cache_round_trip_and_a_damaged_cache_is_ignored(clf, own_cache):
    key = backends.decision_key(clf, "CPU", 1, ["torch-fp32", "torch-bf16"], [12, 14])
    assert key["length"] == "short" and key["model"] == backends.model_hash(clf)
    assert backends.cached_decision(key) is None
    backends.store_decision(backends.Decision("torch-bf16", "faster", probe={"torch-bf16": result(3)}, key=key))
    found = backends.cached_decision(key)
    assert found.backend == "torch-bf16" and found.cached and found.probe["torch-bf16"]["texts_per_s"] == 3
    other = backends.decision_key(clf, "CPU", 2, ["torch-fp32", "torch-bf16"], [12, 14])
    assert backends.cached_decision(other) is None  # another thread count decides anew
    (own_cache / backends.CACHE_FILE).write_text("{not json", encoding="utf-8")
    assert backends.cached_decision(key) is None
    backends.store_decision(backends.Decision("torch-fp32", "x", key=key))  # rewrites the damaged file
    assert backends.cached_decision(key).backend == "torch-fp32"
    assert backends.length_class([500] * 3) == "long" and backends.length_class([100]) == "medium"


def test_model_hash_follows_the_weights_not_the_path(clf, tmp_path):
    import shutil

    copy = shutil.copytree(clf, tmp_path / "copy")
    assert backends.model_hash(copy) == backends.model_hash(clf)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(copy)
    with torch.no_grad():
        model.classifier.bias.add_(1.0)
    model.save_pretrained(copy)
    assert backends.model_hash(copy) != backends.model_hash(clf)


def test_auto_probes_once_then_uses_the_cache(clf, monkeypatch, capsys):
    first = Predictor(clf, "cpu")
    assert first.backend == "auto" and first.decision is None
    frame = first(TITLES)
    decision = first.decision
    assert decision.backend in decision.probe and not decision.cached
    assert frame.attrs["backend"]["backend"] == decision.backend
    assert set(decision.probe) >= {"torch-fp32"}
    assert "onnx" in decision.reason and "export-onnx" in decision.reason  # why ONNX was not tried
    assert f"backend: {decision.backend}" in capsys.readouterr().err

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(backends, "probe", no_probe)
    second = Predictor(clf, "cpu")
    second(TITLES[:3])
    assert second.decision.cached and second.decision.backend == decision.backend


def test_auto_excludes_a_fast_backend_whose_labels_disagree(clf, monkeypatch):
    import nbutils.runtime.device

    monkeypatch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: True)
    real_engine = Predictor._engine

    def engine(self, name):
        forward = real_engine(self, "torch-fp32")
        if name != "torch-bf16":
            return forward
        return lambda ids, mask: -forward(ids, mask)  # instant-ish and wrong: labels flip

    monkeypatch.setattr(Predictor, "_engine", engine)
    predictor = Predictor(clf, "cpu")
    fp32 = Predictor(clf, "cpu", backend="torch-fp32")(TITLES)
    frame = predictor(TITLES)
    assert predictor.backend == "torch-fp32"
    assert "excluded torch-bf16" in predictor.decision.reason
    assert predictor.decision.probe["torch-bf16"]["agreement"] < backends.AGREEMENT_BAR
    assert frame["label"].tolist() == fp32["label"].tolist()


def test_torch_bf16_multiplies_in_bf16_where_native_and_is_refused_where_emulated(clf, monkeypatch):
    import nbutils.runtime.device

    monkeypatch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: True)
    bf16 = Predictor(clf, "cpu", backend="torch-bf16")
    assert bf16.decision.reason == "asked for"
    seen = []  # the dtype each Linear layer produces while the backend runs
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for m in bf16.model.modules() if isinstance(m, torch.nn.Linear)]
    a = bf16(TITLES)
    for hook in hooks:
        hook.remove()
    assert seen and set(seen) == {torch.bfloat16}
    assert next(bf16.model.parameters()).dtype == torch.float32  # the weights stay fp32 (autocast)
    fp32 = Predictor(clf, "cpu", backend="torch")
    b = fp32(TITLES)
    np.testing.assert_allclose(a["confidence"], b["confidence"], atol=0.05)  # close, not equal
    assert not np.array_equal(a["confidence"].to_numpy(), b["confidence"].to_numpy())
    monkeypatch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(NbutilsError, match="no native bf16") as err:
        Predictor(clf, "cpu", backend="torch-bf16")
    assert "--backend auto" in err.value.fix
    assert "torch-bf16 (this CPU has no native bf16" in Predictor(clf, "cpu")._candidates()[1][0]


def test_auto_tries_the_cached_onnx_export(clf, capsys):
    from nbutils.cli import main as cli_main

    with pytest.raises(NbutilsError, match="no ONNX export of it was found") as err:
        Predictor(clf, "cpu", backend="onnx")
    assert "nbutils export-onnx" in err.value.fix
    checks = clf.parent / "check.txt"
    checks.write_text("\n".join(TITLES), encoding="utf-8")
    assert cli_main(["export-onnx", str(clf), "--check-texts", str(checks)]) == 0  # no OUT: into the cache
    assert (backends.export_cache(clf) / "model.int8.onnx").is_file()
    assert "offered to --backend auto" in capsys.readouterr().out
    predictor = Predictor(clf, "cpu")
    candidates, skipped = predictor._candidates()
    assert candidates[0] == "torch-fp32" and candidates[-2:] == ["onnx", "onnx-int8"]
    assert not [s for s in skipped if "onnx" in s]
    predictor(TITLES)
    assert {"onnx", "onnx-int8"} <= set(predictor.decision.probe)
    onnx = Predictor(clf, "cpu", backend="onnx")(TITLES)  # explicit: the cached export, no OUT needed
    fp32 = Predictor(clf, "cpu", backend="torch-fp32")(TITLES)
    assert onnx["label"].tolist() == fp32["label"].tolist()


def test_predict_file_and_cli_store_the_choice_beside_the_predictions(clf, tmp_path, capsys):
    src = tmp_path / "in.txt"
    src.write_text("\n".join(TITLES) + "\n", encoding="utf-8")
    out = tmp_path / "preds.csv"
    assert predict_file(src, clf, out, device="cpu", backend="torch-fp32") == len(TITLES)
    stored = json.loads((tmp_path / "preds.backend.json").read_text(encoding="utf-8"))
    assert stored["backend"] == "torch-fp32" and stored["requested"] == "torch-fp32"
    assert stored["predictions"] == "preds.csv"
    # the CLI's auto: the decision with its probe; an earlier sidecar is never replaced silently
    cli_out = tmp_path / "cli.csv"
    assert main(["--model", str(clf), "--device", "cpu", "--output", str(cli_out), *TITLES]) == 0
    stored = json.loads((tmp_path / "cli.backend.json").read_text(encoding="utf-8"))
    assert stored["requested"] == "auto" and stored["backend"] in stored["probe"]
    assert "backend" in capsys.readouterr().out
    cli_out.unlink()
    with pytest.raises(NbutilsError, match="cli.backend.json already exists"):
        main(["--model", str(clf), "--output", str(cli_out), "体育"])
    assert not cli_out.exists()
    assert main(["--model", str(clf), "--output", str(cli_out), "--overwrite", "体育"]) == 0
    assert pd.read_csv(cli_out)["text"].tolist() == ["体育"]
