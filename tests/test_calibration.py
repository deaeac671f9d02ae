"""Calibration: the expected calibration error against an independent computation (scikit-learn's
calibration_curve), temperature scaling on dev, and the temperature applied by predict."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.inference.predict import load_temperature, predict
from nbutils.training.metrics import (
    expected_calibration_error,
    reliability_bins,
    temperature_scaling,
)


def _overconfident(n: int, classes: int = 5, scale: float = 4.0, seed: int = 0):
    """Logits whose softmax is sure of itself far more often than it is right."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1, (n, classes))
    logits[np.arange(n), labels] += 1.0  # some signal: right ~half the time
    return logits * scale, labels


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_ece_equals_an_independent_computation_with_scikit_learn():
    logits, labels = _overconfident(3000, scale=1.5)
    probs = _softmax(logits)
    confidence, correct = probs.max(1), (probs.argmax(1) == labels).astype(int)
    for n_bins in (1, 10, 15):
        # calibration_curve: per non-empty uniform bin, the accuracy and the mean confidence
        accuracy, mean_conf = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform")
        counts = np.histogram(confidence, bins=np.linspace(0, 1, n_bins + 1))[0]
        counts = counts[counts > 0]
        expected = float((counts * np.abs(accuracy - mean_conf)).sum() / counts.sum())
        assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(expected, abs=1e-12)
    bins = reliability_bins(probs, labels, 15)
    assert sum(b["count"] for b in bins) == len(labels)
    assert all((b["accuracy"] is None) == (b["count"] == 0) for b in bins)


def test_ece_of_perfect_and_of_always_wrong_confidence():
    labels = np.array([0, 1, 2, 0])
    assert expected_calibration_error(np.eye(3)[labels], labels) == 0.0
    assert expected_calibration_error(np.eye(3)[(labels + 1) % 3], labels) == 1.0
    with pytest.raises(NbutilsError, match="probabilities"):
        expected_calibration_error(np.ones(4), labels)


def test_temperature_fitted_on_dev_lowers_test_ece_and_keeps_every_label():
    dev_logits, dev_labels = _overconfident(2000, seed=1)
    test_logits, test_labels = _overconfident(2000, seed=2)
    cal = temperature_scaling(dev_logits, dev_labels, test_logits, test_labels)
    assert cal["temperature"] > 2  # overconfident logits: T > 1 softens them
    assert cal["test"]["ece_after"] < cal["test"]["ece_before"] / 2
    assert cal["test"]["nll_after"] < cal["test"]["nll_before"]
    assert (_softmax(test_logits / cal["temperature"]).argmax(1) == test_logits.argmax(1)).all()
    # only dev decides T: other test data, same T
    other = temperature_scaling(dev_logits, dev_labels, *_overconfident(500, seed=3))
    assert other["temperature"] == cal["temperature"]
    json.dumps(cal, allow_nan=False)  # empty bins are None, not NaN: valid JSON


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, vocab_dir):
    return make_random_classifier(vocab_dir / "vocab.txt", ["a", "b", "c"], tmp_path_factory.mktemp("m"),
                                  hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, head_std=2.0,
                                  prediction_max_length=32)


def test_predict_divides_the_logits_by_the_saved_temperature(classifier_dir, tmp_path):
    import shutil

    texts = ["中华女子学院：本科层次仅1专业招男生", "卡佩罗：告诉你德国脚生猛的原因", "体育"]
    plain = predict(texts, classifier_dir)
    calibrated_dir = tmp_path / "calibrated"
    shutil.copytree(classifier_dir, calibrated_dir)
    write_json(calibrated_dir / "calibration.json", {"temperature": 3.0})
    assert load_temperature(calibrated_dir) == 3.0 and load_temperature(classifier_dir) == 1.0
    scaled = predict(texts, calibrated_dir)
    columns = ["prob_a", "prob_b", "prob_c"]
    logits = np.log(plain[columns].to_numpy())  # log-softmax = logits up to a constant per row
    assert scaled[columns].to_numpy() == pytest.approx(_softmax(logits / 3.0), abs=1e-6)
    assert scaled["label"].tolist() == plain["label"].tolist()
    assert (scaled["confidence"] < plain["confidence"]).all()

    for bad, why in (('{"temp": 2}', "no readable temperature"), ('{"temperature": -1}', "not a positive")):
        (calibrated_dir / "calibration.json").write_text(bad)
        with pytest.raises(NbutilsError, match=why) as err:
            load_temperature(calibrated_dir)
        assert "calibration.json" in str(err.value)
    assert isinstance(plain, pd.DataFrame)


def test_table_line_and_diagram_of_a_calibration():
    import matplotlib

    matplotlib.use("Agg")
    cal = temperature_scaling(*_overconfident(800, seed=4), *_overconfident(600, seed=5))
    from nbutils.explain.calibration import calibration_line, calibration_table, reliability_diagram

    table = calibration_table(cal)
    assert table.index.tolist() == ["dev", "test"] and table.loc["test", "examples"] == 600
    assert table.loc["test", "ece_after"] == cal["test"]["ece_after"]
    assert f"{cal['test']['ece_after']:.2%}" in calibration_line(cal)
    fig = reliability_diagram(cal)
    assert len(fig.axes) == 2 and "ECE" in fig.axes[1].get_title()
    with pytest.raises(NbutilsError, match="no calibration"):
        calibration_table(None)
    with pytest.raises(NbutilsError, match="multi-label"):
        calibration_line({"skipped": "temperature scaling is not yet done for multi-label models"})
