"""nbutils.data.dataset: every format, every bad-row kind (with exact line numbers), quality checks,
stratified splits and subsamples. Fixtures are small hand-made files written into tmp_path."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from data_files import titles, write

from nbutils.core.errors import DataError, NbutilsError
from nbutils.data.dataset import (
    CNEWS_LABELS,
    BadRow,
    Dataset,
    detect_format,
    load_dataset,
    stratified_split,
)

# --- titles ----------------------------------------------------------------------------


def test_titles_reads_text_label_split_and_class_names(tmp_path):
    folder = titles(tmp_path, "\ufeff上证指数 收涨\t2\r\n  两居 准现房  \t1\n\n第三条\t0\n")
    ds = load_dataset(folder)
    assert ds.format == "titles"
    assert ds.label_names == ["finance", "realty", "stocks"]
    assert list(ds.frame.columns) == ["text", "label", "split"]
    # BOM, CRLF and surrounding spaces removed; the inner space kept; the blank line ignored
    assert ds.texts("train") == ["上证指数 收涨", "两居 准现房", "第三条"]
    assert ds.labels("train") == [2, 1, 0]
    assert ds.sizes() == {"train": 3, "dev": 1, "test": 1}
    assert ds.texts("dev") == ["验证集标题"] and ds.labels("test") == [1]
    assert str(ds.frame["label"].dtype) == "int64"
    assert ds.id2label[2] == "stocks" and ds.label2id["realty"] == 1
    assert ds.skipped == []
    with pytest.raises(NbutilsError, match="unknown split"):
        ds.split("val")


BAD_TITLE_ROWS = [
    ("no tab here", "no TAB separator"),
    ("a\tb\t1", "expected 2 TAB-separated fields"),
    ("   \t1", "empty text"),
    ("标题\tone", "label id 'one' is not a non-negative integer"),
    ("标题\t-1", "is not a non-negative integer"),
    ("标题\t3", "label id 3 is outside class.txt (3 classes"),
    ("标题\t", "label id '' is not"),
]


@pytest.mark.parametrize(("row", "reason"), BAD_TITLE_ROWS)
def test_titles_bad_row_names_file_line_reason_and_fix(tmp_path, row, reason):
    folder = titles(tmp_path, f"好标题\t0\n\n{row}\n另一个\t1\n")
    with pytest.raises(DataError) as err:
        load_dataset(folder, "titles")
    assert err.value.path == folder / "train.txt"
    assert err.value.line == 3  # the blank line 2 still counts
    assert reason in err.value.reason
    assert err.value.fix
    assert f"{folder / 'train.txt'}:3: " in str(err.value) and "how to fix" in str(err.value)


def test_titles_undecodable_bytes_point_at_the_line_and_suggest_iconv(tmp_path):
    folder = titles(tmp_path, "好标题\t0\n")
    (folder / "dev.txt").write_bytes("第一行\t0\n".encode() + "国产手机\t1\n".encode("gb18030"))
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert (err.value.path, err.value.line) == (folder / "dev.txt", 2)
    assert "not UTF-8" in err.value.reason
    assert "iconv -f GB18030 -t UTF-8" in err.value.fix


def test_skip_mode_leaves_bad_rows_out_and_lists_them(tmp_path):
    train = "".join(f"{row}\n" for row, _ in BAD_TITLE_ROWS) + "好标题\t2\n"
    folder = titles(tmp_path, train, dev="验证集标题\t2\n")
    (folder / "test.txt").write_bytes("国产手机\t2\n".encode("gb18030") + "测试\t2\n".encode())
    ds = load_dataset(folder, on_bad_rows="skip")
    assert ds.texts("train") == ["好标题"] and ds.labels("train") == [2]
    assert ds.texts("test") == ["测试"]
    assert all(isinstance(row, BadRow) for row in ds.skipped)
    where = [(row.path.name, row.line) for row in ds.skipped]
    assert where == [("train.txt", i) for i in range(1, len(BAD_TITLE_ROWS) + 1)] + [("test.txt", 1)]
    for row, (_, reason) in zip(ds.skipped, BAD_TITLE_ROWS, strict=False):
        assert reason in row.reason
    assert str(ds.skipped[0]).startswith(f"{folder / 'train.txt'}:1: no TAB")


def test_skip_mode_does_not_hide_file_level_problems(tmp_path):
    folder = titles(tmp_path, "好标题\t0\n")
    (folder / "class.txt").unlink()
    with pytest.raises(DataError, match="missing class.txt"):
        load_dataset(folder, "titles", on_bad_rows="skip")


@pytest.mark.parametrize(("classes", "line", "reason"), [
    ("a\n\nb\n", 2, "empty class name"),
    ("a\nb\na", 3, "duplicate class name 'a'"),
])
def test_broken_class_file_is_an_error(tmp_path, classes, line, reason):
    folder = titles(tmp_path, "好标题\t0\n", classes=classes)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert (err.value.path.name, err.value.line) == ("class.txt", line)
    assert reason in err.value.reason


def test_class_file_may_end_with_newlines(tmp_path):
    folder = titles(tmp_path, "好标题\t0\n标题二\t1\n", classes="a\nb\r\n\n")
    assert load_dataset(folder).label_names == ["a", "b"]


def test_missing_split_file_is_named(tmp_path):
    folder = titles(tmp_path, "好标题\t0\n")
    (folder / "test.txt").unlink()
    with pytest.raises(DataError, match="missing test file") as err:
        load_dataset(folder)
    assert err.value.path == folder / "test.txt"


def test_real_titles_mirror_sizes_and_speed(real_titles_dir):
    titles_dir = real_titles_dir
    start = time.perf_counter()
    ds = load_dataset(titles_dir)
    seconds = time.perf_counter() - start
    assert ds.format == "titles"
    assert ds.sizes() == {"train": 33_590, "dev": 10_000, "test": 10_000}
    assert len(ds.label_names) == 10 and ds.label_names[0] == "finance"
    assert ds.class_counts()["dev"].tolist() == [1000] * 10
    assert ds.skipped == []
    # ~0.15 s measured on a quiet 2-core machine; the bound leaves room for a busy one.
    assert seconds < 3, f"loading the titles took {seconds:.2f} s"


# --- cnews -----------------------------------------------------------------------------


def cnews(folder: Path, train: str, val: str = "体育\t比赛新闻\n", test: str = "财经\t股市新闻\n",
          names=("cnews.train.txt", "cnews.val.txt", "cnews.test.txt")) -> Path:
    for name, text in zip(names, (train, val, test), strict=True):
        write(folder / name, text)
    return folder


def test_cnews_uses_the_published_label_order_and_maps_val_to_dev(tmp_path):
    # the classes appear in reverse order; the ids must still follow the cnews order
    train = "".join(f"{name}\t{name}的一篇文章\t含一个制表符\n" for name in reversed(CNEWS_LABELS))
    ds = load_dataset(cnews(tmp_path, train))
    assert ds.format == "cnews"
    assert ds.label_names == list(CNEWS_LABELS)
    assert ds.split("dev")["label"].tolist() == [CNEWS_LABELS.index("体育")]
    assert ds.texts("train")[0] == "娱乐的一篇文章\t含一个制表符"  # only the first TAB separates
    assert ds.sizes() == {"train": 10, "dev": 1, "test": 1}


def test_cnews_other_label_sets_are_sorted_and_plain_names_accepted(tmp_path):
    train = "科技\t文章一\n体育\t文章二\n"
    ds = load_dataset(cnews(tmp_path, train, "体育\t文章\n", "科技\t文章\n",
                            names=("train.txt", "val.txt", "test.txt")))
    assert ds.format == "cnews"  # train.txt without class.txt, first field not a number
    assert ds.label_names == sorted(["科技", "体育"])


@pytest.mark.parametrize(("row", "reason"), [
    ("体育 没有制表符", "no TAB separator"),
    ("\t文章", "empty label"),
    ("体育\t   ", "empty text"),
    ("彩票\t文章", "unknown label '彩票'"),
])
def test_cnews_bad_rows(tmp_path, row, reason):
    folder = cnews(tmp_path, "体育\t文章\n财经\t文章\n", test=f"体育\t文章\n{row}\n")
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert (err.value.path.name, err.value.line) == ("cnews.test.txt", 2)
    assert reason in err.value.reason
    skipped = load_dataset(folder, on_bad_rows="skip")
    assert [(r.path.name, r.line) for r in skipped.skipped] == [("cnews.test.txt", 2)]
    assert skipped.sizes()["test"] == 1


# --- tables ----------------------------------------------------------------------------


def test_csv_folder_with_custom_columns_quotes_and_multiline_rows(tmp_path):
    write(tmp_path / "train.csv",
          'id,content,category\n1,"逗号,在引号里",sports\n2,"跨\n两行",game\n3,最后一行,sports\n')
    write(tmp_path / "dev.csv", "id,content,category\n1,开发,game\n")
    write(tmp_path / "test.csv", "id,content,category\n1,测试,sports\n")
    ds = load_dataset(tmp_path, text_column="content", label_column="category")
    assert ds.format == "table"
    assert ds.label_names == ["game", "sports"]
    assert ds.texts("train") == ["逗号,在引号里", "跨\n两行", "最后一行"]
    assert ds.labels("train") == [1, 0, 1]

    # a bad row after the two-line record: reported on its own first line (5)
    write(tmp_path / "train.csv",
          'id,content,category\n1,"逗号,在引号里",sports\n2,"跨\n两行",game\n3,多了,一列,sports\n')
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path, text_column="content", label_column="category")
    assert (err.value.path.name, err.value.line) == ("train.csv", 5)
    assert "expected 3 comma-separated fields" in err.value.reason


def test_missing_column_names_the_columns_that_exist(tmp_path):
    write(tmp_path / "data.csv", "sentence,label\n你好,a\n")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path / "data.csv")
    assert err.value.line == 1
    assert "no text column 'text'" in err.value.reason and "sentence, label" in err.value.reason
    assert "label column" not in err.value.reason  # the label column is there
    assert "text_column=" in err.value.fix and "label_column" not in err.value.fix
    write(tmp_path / "data.jsonl", '{"sentence": "你好", "y": 1}\n')
    with pytest.raises(DataError, match="no text field 'text' and no label field 'label'; the fields are: sentence, y"):
        load_dataset(tmp_path / "data.jsonl", on_bad_rows="skip")


@pytest.mark.parametrize(("entry", "option"), [
    ("run", "-p data_label_column=<column>"),
    ("cli", "--label-column <column>"),
    ("notebook", 'data_label_column = "<column>"'),
    ("python", "label_column=<column>"),
])
def test_a_missing_column_is_fixed_with_the_option_of_the_entry_point(tmp_path, entry, option):
    """The same missing label column: `nbutils run` users are told -p data_label_column=, command
    users --label-column, notebook users the parameters-cell variable, Python users the keyword."""
    from nbutils.core.errors import entered_through, entry_point

    path = write(tmp_path / "reviews.csv", "review,sentiment\n好,正面\n")
    with entered_through(entry), pytest.raises(DataError) as err:
        load_dataset(path, text_column="review")
    assert "no label column 'label'; the columns are: review, sentiment" in err.value.reason
    assert option in err.value.fix
    others = {"run": "-p ", "cli": "--", "notebook": "parameters cell", "python": "label_column="}
    assert not any(hint in err.value.fix for name, hint in others.items() if name != entry and hint not in option)
    assert entry_point() == "python"  # the entry point is restored afterwards


def test_only_a_running_kernel_makes_the_entry_point_a_notebook(monkeypatch):
    """Importing ipykernel or starting a terminal IPython shell (papermill, nbconvert and tests do
    both) leaves a plain process a Python entry point; a kernel's shell makes it a notebook."""
    import ipykernel.zmqshell  # noqa: F401
    import IPython

    from nbutils.core.errors import entry_point

    monkeypatch.delenv("NBUTILS_ENTRY", raising=False)
    assert entry_point() == "python"

    class ZMQInteractiveShell:  # the kernel's shell class, by name
        pass

    monkeypatch.setattr(IPython, "get_ipython", lambda: ZMQInteractiveShell())
    assert entry_point() == "notebook"
    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    assert entry_point() == "python"


