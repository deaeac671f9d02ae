"""Statistics of the exploration notebook, each on a small hand-made input with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nbutils.core.errors import NbutilsError
from nbutils.data import statistics as explore

NAMES = ["cats", "dogs"]


def make_frame(rows):
    """rows: (text, label id, split)"""
    return pd.DataFrame(rows, columns=["text", "label", "split"])


@pytest.fixture
def tiny_tokenizer(tmp_path):
    from transformers import BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "国", "猫", "狗", "ab", "##c"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizer(vocab=str(tmp_path / "vocab.txt"))


# --- sizes and balance


def test_imbalance_ratio():
    assert explore.imbalance_ratio([10, 5, 20]) == 4.0
    assert explore.imbalance_ratio([3, 0]) is None
    with pytest.raises(NbutilsError):
        explore.imbalance_ratio([])


# --- lengths


def test_char_lengths_count_code_points():
    assert explore.char_lengths(["中国", "", "ab c", "😀"]).tolist() == [2, 0, 4, 1]


def test_percentiles_of_one_to_hundred():
    stats = explore.percentiles(np.arange(1, 101))
    assert stats == pytest.approx(
        {
            "min": 1.0,
            "p50": 50.5,
            "p90": 90.1,
            "p95": 95.05,
            "p99": 99.01,
            "max": 100.0,
            "mean": 50.5,
        }
    )
    with pytest.raises(NbutilsError):
        explore.percentiles([])


def test_percentiles_by_group():
    frame = pd.DataFrame({"n": [1, 3, 10, 20], "g": ["x", "x", "y", "y"]})
    out = explore.percentiles_by(frame, "n", "g", qs=(50,))
    assert out["x"]["p50"] == 2.0 and out["y"]["p50"] == 15.0 and out["y"]["max"] == 20.0


def test_fit_shares_count_cls_and_sep():
    # 30 tokens + 2 specials = 32 fits in 32; 31 + 2 = 33 does not
    shares = explore.fit_shares([30, 31, 62, 100], max_lengths=(32, 64, 128))
    assert shares == {32: 0.25, 64: 0.75, 128: 1.0}
    assert explore.fit_shares([30], max_lengths=(32,), special_tokens=3) == {32: 0.0}


def test_recommend_max_length_covers_the_requested_share():
    lengths = list(range(1, 101))  # 1..100 tokens
    # 99% of 100 texts = 99 texts; the 99th shortest has 99 tokens; +2 = 101 -> 104
    assert explore.recommend_max_length(lengths) == 104
    assert explore.recommend_max_length(lengths, coverage=1.0) == 104  # 102 -> 104
    assert explore.recommend_max_length(lengths, coverage=0.5) == 56  # 50 + 2 = 52 -> 56
    assert explore.recommend_max_length(lengths, coverage=0.5, multiple=1) == 52
    share = explore.fit_shares(lengths, (explore.recommend_max_length(lengths, coverage=0.9),))
    assert list(share.values())[0] >= 0.9


def test_recommend_max_length_edges():
    assert explore.recommend_max_length([1, 1]) == 8  # never below one multiple
    assert explore.recommend_max_length([5000] * 10) == 512  # capped at the position limit
    with pytest.raises(NbutilsError):
        explore.recommend_max_length([])
    with pytest.raises(NbutilsError):
        explore.recommend_max_length([3], coverage=0)
    assert "99%" in explore.recommendation_rule()


# --- tokenizer coverage


def test_count_tokens_with_a_tiny_vocab(tiny_tokenizer):
    counts = explore.count_tokens(
        ["中国猫", "abc 熊", "", "熊 xyz 狗"], tiny_tokenizer, batch_size=2
    )
    # "abc" -> ab ##c; 熊 and xyz are unknown
    assert counts.tokens.tolist() == [3, 3, 0, 3]
    assert counts.unknown.tolist() == [0, 1, 0, 2]


def test_unk_rates_overall_and_per_class(tiny_tokenizer):
    frame = make_frame([("中国猫", 0, "train"), ("熊 狗", 1, "train"), ("熊熊", 1, "dev")])
    frame = explore.add_length_columns(frame, tiny_tokenizer)
    assert frame["chars"].tolist() == [3, 3, 2]
    rates = explore.unk_rates(frame, NAMES)
    assert rates["unk_tokens"] == 3 and rates["total_tokens"] == 7
    assert rates["unk_rate"] == pytest.approx(3 / 7)
    assert rates["texts_with_unk"] == pytest.approx(2 / 3)
    assert rates["unk_rate_by_class"] == {"cats": 0.0, "dogs": pytest.approx(3 / 4)}


def test_unknown_pieces_are_the_original_text(tiny_tokenizer):
    pieces = explore.unknown_pieces(["熊 中 xyz", "熊猫", "中国"], tiny_tokenizer, top=5)
    assert pieces == [("熊", 2), ("xyz", 1)]
    assert explore.unknown_pieces([], tiny_tokenizer) == []


def test_char_width_classes():
    assert [explore.char_width(c) for c in "Ａ１，a1,中。ｶ"] == [
        "full",
        "full",
        "full",
        "half",
        "half",
        "half",
        "wide",
        "wide",
        "half",
    ]


def test_char_width_shares_ignore_spaces():
    shares = explore.char_width_shares(["ＡＢ cd", "中文", "ab"])
    # non-space chars: Ａ Ｂ c d 中 文 a b -> 2 full, 4 half, 2 wide
    assert shares["full"] == pytest.approx(2 / 8)
    assert shares["half"] == pytest.approx(4 / 8)
    assert shares["wide"] == pytest.approx(2 / 8)
    assert shares["other"] == 0.0
    assert shares["texts_with_full_width"] == pytest.approx(1 / 3)


def test_counting_tokenizer_prefers_the_vocab_then_the_model_folder(tmp_path, tiny_tokenizer):
    vocab_dir = tmp_path  # the tiny_tokenizer fixture wrote vocab.txt here
    tokenizer, source = explore.counting_tokenizer(vocab_dir, tmp_path / "no-model")
    assert source == vocab_dir / "vocab.txt" and len(tokenizer) == 11
    model_dir = tmp_path / "model"
    tiny_tokenizer.save_pretrained(model_dir)
    tokenizer, source = explore.counting_tokenizer(tmp_path / "empty", model_dir)
    assert source == model_dir
    assert explore.count_tokens(["中国熊"], tokenizer).unknown.tolist() == [1]
    with pytest.raises(NbutilsError, match="no vocab.txt"):
        explore.counting_tokenizer("", tmp_path / "no-model")


# --- quality


def test_short_texts_finds_empty_and_short_ones():
    frame = make_frame(
        [
            ("正常的新闻标题", 0, "train"),
            ("  ", 1, "train"),
            ("短 标", 0, "dev"),
            ("好", 1, "test"),
        ]
    )
    found = explore.short_texts(frame, min_chars=3)
    assert found["row"].tolist() == [1, 3, 2]  # shortest first
    assert found["chars"].tolist() == [0, 1, 2]
    summary = explore.short_text_summary(frame, 3, NAMES, max_examples=2)
    assert summary["empty"] == 1 and summary["short"] == 3
    assert summary["short_by_split"] == {"dev": 1, "test": 1, "train": 1}
    assert summary["examples"] == [
        {"split": "train", "label": "dogs", "text": "  ", "chars": 0},
        {"split": "test", "label": "dogs", "text": "好", "chars": 1},
    ]


def test_streamed_statistics_equal_the_frame_ones():
    """Short texts and character lengths streamed from a Dataset's stored texts give what the
    in-memory frame gives (Unicode spaces such as U+3000 count as spaces in both)."""
    from nbutils.data.dataset import Dataset

    frame = make_frame([("正常的新闻标题", 0, "train"), ("  ", 1, "train"), ("短 标", 0, "dev"),
                        ("好", 1, "test"), ("\u3000\u3000好\u3000", 0, "train"), ("a b c d", 1, "dev")])
    ds = Dataset(frame, NAMES, source="mem", format="table")
    streamed = explore.short_texts_of(ds, 3).to_dict(orient="records")
    assert streamed == explore.short_texts(frame.astype({"text": object}), 3).to_dict(orient="records")
    assert explore.short_texts_of(ds, 3)["row"].tolist() == [1, 3, 4, 2]
    assert explore.short_text_summary(ds, 3, NAMES) == explore.short_text_summary(frame, 3, NAMES)
    by_split = explore.char_length_percentiles(ds)
    assert by_split["train"] == explore.percentiles([7, 2, 4])
    assert by_split["dev"]["max"] == 7 and by_split["test"]["mean"] == 1


def test_token_batches_are_capped_in_characters(tiny_tokenizer):
    texts = ["中" * 600_000, "国", "猫" * 500_000, "狗"]
    batches = list(explore.text_batches(texts, batch_size=8192))
    assert [len(b) for b in batches] == [2, 2]  # 1,000,000 characters at most per batch after its first
    assert [t for b in batches for t in b] == texts
    assert [len(b) for b in explore.text_batches(["ab"] * 5, batch_size=2)] == [2, 2, 1]
    counts = explore.count_tokens(iter(["中国", "猫 狗 熊"]), tiny_tokenizer, batch_size=1)
    assert counts.tokens.tolist() == [2, 3] and counts.unknown.tolist() == [0, 1]


# --- characteristic n-grams


def test_characteristic_ngrams_pick_the_class_specific_character():
    texts = ["猫在家里", "我的猫", "猫很好", "家里有狗", "狗很好", "我的狗"] * 3
    labels = [0, 0, 0, 1, 1, 1] * 3
    top = explore.characteristic_ngrams(texts, labels, NAMES, ngram_range=(1, 1), top_k=2)
    assert top["cats"][0][0] == "猫"
    assert top["dogs"][0][0] == "狗"
    # shared characters are never "characteristic", and a class's top list excludes the other's
    assert "猫" not in [g for g, _ in top["dogs"]]
    assert all(score > 0 for _, score in top["cats"])


def test_characteristic_ngrams_bigrams_and_errors():
    texts = ["股市大涨", "股市下跌", "球队大胜", "球队输了"] * 2
    top = explore.characteristic_ngrams(texts, [0, 0, 1, 1] * 2, NAMES, ngram_range=(2, 2), top_k=1)
    # sklearn's chi2 over counts: 股市 occurs 4 times in cats, expected 2 per class:
    # (4 - 2)^2 / 2 + (0 - 2)^2 / 2 = 4
    assert top == {"cats": [("股市", pytest.approx(4.0))], "dogs": [("球队", pytest.approx(4.0))]}
    with pytest.raises(NbutilsError):
        explore.characteristic_ngrams(["a"], [0, 1], NAMES)
    with pytest.raises(NbutilsError, match="min_df"):
        explore.characteristic_ngrams(["ab", "cd"], [0, 1], NAMES, min_df=2)


# --- examples


def test_sample_table_and_paging():
    frame = make_frame(
        [("猫" * 200, 0, "train"), ("小猫", 0, "train"), ("狗", 1, "train"), ("x", 1, "dev")]
    )
    table = explore.sample_table(frame, NAMES, per_class=5, max_chars=10)
    assert table["class"].tolist().count("cats") == 2 and table["class"].tolist().count("dogs") == 1
    assert table["text"].str.len().max() == 10 and "猫" * 9 + "…" in table["text"].tolist()
    assert explore.page_of(frame, 1, 3)["text"].tolist() == ["x"]
    with pytest.raises(NbutilsError):
        explore.page_of(frame, -1, 3)


# --- figures (nbutils.reporting.plots, 02 section)


def test_figures_render_and_save_as_png(tmp_path):
    from nbutils.reporting import plots

    frame = make_frame([("猫猫", 0, "train"), ("狗狗狗", 1, "train"), ("猫", 0, "dev")])
    frame = frame.assign(chars=[2, 3, 1], tokens=[2, 3, 1], **{"class": ["cats", "dogs", "cats"]})
    counts = pd.DataFrame({"train": [1, 1], "dev": [1, 0]}, index=NAMES)
    figures = {
        "balance": plots.class_balance_bars(counts),
        "lengths": plots.length_histograms(frame, max_length=8),
        "by_class": plots.lengths_by_class(frame, order=NAMES),
        "fit": plots.fit_share_curve(frame["tokens"], max_lengths=(8, 16), recommended=8),
    }
    assert len(figures["balance"].axes[0].patches) >= 4  # 2 classes x 2 splits (+ legend)
    assert len(figures["by_class"].axes) == 2
    for name, fig in figures.items():
        path = plots.save_figure(fig, tmp_path / f"{name}.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        plots.plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n}.png" for n in sorted(figures)]


def test_plot_labels_fall_back_to_ids_without_a_cjk_font(monkeypatch):
    from nbutils.reporting import plots

    monkeypatch.setattr(plots, "cjk_font", lambda: None)
    assert plots.plot_labels(["体育", "finance"]) == ["class 0", "class 1"]
    assert plots.plot_labels(["sports", "finance"]) == ["sports", "finance"]
    monkeypatch.setattr(plots, "cjk_font", lambda: "Noto Sans CJK SC")
    assert plots.plot_labels(["体育"]) == ["体育"]


def test_sample_browser_pages_through_the_chosen_class():
    from nbutils.reporting import plots

    frame = make_frame(
        [(f"猫{i}", 0, "train") for i in range(5)] + [("狗", 1, "train"), ("猫x", 0, "dev")]
    )
    browser = plots.sample_browser(frame, NAMES, page_size=2)
    label, split, page, info = browser.children[0].children
    assert info.value == "5 texts, 3 pages" and page.max == 2
    page.value = 2
    label.value = 1  # another class starts again at page 0
    assert (page.value, info.value) == (0, "1 texts, 1 pages")
    label.value, split.value = 0, "dev"
    assert info.value == "1 texts, 1 pages"


# --- the notebook end to end


@pytest.mark.slow
def test_notebook_on_a_hand_made_csv(tmp_path, vocab_dir):
    import csv
    import json

    import papermill as pm

    from nbutils.core.paths import REPO_ROOT

    rows = [(t, "猫", "train") for t in ["猫在家里睡觉", "我的猫很好", "小猫吃鱼", "猫猫猫", "猫"]]
    rows += [(t, "狗", "train") for t in ["家里有狗", "狗很好", "我的狗" * 6 + "狗狗", "狗在跑"]]
    rows += [("家里有狗", "狗", "train"), ("ＡＢＣ猫", "猫", "dev"), ("狗在跑", "狗", "test")]
    rows += [("小猫", "猫", "test"), ("大狗", "狗", "dev")]
    data = tmp_path / "mine.csv"
    with data.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([("sentence", "animal", "split"), *rows])
    run_dir = tmp_path / "run"
    pm.execute_notebook(
        REPO_ROOT / "notebooks" / "02_explore_data.ipynb",
        tmp_path / "out.ipynb",
        parameters={
            "run_dir": str(run_dir),
            "headless": True,
            "data_dir": str(data),
            "explore_vocab_dir": str(vocab_dir),
            "data_text_column": "sentence",
            "data_label_column": "animal",
            "explore_min_chars": 2,
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        execution_timeout=300,
        progress_bar=False,
    )
    stats = json.loads((run_dir / "explore" / "stats.json").read_text(encoding="utf-8"))
    assert stats["split_sizes"] == {"train": 10, "dev": 2, "test": 2}
    names = stats["dataset"]["label_names"]
    assert stats["class_balance"]["train"] == {names[0]: 5, names[1]: 5}
    # longest train text: 20 characters, 20 tokens, + [CLS] + [SEP] = 22 -> 24
    assert stats["lengths"]["tokens"]["by_split"]["train"]["max"] == 20
    assert stats["recommended_max_length"] == 24
    assert stats["fit_shares"]["train"]["32"] == 1.0
    assert stats["quality"]["duplicates"]["train"]["count"] == 1
    assert stats["quality"]["leakage"]["pairs"]["train/test"] == 1
    assert stats["quality"]["short_texts"]["short"] == 1  # "猫"
    assert stats["char_width"]["texts_with_full_width"] == pytest.approx(1 / 14)
    top = {
        name: [g["ngram"] for g in grams[:1]]
        for name, grams in stats["characteristic_ngrams"].items()
    }
    assert top == {"猫": ["猫"], "狗": ["狗"]}
    for figure in stats["figures"].values():
        assert (run_dir / figure).read_bytes()[:4] == b"\x89PNG"


def test_the_label_error_section_writes_under_explore_with_the_study_s_seed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import nbutils.explain.label_errors as label_errors
    from nbutils.stages.explore import Exploration

    calls = []
    monkeypatch.setattr(label_errors, "show_label_errors",
                        lambda ds, path, **kwargs: calls.append((ds, path, kwargs)) or "the table")
    ds = SimpleNamespace(source="data", format="titles", label_names=["a", "b"], multi_label=False, skipped=[])
    study = Exploration(tmp_path / "run", ds, tokenizer=None, tokenizer_source=None, sample_size=10, seed=5)
    assert study.label_issues is None
    study.label_errors(folds=3, show=7)
    assert calls == [(ds, tmp_path / "run" / "explore" / "label_issues.csv", {"folds": 3, "show": 7, "seed": 5})]
    assert study.label_issues == "the table"
