"""Multi-label data: reading a label column with several labels per text (delimiter or JSON
list), the 0/1 label matrix (checked against scikit-learn's MultiLabelBinarizer), bad cells,
stratified splits by the rarest label, and what `nbutils data check` says about it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import MultiLabelBinarizer

from nbutils.core.errors import DataError, NbutilsError
from nbutils.data.dataset import load_dataset, stratification_labels
from nbutils.data.fetch import check
from nbutils.data.statistics import label_cardinality, label_cooccurrence, top_label_pairs
from nbutils.pipeline.runner import parse_override

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "multilabel-mini"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _csv_splits(folder: Path, rows: dict[str, list[tuple[str, str]]], header="text,label") -> Path:
    folder.mkdir(exist_ok=True)
    for split, pairs in rows.items():
        _write(folder / f"{split}.csv", header + "\n" + "".join(f"{t},{lab}\n" for t, lab in pairs))
    return folder


def test_delimited_labels_give_the_matrix_scikit_learn_builds(tmp_path):
    folder = _csv_splits(tmp_path / "d", {
        "train": [("甲", "体育|娱乐"), ("乙", "财经"), ("丙", " 娱乐 | 财经 | 娱乐"), ("丁", "体育")],
        "dev": [("戊", "财经|体育")], "test": [("己", "娱乐")]})
    ds = load_dataset(folder, label_delimiter="|")
    assert ds.multi_label and ds.label_names == sorted(["体育", "娱乐", "财经"])
    expected = MultiLabelBinarizer(classes=ds.label_names).fit_transform(
        [["体育", "娱乐"], ["财经"], ["娱乐", "财经"], ["体育"]])
    np.testing.assert_array_equal(ds.label_matrix("train"), expected)
    assert ds.label_sets("dev") == [["体育", "财经"]]
    assert ds.class_counts()["train"].to_dict() == {"体育": 2, "娱乐": 2, "财经": 2}
    # the same file read without the delimiter is single-label, with "体育|娱乐" a class of its own
    single = load_dataset(folder / "train.csv")
    assert not single.multi_label and "体育|娱乐" in single.label_names


def test_json_lists_are_multi_label_without_a_delimiter(tmp_path):
    jsonl = _write(tmp_path / "d.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [
        {"text": "一", "label": ["a", "b"], "split": "train"}, {"text": "二", "label": "b", "split": "train"},
        {"text": "三", "label": [3, "a"], "split": "dev"}, {"text": "四", "label": ["a"], "split": "test"},
        {"text": "五", "label": ["3"], "split": "train"}]))
    ds = load_dataset(jsonl)
    assert ds.multi_label and ds.label_names == ["3", "a", "b"]
    assert ds.label_sets("train") == [["a", "b"], ["b"], ["3"]] and ds.label_sets("dev") == [["3", "a"]]
    csv = _write(tmp_path / "d.csv", 'text,label,split\n一,"[""a"", ""b""]",train\n二,b,train\n三,"[""b""]",test\n'
                 "四,a,dev\n")
    assert load_dataset(csv).label_sets() == [["a", "b"], ["b"], ["b"], ["a"]]


@pytest.mark.parametrize(("cell", "reason"), [
    ("a||b", "an empty label between delimiters"),
    ('"[]"', "no labels"),
    ('"[""a"", [1]]"', "only label names"),
])
def test_bad_label_cells_name_file_line_reason_and_the_option(tmp_path, cell, reason):
    path = _write(tmp_path / "d.csv", f"text,label\n一,a|b\n二,{cell}\n三,b\n")
    with pytest.raises(DataError) as err:
        load_dataset(path, label_delimiter="|")
    assert err.value.line == 3 and reason in str(err.value)
    assert "data_label_delimiter" in str(err.value) and "--label-delimiter" in str(err.value)
    skipped = load_dataset(path, label_delimiter="|", on_bad_rows="skip")
    assert [r.line for r in skipped.skipped] == [3] and len(skipped) == 2


def test_a_label_absent_from_train_is_a_bad_row(tmp_path):
    folder = _csv_splits(tmp_path / "d", {"train": [("一", "a|b"), ("二", "b")],
                                          "dev": [("三", "a|c")], "test": [("四", "b")]})
    with pytest.raises(DataError, match="unknown label.*'c'") as err:
        load_dataset(folder, label_delimiter="|")
    assert err.value.path.name == "dev.csv" and err.value.line == 2


def test_delimiter_on_a_format_with_one_label_per_text_is_refused(titles_dir):
    with pytest.raises(NbutilsError, match="applies to table files") as err:
        load_dataset(titles_dir, label_delimiter="|")
    assert "data_label_delimiter" in err.value.fix


def test_single_label_data_is_unchanged_and_reads_as_one_hot(titles_dir):
    ds = load_dataset(titles_dir)
    assert not ds.multi_label
    matrix = ds.label_matrix("dev")
    assert matrix.sum(axis=1).tolist() == [1] * len(matrix)
    np.testing.assert_array_equal(matrix.argmax(axis=1), ds.label_array("dev"))


def test_one_file_split_keeps_copies_together_and_stratifies_by_the_rarest_label(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(300):
        labels = ["common"] + (["rare"] if i % 10 == 0 else []) + (["mid"] if i % 3 == 0 else [])
        rows.append((f"文本{i}", "|".join(labels)))
    rows += rows[:40]  # exact copies: must share a split with their original
    order = rng.permutation(len(rows))
    path = _write(tmp_path / "one.csv", "text,label\n" + "".join(f"{rows[i][0]},{rows[i][1]}\n" for i in order))
    ds = load_dataset(path, label_delimiter="|", split_seed=7)
    split_of = {}
    for split in ("train", "dev", "test"):
        for text in ds.texts(split):
            assert split_of.setdefault(text, split) == split
    rare = ds.class_counts().loc["rare"]
    assert rare["dev"] >= 2 and rare["test"] >= 2  # 30 rare texts, stratified 80/10/10
    key = stratification_labels(ds.label_matrix())
    names = np.asarray(ds.label_names)
    assert set(names[key[ds.label_matrix()[:, ds.label_names.index("rare")] == 1]]) == {"rare"}
    np.testing.assert_array_equal(ds.label_array(), key)


def test_subsample_and_quality_keep_label_sets_aligned(tmp_path):
    folder = _csv_splits(tmp_path / "d", {
        "train": [("一", "a|b"), ("二", "b"), ("一", "a"), ("三", "a|b"), ("四", "b")],
        "dev": [("五", "a")], "test": [("六", "b")]})
    ds = load_dataset(folder, label_delimiter="|")
    conflicts = ds.quality()["conflicting_labels"]
    assert conflicts["count"] == 1 and conflicts["examples"][0] == {"text": "一", "labels": ["a", "a+b"]}
    small = ds.subsample({"train": 3}, seed=1)
    by_text = dict(zip(ds.texts("train"), ds.label_sets("train"), strict=True))
    for text, labels in zip(small.texts("train"), small.label_sets("train"), strict=True):
        assert text == "一" or by_text[text] == labels
    assert ds.content_fingerprint() != load_dataset(folder).content_fingerprint()


def test_cardinality_and_cooccurrence_count_what_is_there():
    matrix = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 1]])
    c = label_cardinality(matrix)
    assert c["cardinality"] == pytest.approx(7 / 4) and c["density"] == pytest.approx(7 / 12)
    assert c["texts_by_label_count"] == {"1": 2, "2": 1, "3": 1} and c["distinct_label_sets"] == 4
    co = label_cooccurrence(matrix, ["x", "y", "z"])
    expected = [[sum(r[i] and r[j] for r in matrix) for j in range(3)] for i in range(3)]
    assert co.to_numpy().tolist() == expected
    pairs = top_label_pairs(co)
    assert pairs[0]["labels"] == ["x", "y"] and pairs[0]["texts"] == 2
    assert pairs[0]["share_of_first"] == pytest.approx(2 / 3)


def test_data_check_reports_labels_per_text_and_hints_at_the_delimiter():
    lines: list[str] = []
    ds = check(FIXTURE, label_delimiter="|", log=lines.append)
    text = "\n".join(lines)
    assert ds.multi_label and "multi-label" in lines[0]
    cardinality = label_cardinality(ds.label_matrix("train"))["cardinality"]
    assert f"train: cardinality {cardinality:.2f}" in text and "label pairs most often" in text
    lines.clear()
    check(FIXTURE, log=lines.append)
    assert any("--label-delimiter '|'" in line and "data_label_delimiter" in line for line in lines)


@pytest.mark.parametrize("raw", ["|", ";", ">", "#"])
def test_runner_reads_a_delimiter_literally(raw):
    assert parse_override(f"data_label_delimiter={raw}") == ("data_label_delimiter", raw)


def test_data_split_compares_label_sets_and_stratifies_by_the_rarest_label(tmp_path):
    from nbutils.data.split import SplitSettings, split_file

    rows = [(f"文本{i}", "|".join(["common"] + (["rare"] if i % 10 == 0 else []))) for i in range(300)]
    rows.append(("文本0", "common|rare"))  # the same set in another order: a duplicate, not a conflict
    rows.append(("文本1", "rare|common"))  # a different set for 文本1 ("common"): a conflict
    path = _write(tmp_path / "all.csv", "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    record = split_file(path, tmp_path / "out", SplitSettings(label_delimiter="|"), log=lambda *_: None)
    assert record["removed"]["exact_duplicates"] == 1 and record["conflicting_texts"]["count"] == 1
    ds = load_dataset(tmp_path / "out", label_delimiter="|")
    rare = ds.class_counts().loc["rare"]
    assert rare["dev"] >= 2 and rare["test"] >= 2 and rare.sum() == 30