def test_the_runner_s_entry_point_outlives_a_nested_command():
    from nbutils.core.errors import entered_through, entry_point

    with entered_through("run"):
        with entered_through("cli"):  # a command the runner's notebook calls stays a `run` for the user
            assert entry_point() == "run"
        assert entry_point() == "run"


def test_single_table_with_split_column_tsv(tmp_path):
    path = write(tmp_path / "all.tsv",
                 "text\tlabel\tsplit\n甲\t1\ttrain\n乙\t10\ttrain\n丙\t2\tval\n丁\t1\ttest\n戊\t1\tholdout\n")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert (err.value.line, err.value.reason) == (6, "unknown split 'holdout'")
    ds = load_dataset(path, on_bad_rows="skip")
    assert ds.label_names == ["1", "10"]  # integer labels in numeric order
    assert ds.sizes() == {"train": 2, "dev": 0, "test": 1}
    # "2" appears only in dev: not a learnable class
    assert [(r.line, r.reason.split(":")[0]) for r in ds.skipped] == [(6, "unknown split 'holdout'"),
                                                                    (4, "unknown label '2'")]


def test_jsonl_bad_rows_and_skip(tmp_path):
    lines = [
        '{"text": "第一", "label": "a"}',
        '{"text": "第二", "label": "b"',
        '["not", "an", "object"]',
        '{"text": "", "label": "a"}',
        '{"text": "第五"}',
        '{"text": 5, "label": "a"}',
        '{"text": "第七", "label": 1, "split": "train"}',
    ]
    path = write(tmp_path / "rows.jsonl", "\n".join(lines) + "\n")
    reasons = ["not valid JSON", "expected a JSON object", "empty text", "missing or invalid 'label'",
               "'text' is not a string"]
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.line == 2 and reasons[0] in err.value.reason
    ds = load_dataset(path, on_bad_rows="skip", split_ratios=(1, 0, 0))
    # line 7's integer label among label names would be a class of its own
    reasons.append("integer label 1 among label names")
    assert [r.line for r in ds.skipped] == [2, 3, 4, 5, 6, 7]
    for row, reason in zip(ds.skipped, reasons, strict=True):
        assert reason in row.reason
    assert ds.texts("train") == ["第一"] and ds.label_names == ["a"]


