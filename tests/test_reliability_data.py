"""Reliability, data kind (docs/reliability.md): rows that used to be
lost, mangled or silently mis-labelled. Every test here failed on the code before the fix.

The table in docs/reliability.md ("Cases and their tests") names each test next to its behaviour.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_files import titles, write

from nbutils.core.errors import DataError
from nbutils.data.dataset import CNEWS_LABELS, detect_format, load_dataset

# --- case 1: an unbalanced quote ------------------------------------------------------------


def _csv_with_unbalanced_quote(path: Path, n_rows: int = 420, bad_line: int = 5, sep: str = ",") -> Path:
    rows = [f"第{i}条新闻{sep}{'abc'[i % 3]}" for i in range(n_rows)]
    rows[bad_line - 2] = f'"引号没有闭合 的一行{sep}a'  # data row k sits on line k + 2 (header = line 1)
    return write(path, f"text{sep}label\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_skip_mode_keeps_every_good_row_after_an_unbalanced_quote(tmp_path, suffix, sep):
    path = _csv_with_unbalanced_quote(tmp_path / f"d{suffix}", sep=sep)
    ds = load_dataset(path, on_bad_rows="skip")
    if sep == ",":
        # count in = kept + listed: the one bad row is listed, the 419 after and before are kept
        assert len(ds) + len(ds.skipped) == 420
        assert [(r.line, "quote" in r.reason) for r in ds.skipped] == [(5, True)]
        assert "第5条新闻" in ds.frame["text"].tolist() and "第419条新闻" in ds.frame["text"].tolist()
    else:
        # TSV is a no-quoting format: the stray quote is text, written as it was
        assert len(ds) == 420 and ds.skipped == []
        assert '"引号没有闭合 的一行' in ds.frame["text"].tolist()


def test_raise_mode_blames_the_quote_on_its_own_line(tmp_path):
    path = _csv_with_unbalanced_quote(tmp_path / "d.csv")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.line == 5
    assert "quote" in err.value.reason and "found 1" not in err.value.reason
    assert "quote" in err.value.fix


def test_csv_quote_inside_a_quoted_field_is_reported_not_mangled(tmp_path):
    path = write(tmp_path / "d.csv", 'text,label\n正常,a\n"他说"你好" 引号,b\n另一条,b\n')
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.line == 3 and "quote" in err.value.reason
    ds = load_dataset(path, on_bad_rows="skip", split_ratios=(1, 0, 0))
    assert ds.texts("train") == ["正常", "另一条"] and [r.line for r in ds.skipped] == [3]


def test_tsv_keeps_quotes_as_written(tmp_path):
    path = write(tmp_path / "d.tsv", 'text\tlabel\n"他说"你好" 引号\t体育\n"a\tb"\t体育\n')
    ds = load_dataset(path, split_ratios=(1, 0, 0))
    # the first is not a well-formed quoted field, so it is text; the second is (pandas writes these)
    assert ds.texts("train") == ['"他说"你好" 引号', "a\tb"]


# --- case 2: the data fingerprint covers content, not the path ---------------------------------


def test_content_fingerprint_sees_shifted_labels_not_the_path(tmp_path):
    folder = titles(tmp_path / "a", "一\t0\n二\t1\n三\t2\n")
    shifted = titles(tmp_path / "b", "一\t1\n二\t2\n三\t0\n")
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    base = load_dataset(folder).content_fingerprint()
    assert base == load_dataset(copy).content_fingerprint()  # same content elsewhere: same
    assert base != load_dataset(shifted).content_fingerprint()  # same sizes, other labels: differs
    assert len(base) >= 16


# --- case 3: classes and formats ---------------------------------------------------------------


def test_titles_class_without_training_rows_is_refused(tmp_path):
    folder = titles(tmp_path, "一\t0\n二\t1\n", dev="开发\t2\n", test="测试\t2\n")
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert err.value.path.name == "dev.txt" and err.value.line == 1
    assert "stocks" in err.value.reason and "no train" in err.value.reason
    ds = load_dataset(folder, on_bad_rows="skip")
    assert len(ds) + len(ds.skipped) == 4 and ds.sizes() == {"train": 2, "dev": 0, "test": 0}


def _cnews(folder: Path, train_rows: list[str]) -> Path:
    write(folder / "cnews.train.txt", "\n".join(train_rows) + "\n")
    write(folder / "cnews.val.txt", "体育\t验证\n")
    write(folder / "cnews.test.txt", "体育\t测试\n")
    return folder


def test_cnews_swapped_row_is_reported_not_a_new_class(tmp_path):
    rows = [f"{label}\t{label}新闻{i}" for i in range(3) for label in CNEWS_LABELS]
    rows.insert(7, "一篇正文被放在了前面\t财经")  # text<TAB>label: swapped; line 8
    folder = _cnews(tmp_path, rows)
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert err.value.line == 8 and "swapped" in err.value.reason
    ds = load_dataset(folder, on_bad_rows="skip")
    assert ds.label_names == list(CNEWS_LABELS) and [r.line for r in ds.skipped] == [8]


def test_jsonl_integer_label_among_names_is_reported(tmp_path):
    lines = [f'{{"text": "文本{i}", "label": "{n}"}}' for i, n in enumerate(["体育", "财经"] * 4)]
    lines.insert(3, '{"text": "整数标签", "label": 7}')  # line 4
    path = write(tmp_path / "d.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        load_dataset(path)
    assert err.value.line == 4 and "integer" in err.value.reason
    ds = load_dataset(path, on_bad_rows="skip")
    assert ds.label_names == ["体育", "财经"] and len(ds) + len(ds.skipped) == 9


def test_titles_and_table_files_in_one_folder_is_ambiguous(tmp_path):
    titles(tmp_path, "一\t0\n二\t1\n")
    write(tmp_path / "train.csv", "text,label\n一,a\n")
    with pytest.raises(DataError) as err:
        detect_format(tmp_path)
    assert "titles" in err.value.reason and "table" in err.value.reason
    assert "format" in err.value.fix
    assert load_dataset(tmp_path, format="titles").format == "titles"  # explicit choice still works


def test_corpus_reads_upper_case_txt_and_reports_nested_folders(tmp_path):
    for cls in ("体育", "财经"):
        for i in range(5):
            write(tmp_path / cls / f"{i}.txt", f"{cls}文章{i}")
    write(tmp_path / "体育" / "5.TXT", "大写后缀的文章")
    assert detect_format(tmp_path) == "corpus"
    ds = load_dataset(tmp_path)
    assert "大写后缀的文章" in ds.frame["text"].tolist() and len(ds) == 11
    write(tmp_path / "财经" / "2019" / "a.txt", "嵌套文件夹里的文章")
    with pytest.raises(DataError) as err:
        load_dataset(tmp_path)
    assert err.value.path.name == "2019" and "nested" in err.value.reason
    assert len(load_dataset(tmp_path, on_bad_rows="skip").skipped) == 1


# --- case 8, data half: unclear messages for line ends, encodings and trailing TABs ------------


def test_trailing_tab_after_the_label_is_accepted(tmp_path):
    folder = titles(tmp_path, "一\t0\t\n二\t1\t\r\n")
    assert load_dataset(folder).labels("train") == [0, 1]
    path = write(tmp_path / "t.tsv", "text\tlabel\n甲\ta\t\n乙\tb\n")
    assert load_dataset(path, split_ratios=(1, 0, 0)).texts("train") == ["甲", "乙"]


def test_cr_only_line_ends_are_lines(tmp_path):
    folder = titles(tmp_path, "\r".join(f"标题{i}\t{i % 3}" for i in range(301)) + "\r")
    ds = load_dataset(folder)
    assert ds.sizes()["train"] == 301 and ds.labels("train")[:4] == [0, 1, 2, 0]
    write(folder / "train.txt", "一\t0\r二\tx\r三\t1\r")
    with pytest.raises(DataError) as err:
        load_dataset(folder)
    assert err.value.line == 2  # line numbers still count the CR-ended lines


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_file_is_named_with_the_fix(tmp_path, encoding):
    folder = titles(tmp_path, "")
    write(folder / "train.txt", "第一条\t0\n第二条\t1\n", encoding=encoding)
    with pytest.raises(DataError) as err:
        load_dataset(folder, on_bad_rows="skip")  # a whole-file problem: raised even when skipping
    assert err.value.path.name == "train.txt" and "UTF-16" in err.value.reason
    assert "iconv -f UTF-16" in err.value.fix


def test_csv_is_streamed_not_read_whole(tmp_path, monkeypatch):
    # A 1.6 GB CSV read whole is ~1.6 GB of bytes plus the decoded text and a list of its lines;
    # the reader must walk the file instead (bounded memory: benchmarks/bench_scale.py check-csv).
    # Multi-line quoted fields, a BOM and a bad row after them still read as before.
    path = write(tmp_path / "d.csv", '\ufefftext,label\n"第一行\n第二行，含逗号",a\n"坏"引号,b\n第三条,b\n')
    read_whole = Path.read_bytes

    def refuse(self):
        if self == path:
            raise AssertionError("the CSV was read whole")
        return read_whole(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    ds = load_dataset(path, on_bad_rows="skip", split_ratios=(1, 0, 0))
    assert ds.texts("train") == ["第一行\n第二行，含逗号", "第三条"]
    assert [(b.line, "malformed quotes" in b.reason) for b in ds.skipped] == [(4, True)]
