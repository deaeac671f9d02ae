"""Character attributions: occlusion equals captum's FeatureAblation, integrated gradients are
complete (they add up to the probability change), tokens map back to the right characters, the
cap and the multi-label refusal, the HTML/text views and `nbutils predict --explain`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.explain.attributions import _encode, char_scores, explain, to_html, to_text
from nbutils.inference.predict import load_predictor

TEXTS = ["国足世预赛客场战平对手", "央行宣布下调存款准备金率0.5个百分点", "iPhone 新款 发布"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, vocab_dir):
    out = make_random_classifier(vocab_dir / "vocab.txt", ["体育", "财经", "科技"], tmp_path_factory.mktemp("m"),
                                 hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, head_std=3.0,
                                 prediction_max_length=16)
    write_json(out / "calibration.json", {"temperature": 1.5})
    return out


def test_occlusion_equals_captum_feature_ablation(classifier_dir):
    from captum.attr import FeatureAblation

    predictor = load_predictor(str(classifier_dir), "auto", "torch")
    got = explain(TEXTS[:2], predictor=predictor, method="occlusion")
    model, pad = predictor.model, predictor.tokenizer.pad_token_id
    for text, attribution in zip(TEXTS[:2], got, strict=True):
        (enc,) = _encode(predictor, [text])
        ids = torch.tensor([enc.ids])

        def prob(input_ids):
            return torch.softmax(model(input_ids=input_ids).logits / 1.5, -1)

        target = predictor.label_names.index(attribution.label)
        mask = torch.arange(ids.shape[1]).unsqueeze(0)  # one feature per token
        token = FeatureAblation(prob).attribute(ids, baselines=pad, target=target, feature_mask=mask)[0]
        token[0] = token[-1] = 0  # [CLS] and [SEP] are never occluded
        expected = char_scores(text, enc, token.detach().numpy())
        assert attribution.scores == pytest.approx(expected, abs=1e-5)


def test_integrated_gradients_add_up_and_map_to_characters(classifier_dir):
    got = explain(TEXTS, classifier_dir, n_steps=64)
    for text, a in zip(TEXTS, got, strict=True):
        assert a.method == "integrated-gradients" and len(a.scores) == len(text)
        assert abs(a.delta) < 0.05 * max(1e-3, sum(abs(s) for s in a.scores))  # completeness
        assert a.runner_up != a.label and a.confidence >= a.runner_up_confidence
    # max_length 16: [CLS] + 14 tokens + [SEP]; the characters after the cut score 0
    long = got[1]
    assert long.truncated and all(s == 0 for s in long.scores[14:]) and any(long.scores[:14])
    # "iPhone" is several WordPiece tokens over 6 characters; spaces are never scored
    latin = got[2]
    assert latin.scores[6] == 0 and latin.scores[9] == 0 and all(latin.scores[:6])
    predicted = load_predictor(str(classifier_dir.resolve()), "auto", "torch")(TEXTS)
    assert [a.label for a in got] == predicted["label"].tolist()
    assert [a.confidence for a in got] == pytest.approx(predicted["confidence"].tolist(), abs=1e-5)


def test_cap_methods_and_multi_label_refusal(classifier_dir):
    with pytest.raises(NbutilsError, match="cap of 2") as err:
        explain(TEXTS, classifier_dir, max_texts=2)
    assert "--explain-max" in err.value.fix
    with pytest.raises(NbutilsError, match="unknown attribution method"):
        explain(TEXTS, classifier_dir, method="lime")
    attention = explain(TEXTS[:1], classifier_dir, method="attention")[0]
    assert all(s >= 0 for s in attention.scores) and sum(attention.scores) <= 1 + 1e-6
    predictor = load_predictor(str(classifier_dir.resolve()), "auto", "torch")  # the one the views load
    predictor.model.config.problem_type = "multi_label_classification"
    try:
        with pytest.raises(NbutilsError, match="not yet for multi-label"):
            explain(TEXTS, predictor=predictor)
        from nbutils.explain.display import explain_box, show_examples

        assert show_examples(TEXTS, classifier_dir) == []  # says so instead of failing the notebook
        assert explain_box(classifier_dir).children[0].placeholder  # the plain prediction box
    finally:
        predictor.model.config.problem_type = None


def test_views(classifier_dir):
    a = explain(["<b>国足</b>"], classifier_dir)[0]
    page = to_html(a)
    assert "<b>" not in page and "&lt;" in page and page.count("<span") == len(a.text) and a.runner_up in page
    lines = to_text(a, colour=True).splitlines()
    assert len(lines) == 2 and "\033[" in lines[0] and a.label in lines[1]


def test_cli_explain_text_and_json(classifier_dir, capsys):
    from nbutils.explain.attributions import predict_main

    assert predict_main(["--model", str(classifier_dir), "--explain", *TEXTS[:2]]) == 0
    out = capsys.readouterr().out
    assert TEXTS[0] in out and "top characters (integrated-gradients)" in out
    assert predict_main(["--model", str(classifier_dir), "--explain", "--json", TEXTS[0]]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["chars"] == list(TEXTS[0]) and len(row["scores"]) == len(TEXTS[0])
    assert np.isfinite(row["scores"]).all()
    with pytest.raises(NbutilsError, match="--explain"):
        predict_main(["--model", str(classifier_dir), "--explain", "--output", "x.csv", TEXTS[0]])


def test_page_views_of_examples_and_mistakes(classifier_dir):
    from nbutils.explain.display import attributions_html, explain_box, misclassified_html

    a = explain(TEXTS[:2], classifier_dir)
    page = attributions_html(a)
    assert page.count("runner-up") == 2 and page.startswith(f'<div style="margin:6px 0"><div style="font-size:0.85em;color:#555">{a[0].label} (')
    wrong = misclassified_html(TEXTS[:2], ["财经", a[1].label], classifier_dir)
    assert "true class <b>财经</b>" in wrong and wrong.count("<span title=") == sum(len(t) for t in TEXTS[:2])
    assert "differs from the run's" in wrong  # the second "mistake" is this model's own prediction
    box = explain_box(classifier_dir)
    box.children[0].value = TEXTS[0]  # what pressing Enter does
    assert box.children[1].outputs and a[0].label in box.children[1].outputs[0]["data"]["text/html"]


def test_comprehensiveness_compares_top_k_with_random_deletions(classifier_dir):
    from nbutils.explain.faithfulness import comprehensiveness, delete_chars, top_positions

    assert delete_chars("国足世预赛", [0, 3]) == "足世赛"
    assert top_positions([0.1, 0.5, 0.0, 0.5], "ab c", 2) == [1, 3]  # blanks never chosen
    predictor = load_predictor(str(classifier_dir), "auto", "torch")
    texts = ["国足世预赛客场战平对手", "央行宣布下调存款准备金", "新款旗舰手机发布搭载自研芯片"] * 4
    occlusion = explain(texts, predictor=predictor, method="occlusion")
    # an oracle: each character's score is the drop its own deletion causes
    oracle = []
    for a in occlusion:
        base = predictor([a.text])[f"prob_{a.label}"][0]
        drops = predictor([delete_chars(a.text, [i]) for i in range(len(a.text))])[f"prob_{a.label}"]
        oracle.append(type(a)(**{**a.__dict__, "scores": list(base - drops.to_numpy())}))
    best = comprehensiveness(predictor, oracle, 1)
    assert best.texts == 12 and best.drop_top >= best.drop_random and best.ratio >= 1
    worst = comprehensiveness(predictor, [type(a)(**{**a.__dict__, "scores": [-s for s in a.scores]})
                                          for a in oracle], 1)
    assert worst.drop_top <= best.drop_random
    with pytest.raises(NbutilsError, match="more than 40"):
        comprehensiveness(predictor, oracle, 40)


def test_faithfulness_line_reads_the_benchmark_result(tmp_path):
    from nbutils.explain.faithfulness import faithfulness_line

    assert faithfulness_line(tmp_path / "missing.json") is None
    rows = [{"method": m, "k": k, "ratio": r, "texts": 9, "drop_top": 0.0, "drop_random": 0.0}
            for m, r in (("integrated-gradients", 4.0), ("attention", 1.25)) for k in (1, 3)]
    write_json(tmp_path / "f.json", {"rows": rows, "test_texts": 1000, "command": "python b.py",
                                     "model": {"hidden_size": 128, "num_hidden_layers": 2}})
    line = faithfulness_line(tmp_path / "f.json")
    assert "deleting the 3 characters" in line and "integrated-gradients 4.0x" in line
    assert "attention 1.2x" in line and "1,000 test titles" in line and "python b.py" in line