def test_table_undecodable_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\n好,a\n".encode() + "坏的编码,b\n".encode("gbk") + "好,b\n".encode())
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.line == 3 and "iconv" in err.value.fix
    assert load_dataset(path, on_bad_rows="skip", split_ratios=(1, 0, 0)).texts("train") == ["好", "好"]


def test_single_table_without_split_column_is_split_stratified_and_deterministic(tmp_path):
    rows = [f"文本{i},{'ab'[i % 2] if i < 60 else 'c'}" for i in range(100)]
    path = write(tmp_path / "d.csv", "text,label\n" + "\n".join(rows) + "\n")
    a, b = load_dataset(path, split_seed=3), load_dataset(path, split_seed=3)
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(load_dataset(path, split_seed=4).frame)
    counts = a.class_counts()
    assert counts.loc["a"].tolist() == [24, 3, 3] and counts.loc["c"].tolist() == [32, 4, 4]


# --- raw corpus ------------------------------------------------------------------------


def corpus(folder: Path, per_class: dict[str, int]) -> Path:
    for name, n in per_class.items():
        for i in range(n):
            write(folder / name / f"{i}.txt", f"  标题{name}{i}\n\n\u3000\u3000第一段  文字。\n第二段\n")
    return folder


def test_corpus_normalises_whitespace_and_splits_by_class(tmp_path):
    folder = corpus(tmp_path / "THUCNews", {"体育": 20, "财经": 10, "彩票": 1})
    write(folder / "README.txt", "not an article")  # files at the top are not classes
    ds = load_dataset(folder)
    assert ds.format == "corpus"
    assert ds.label_names == sorted(["体育", "财经", "彩票"])
    assert "标题体育0 第一段 文字。 第二段" in ds.frame["text"].tolist()
    counts = ds.class_counts()
    assert counts.loc["体育"].tolist() == [16, 2, 2]
    assert counts.loc["财经"].tolist() == [8, 1, 1]
    assert counts.loc["彩票"].tolist() == [1, 0, 0]  # a lone article stays in train
    assert load_dataset(folder, split_ratios=(0.5, 0.25, 0.25)).class_counts().loc["体育"].tolist() == [10, 5, 5]


