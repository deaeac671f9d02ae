"""Multi-label fine-tuning and prediction: thresholds chosen on dev (checked against
scikit-learn's F1 at every grid point), metrics against scikit-learn, a tiny BERT fine-tuned with
a sigmoid/BCE head on the committed multi-label fixture, and what prediction (PyTorch and ONNX)
returns from the saved thresholds. Plumbing on a tiny random model, not accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.data.dataset import load_dataset
from nbutils.inference.predict import (
    decision_thresholds,
    prediction_frame,
    sigmoid,
    threshold_vector,
)
from nbutils.training.finetune import FinetuneConfig, finetune
from nbutils.training.metrics import (
    THRESHOLD_GRID,
    choose_thresholds,
    metrics_summary,
    multilabel_metrics,
)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "multilabel-mini"
NAMES = ["a", "b", "c"]


def _scored(seed: int, n: int = 200):
    rng = np.random.default_rng(seed)
    true = (rng.random((n, 3)) < [0.5, 0.3, 0.1]).astype(int)
    scores = np.clip(0.35 * true + rng.random((n, 3)) * 0.7, 0, 1)
    return true, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_thresholds_are_the_best_on_the_grid_by_scikit_learn(seed):
    true, scores = _scored(seed)
    chosen = choose_thresholds(true, scores, NAMES)
    micro = [f1_score(true, scores >= t, average="micro", zero_division=0) for t in THRESHOLD_GRID]
    assert f1_score(true, scores >= chosen["global"], average="micro") == pytest.approx(max(micro))
    for j, name in enumerate(NAMES):
        per = [f1_score(true[:, j], scores[:, j] >= t, zero_division=0) for t in THRESHOLD_GRID]
        assert f1_score(true[:, j], scores[:, j] >= chosen["per_label"][name]) == pytest.approx(max(per))
    # per-label thresholds are at least as good as the global one on the data they were chosen on
    per_label = scores >= threshold_vector(chosen, "per_label", NAMES)
    assert f1_score(true, per_label, average="macro") >= f1_score(true, scores >= chosen["global"], average="macro")


def test_a_label_without_dev_positives_keeps_the_global_threshold():
    true, scores = _scored(0)
    true[:, 2] = 0
    chosen = choose_thresholds(true, scores, NAMES)
    assert chosen["per_label"]["c"] == chosen["global"]


def test_multilabel_metrics_match_scikit_learn_and_count_the_confusions():
    true, scores = _scored(3)
    pred = (scores >= 0.5).astype(int)
    m = multilabel_metrics(true, pred, NAMES)
    assert m["subset_accuracy"] == m["accuracy"] == pytest.approx(float((true == pred).all(axis=1).mean()))
    for avg in ("micro", "macro", "samples"):
        assert m[f"{avg}_f1"] == pytest.approx(f1_score(true, pred, average=avg, zero_division=0))
    confusion = np.array(m["confusion_matrix"])
    assert confusion.diagonal().tolist() == [int(((true == 1) & (pred == 1))[:, j].sum()) for j in range(3)]
    assert [m["per_class"][n]["support"] for n in NAMES] == true.sum(axis=0).tolist()
    with pytest.raises(NbutilsError, match="other than 0 and 1"):
        multilabel_metrics(true, scores, NAMES)


def test_prediction_frame_gives_the_labels_at_or_above_their_threshold():
    logits = np.array([[2.0, -1.0, 0.1], [-3.0, -2.0, -4.0]])
    frame = prediction_frame(["x", "y"], logits, NAMES, labels=[[1, 0, 1], [0, 0, 0]],
                             thresholds=[0.5, 0.5, 0.52])
    scores = sigmoid(logits)
    assert frame["pred"].tolist() == ["a|c", ""] and frame["label"].tolist() == ["a|c", ""]
    assert json.loads(frame["scores"][0]) == {"a": round(scores[0, 0], 4), "c": round(scores[0, 2], 4)}
    assert frame["n_labels"].tolist() == [2, 0]
    assert frame[[f"prob_{n}" for n in NAMES]].to_numpy() == pytest.approx(scores)
    higher = prediction_frame(["x"], logits[:1], NAMES, thresholds=[0.5, 0.5, 0.53])
    assert higher["pred"].tolist() == ["a"]  # sigmoid(0.1) = 0.525


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vocab_dir):
    root = tmp_path_factory.mktemp("ml")
    model = make_random_bert(vocab_dir / "vocab.txt", root / "tiny", hidden_size=32, num_layers=2,
                             num_heads=2, intermediate_size=64)
    ds = load_dataset(FIXTURE, label_delimiter="|")
    config = FinetuneConfig(max_length=32, epochs=1, batch_size=16, learning_rate=2e-3, max_steps=6,
                            early_stopping_patience=0, seed=3, device="cpu", threshold_rule="global")
    result = finetune(ds, model, root / "ft", config)
    return ds, result


def test_finetune_trains_a_sigmoid_head_and_saves_the_dev_thresholds(trained):
    ds, result = trained
    model_dir = result.model_dir
    assert json.loads((model_dir / "config.json").read_text())["problem_type"] == "multi_label_classification"
    saved = json.loads((model_dir / "finetune_config.json").read_text())["multi_label"]
    assert saved["threshold_rule"] == "global" and set(saved["thresholds"]["per_label"]) == set(ds.label_names)
    metrics = result.metrics
    assert metrics["multi_label"]["thresholds"] == saved["thresholds"]
    assert metrics["test"]["multi_label"] and set(metrics["test"]["by_threshold_rule"]) == {"per_label", "global", "fixed"}
    assert "subset accuracy" in metrics_summary(metrics)
    # test_predictions.csv: its labels and decisions give back the test metrics
    preds = pd.read_csv(result.out_dir / "test_predictions.csv", keep_default_na=False)
    assert preds["label"].tolist() == ["|".join(s) for s in ds.label_sets("test")]
    probs = preds[[f"prob_{n}" for n in ds.label_names]].to_numpy()
    decided = probs >= saved["thresholds"]["global"]
    assert preds["pred"].map(lambda p: set(filter(None, p.split("|")))).tolist() == [
        {ds.label_names[j] for j in np.flatnonzero(row)} for row in decided]
    expected = f1_score(ds.label_matrix("test"), decided, average="micro", zero_division=0)
    assert metrics["test"]["micro_f1"] == pytest.approx(expected)


def test_predict_and_onnx_return_the_same_labels_from_the_saved_thresholds(trained, tmp_path):
    from nbutils.inference.onnx_export import export_onnx
    from nbutils.inference.predict import predict

    ds, result = trained
    texts = ds.texts("test")[:12] + [""]
    table = predict(texts, result.model_dir, device="cpu")
    probs = table[[f"prob_{n}" for n in ds.label_names]].to_numpy()
    saved = json.loads((result.model_dir / "finetune_config.json").read_text())["multi_label"]
    above = probs >= saved["thresholds"]["global"]
    assert table["n_labels"].tolist() == above.sum(axis=1).tolist()
    assert all(set(json.loads(s)) == {ds.label_names[j] for j in np.flatnonzero(row)}
               for s, row in zip(table["scores"], above, strict=True))
    export_onnx(result.model_dir, tmp_path / "onnx", int8=False)
    onnx = predict(texts, tmp_path / "onnx", backend="onnx")
    assert onnx[[f"prob_{n}" for n in ds.label_names]].to_numpy() == pytest.approx(probs, abs=1e-4)
    assert (onnx["label"] == table["label"]).mean() >= 0.9  # a score at a threshold may flip by 1e-6


def test_single_label_models_keep_the_argmax_and_their_files(tmp_path):
    class Config:
        problem_type = None

    assert decision_thresholds(Config(), {}, NAMES) is None
    frame = prediction_frame(["x"], [[1.0, 2.0, 0.0]], NAMES)
    assert "scores" not in frame.columns and frame["pred"].tolist() == ["b"]


def test_label_smoothing_is_refused_for_multi_label_data(trained, vocab_dir, tmp_path):
    ds, result = trained
    config = FinetuneConfig(max_length=16, max_steps=1, device="cpu",
                            extra_training_args={"label_smoothing_factor": 0.1})
    with pytest.raises(NbutilsError, match="label smoothing") as err:
        finetune(ds, result.model_dir, tmp_path / "x", config)
    assert "finetune_label_smoothing" in err.value.fix


def test_baseline_is_one_svm_per_label_as_scikit_learn_builds_it():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import LinearSVC

    from nbutils.training.baseline import BaselineConfig, run_baseline

    ds = load_dataset(FIXTURE, label_delimiter="|")
    train, test = ds.label_matrix("train"), ds.label_matrix("test")
    result = run_baseline(ds.texts("train"), train.tolist(), ds.texts("test"), test.tolist(), ds.label_names)
    config = BaselineConfig()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    svm = OneVsRestClassifier(LinearSVC(C=config.C, random_state=config.seed))
    svm.fit(vectorizer.fit_transform(ds.texts("train")), train)
    expected = svm.predict(vectorizer.transform(ds.texts("test")))
    assert result["test"]["multi_label"]
    assert result["test"]["micro_f1"] == pytest.approx(f1_score(test, expected, average="micro"))
    assert result["test_pred"] == ["|".join(ds.label_names[j] for j in np.flatnonzero(row)) for row in expected]
    # each label's words are in its headlines: a bag of characters finds most of them
    assert result["test"]["micro_f1"] > 0.6
