"""`nbutils data split`: dedupe, conflicting labels, a grouped stratified split, written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nbutils.cli import main as cli
from nbutils.core.errors import NbutilsError
from nbutils.data.dataset import load_dataset
from nbutils.data.split import SplitSettings, split_file

NEWS = Path(__file__).parent / "fixtures" / "own-data-mini" / "news.csv"
COLUMNS = dict(text_column="headline", label_column="topic")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sides(out: Path, suffix: str = ".csv", **columns) -> dict[str, set[str]]:
    ds = load_dataset(out, **(columns or COLUMNS))
    assert {p.name for p in out.iterdir()} == {f"train{suffix}", f"dev{suffix}", f"test{suffix}", "split.json"}
    return {split: set(ds.texts(split)) for split in ("train", "dev", "test")}


def test_the_fixture_comes_out_deduplicated_without_conflicts_or_leakage(tmp_path):
    out = tmp_path / "news"
    record = split_file(NEWS, out, SplitSettings(**COLUMNS, ignore_whitespace=True), log=lambda *_: None)
    found = sides(out)
    assert not (found["train"] & found["dev"] or found["train"] & found["test"] or found["dev"] & found["test"])
    ds = load_dataset(out, **COLUMNS)
    quality = ds.quality()
    assert quality["conflicting_labels"]["count"] == 0
    assert all(d["count"] == 0 for d in quality["duplicates"].values())
    removed = record["removed"]
    assert record["rows_read"] == 335 == record["rows_kept"] + sum(removed.values())
    assert removed["whitespace_duplicates"] > 0 and removed["exact_duplicates"] > 0
    assert record["conflicting_texts"]["count"] == 1 and removed["conflicting_label_rows"] == 2
    [conflict] = record["conflicting_texts"]["listed"]
    assert len(conflict["labels"]) == 2 and conflict["text"] not in set().union(*found.values())
    assert {s: o["rows"] for s, o in record["outputs"].items()} == ds.sizes()
    assert abs(ds.sizes()["train"] / len(ds) - 0.8) < 0.03
    header = (out / "train.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,headline,topic"  # the user's columns, the other ones included
    assert json.loads((out / "split.json").read_text(encoding="utf-8")) == record


def test_whitespace_variants_are_kept_unless_asked(tmp_path):
    record = split_file(NEWS, tmp_path / "exact", SplitSettings(**COLUMNS), log=lambda *_: None)
    assert record["removed"]["whitespace_duplicates"] == 0
    spaced = split_file(NEWS, tmp_path / "spaced", SplitSettings(**COLUMNS, ignore_whitespace=True),
                        log=lambda *_: None)
    assert spaced["rows_kept"] < record["rows_kept"]


def test_a_rerun_is_idempotent_and_a_different_one_refuses_to_overwrite(tmp_path):
    out, said = tmp_path / "news", []
    split_file(NEWS, out, SplitSettings(**COLUMNS), log=said.append)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    split_file(NEWS, out, SplitSettings(**COLUMNS), log=said.append)
    assert "nothing to do" in said[-1]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(NbutilsError, match="refusing to overwrite") as err:
        split_file(NEWS, out, SplitSettings(**COLUMNS, seed=7), log=said.append)
    assert "--overwrite" in err.value.fix
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    split_file(NEWS, out, SplitSettings(**COLUMNS, seed=7), overwrite=True, log=said.append)
    assert {p.name: p.read_bytes() for p in out.iterdir()} != before
    assert [p.name for p in tmp_path.iterdir()] == ["news"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", broken)
    with pytest.raises(OSError):
        split_file(NEWS, tmp_path / "news", SplitSettings(**COLUMNS), log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_jsonl_in_jsonl_out_and_kept_conflicts_share_a_split(tmp_path):
    rows = [{"review": f"第{i}条评论", "stars": "好" if i % 2 else "差", "user": i} for i in range(60)]
    rows += [{"review": "第1条评论", "stars": "差", "user": 99}, {"review": "第2条评论", "stars": "差", "user": 100}]
    path = write(tmp_path / "reviews.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    settings = SplitSettings(text_column="review", label_column="stars", conflicts="keep", ratios=(0.6, 0.2, 0.2))
    record = split_file(path, tmp_path / "out", settings, log=lambda *_: None)
    assert record["removed"] == {"exact_duplicates": 1, "whitespace_duplicates": 0, "conflicting_label_rows": 0}
    assert record["conflicting_texts"]["count"] == 1
    written = {split: [json.loads(line) for line in (tmp_path / "out" / f"{split}.jsonl").read_text(
        encoding="utf-8").splitlines()] for split in ("train", "dev", "test")}
    homes = {split for split, recs in written.items() for r in recs if r["review"] == "第1条评论"}
    assert len(homes) == 1 and sum(r["review"] == "第1条评论" for recs in written.values() for r in recs) == 2
    assert all(set(r) == {"review", "stars", "user"} for recs in written.values() for r in recs)


def test_tsv_with_a_split_column_is_resplit_in_tsv(tmp_path):
    lines = ["text\tlabel\tsplit"] + [f"句子{i}\t{'甲乙'[i % 2]}\t{'train' if i < 30 else 'test'}" for i in range(40)]
    path = write(tmp_path / "all.tsv", "\n".join(lines) + "\n")
    record = split_file(path, tmp_path / "out", log=lambda *_: None)
    assert record["split_column_replaced"]
    assert (tmp_path / "out" / "dev.tsv").read_text(encoding="utf-8").splitlines()[0] == "text\tlabel"
    sides(tmp_path / "out", ".tsv", text_column="text", label_column="label")


def test_the_command_line_names_its_own_flags(tmp_path, capsys):
    assert cli(["data", "split", str(NEWS), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no text column 'text' and no label column 'label'" in err
    assert "--text-column <column> and --label-column <column>" in err
    assert not (tmp_path / "out").exists()
    assert cli(["data", "split", str(NEWS), str(tmp_path / "out"), "--text-column", "headline",
                "--label-column", "topic", "--ratios", "0.7,0.15,0.15", "--seed", "3"]) == 0
    assert json.loads((tmp_path / "out" / "split.json").read_text(encoding="utf-8"))["settings"]["seed"] == 3
    assert cli(["data", "split", str(NEWS), str(tmp_path / "x"), "--ratios", "0.8,0.2"]) == 2
    assert "--ratios" in capsys.readouterr().err