def test_corpus_split_is_deterministic_by_seed(tmp_path):
    folder = corpus(tmp_path, {"a": 30, "b": 30})
    first = load_dataset(folder, split_seed=7).frame
    assert first.equals(load_dataset(folder, split_seed=7).frame)
    assert not first.equals(load_dataset(folder, split_seed=8).frame)


def test_corpus_bad_files(tmp_path):
    folder = corpus(tmp_path, {"a": 3})
    (folder / "a" / "gbk.txt").write_bytes("第一行\n".encode() + "第二行".encode("gbk"))
    write(folder / "a" / "empty.txt", " \n\u3000\n")
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert (err.value.path.name, err.value.line) == ("empty.txt", None)
    ds = load_dataset(folder, on_bad_rows="skip")
    assert [(r.path.name, r.line) for r in ds.skipped] == [("empty.txt", None), ("gbk.txt", 2)]
    assert len(ds) == 3


# --- detection and arguments -----------------------------------------------------------


def test_undetectable_folder_lists_the_expected_layouts(tmp_path):
    write(tmp_path / "notes.md", "hello")
    with pytest.raises(DataError) as err:
        detect_format(tmp_path)
    assert "notes.md" in err.value.reason
    for layout in ("titles:", "cnews:", "table:", "corpus:"):
        assert layout in err.value.fix


def test_titles_without_class_file_is_explained(tmp_path):
    write(tmp_path / "train.txt", "标题\t0\n")
    with pytest.raises(DataError, match="missing class.txt"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("kwargs", [
    {"format": "xml"}, {"on_bad_rows": "ignore"}, {"split_ratios": (0.5, 0.5, 0.5)},
    {"split_ratios": (0, 0.5, 0.5)},
])
def test_bad_arguments(tmp_path, kwargs):
    folder = titles(tmp_path, "标题\t0\n")
    with pytest.raises(NbutilsError):
        load_dataset(folder, **kwargs)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope")


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    with pytest.raises(DataError, match="no usable training rows"):
        load_dataset(titles(tmp_path, "坏\n"), on_bad_rows="skip")


# --- quality -----------------------------------------------------------------------------


def test_quality_finds_duplicates_leakage_and_conflicting_labels(tmp_path):
    folder = titles(tmp_path, "重复\t0\n重复\t0\n重复\t0\n泄漏\t1\n冲突\t0\n冲突\t2\n唯一\t1\n",
                    dev="泄漏\t1\n开发\t0\n三处\t0\n", test="三处\t0\n测试\t1\n三处\t0\n")
    q = load_dataset(folder).quality()
    assert q["duplicates"]["train"]["count"] == 3  # two extra 重复 and one extra 冲突
    assert {"text": "重复", "count": 3} in q["duplicates"]["train"]["examples"]
    assert q["duplicates"]["dev"]["count"] == 0 and q["duplicates"]["test"]["count"] == 1
    assert q["leakage"]["count"] == 2
    assert q["leakage"]["pairs"] == {"train/dev": 1, "train/test": 0, "dev/test": 1}
    assert {"text": "泄漏", "splits": ["train", "dev"]} in q["leakage"]["examples"]
    assert q["conflicting_labels"] == {"count": 1, "examples": [{"text": "冲突", "labels": ["finance", "stocks"]}]}
    json.dumps(q)  # plain JSON for stats.json


def test_quality_of_clean_data_is_empty(tmp_path):
    q = load_dataset(titles(tmp_path, "一\t0\n二\t1\n")).quality()
    assert q["leakage"]["count"] == 0 and q["conflicting_labels"]["count"] == 0
    assert all(d["count"] == 0 for d in q["duplicates"].values())


# --- subsample and split helpers ---------------------------------------------------------


def _balanced(tmp_path) -> Dataset:
    train = "".join(f"训练{i}\t{i % 3 if i < 240 else 0}\n" for i in range(300))  # 0 is twice as common
    dev = "".join(f"开发{i}\t{i % 3}\n" for i in range(60))
    return load_dataset(titles(tmp_path, train, dev=dev, test="测试\t1\n"))


def test_subsample_is_stratified_deterministic_and_per_split(tmp_path):
    ds = _balanced(tmp_path)
    small = ds.subsample({"train": 30, "dev": 9}, seed=1)
    assert isinstance(small, Dataset) and small.label_names == ds.label_names
    assert small.sizes() == {"train": 30, "dev": 9, "test": 1}  # test not named: kept whole
    assert small.class_counts()["train"].tolist() == [14, 8, 8]  # 140/80/80 of 300 rows
    assert small.class_counts()["dev"].tolist() == [3, 3, 3]
    assert small.frame.equals(ds.subsample({"train": 30, "dev": 9}, seed=1).frame)
    assert not small.frame.equals(ds.subsample({"train": 30, "dev": 9}, seed=2).frame)
    # the train sample does not depend on how many dev rows were asked for
    assert small.texts("train") == ds.subsample({"train": 30, "dev": 3}, seed=1).texts("train")
    # every sampled row is a real row of the same split
    assert set(small.texts("train")) <= set(ds.texts("train"))


def test_subsample_with_one_size_for_all_splits(tmp_path):
    ds = _balanced(tmp_path)
    small = ds.subsample(6, seed=0)
    assert small.sizes() == {"train": 6, "dev": 6, "test": 1}
    assert ds.subsample(10_000, seed=0).frame.equals(ds.frame)
    with pytest.raises(NbutilsError, match="unknown split"):
        ds.subsample({"validation": 3})


def test_stratified_split_keeps_each_class_proportion():
    labels = [0] * 50 + [1] * 20 + [2] * 3
    splits = stratified_split(labels, (0.8, 0.1, 0.1), seed=0)
    by_class = {c: [s for s, lab in zip(splits, labels, strict=True) if lab == c] for c in (0, 1, 2)}
    assert [by_class[0].count(s) for s in ("train", "dev", "test")] == [40, 5, 5]
    assert [by_class[1].count(s) for s in ("train", "dev", "test")] == [16, 2, 2]
    assert sum(s == "train" for s in by_class[2]) >= 2
    assert list(splits) == list(stratified_split(labels, (0.8, 0.1, 0.1), seed=0))


def test_copies_of_a_text_share_their_split():
    texts = [f"title {i % 40}" for i in range(120)]  # every text three times
    labels = [i % 40 % 4 for i in range(120)]
    splits = stratified_split(labels, (0.5, 0.25, 0.25), seed=3, groups=texts)
    by_text = {}
    for text, split in zip(texts, splits, strict=True):
        by_text.setdefault(text, set()).add(split)
    assert all(len(s) == 1 for s in by_text.values())
    # the ratios count distinct texts: 40 texts, 10 per class -> 5/2-3/2-3 per class
    firsts = [next(iter(by_text[f"title {i}"])) for i in range(40)]
    assert firsts.count("train") == 20 and firsts.count("dev") + firsts.count("test") == 20
    # with no repeated text the grouping changes nothing
    unique = [f"title {i}" for i in range(120)]
    assert list(stratified_split(labels, (0.5, 0.25, 0.25), seed=3, groups=unique)) == \
        list(stratified_split(labels, (0.5, 0.25, 0.25), seed=3))
    # without groups the copies scatter (what the grouping prevents)
    loose = stratified_split(labels, (0.5, 0.25, 0.25), seed=3)
    assert any(len({loose[j] for j in range(120) if texts[j] == t}) > 1 for t in by_text)


def test_a_table_split_here_has_no_leakage(tmp_path):
    rows = ["text,label"] + [f"新闻标题{i % 30},{'体育' if i % 30 < 15 else '财经'}" for i in range(90)]
    path = tmp_path / "news.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    ds = load_dataset(path, split_ratios=(0.6, 0.2, 0.2))
    quality = ds.quality()
    assert quality["leakage"]["count"] == 0
    assert sum(d["count"] for d in quality["duplicates"].values()) == 60  # the copies stay, within one split
