"""Read a text-classification dataset into one tidy table: ``text``, ``label`` (int id), ``split``.

Four layouts are understood (``format="auto"`` picks one from the folder contents):

- ``titles``: THUCNews titles, ``train.txt``/``dev.txt``/``test.txt`` of ``text<TAB>label_id``
  plus ``class.txt`` (class names in label-id order).
- ``cnews``: the long-article split, ``cnews.{train,val,test}.txt`` of ``label_name<TAB>article``.
- ``table``: CSV/TSV/JSONL with configurable text/label columns, either one file per split or
  one file (with a ``split`` column, or split here by label-stratified ratios). A table's label
  column may hold several labels per text (multi-label): a JSON list (``["体育", "娱乐"]``, in
  JSONL or as a CSV/TSV cell) is recognised as such, and ``label_delimiter`` (e.g. ``"|"``)
  splits plain cells. A multi-label dataset keeps a 0/1 ``label_matrix`` (rows x labels);
  its ``label_array`` then holds each text's rarest label, which stratifies splits and
  subsamples (see ``Dataset.multi_label``).
- ``corpus``: the raw THUCNews layout, one folder per class and one ``.txt`` per article,
  split here by label-stratified ratios.

Every bad row raises a :class:`~nbutils.core.errors.DataError` naming the file, the 1-based line, the
reason and a fix; with ``on_bad_rows="skip"`` such rows are left out and listed in
``Dataset.skipped`` instead. Problems with a whole file (missing file, missing column,
broken ``class.txt``) always raise.

Text is kept as written apart from the line ending and surrounding whitespace (the corpus
format also collapses whitespace runs inside an article, whose line breaks are layout).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from nbutils.core.errors import DataError, NbutilsError, entry_point
from nbutils.data.textstore import TextColumn, TextStore

SPLITS = ("train", "dev", "test")
FORMATS = ("auto", "titles", "cnews", "table", "corpus")
# The cnews split's classes in the order its published label ids use.
CNEWS_LABELS = ("体育", "财经", "房产", "家居", "教育", "科技", "时尚", "时政", "游戏", "娱乐")

# File-name stems accepted for each split ("val" is the cnews name for the dev split).
_SPLIT_STEMS = {"train": ("train",), "dev": ("dev", "val"), "test": ("test",)}
_TABLE_STEMS = {stem for stems in _SPLIT_STEMS.values() for stem in stems}
_SPLIT_VALUES = {"train": "train", "dev": "dev", "val": "dev", "valid": "dev",
                 "validation": "dev", "test": "test"}
_TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_ICONV_FIX = (
    "the file is not UTF-8 (Chinese text is often GB18030/GBK): convert it, e.g. "
    "`iconv -f GB18030 -t UTF-8 {path} > {path}.utf8`, and load the converted file"
)
_EXPECTED_LAYOUTS = (
    "titles: class.txt + train.txt/dev.txt/test.txt (text<TAB>label_id); "
    "cnews: cnews.train.txt/cnews.val.txt/cnews.test.txt (label_name<TAB>text); "
    "table: train/dev/test .csv/.tsv/.jsonl files, or a single such file; "
    "corpus: one sub-folder per class holding one .txt file per article"
)


@dataclass(frozen=True)
class BadRow:
    """A row left out with ``on_bad_rows="skip"``: where it is and why it was rejected."""

    path: Path
    line: int | None
    reason: str
    fix: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        return f"{where}: {self.reason}"


class Dataset:
    """One labelled dataset: texts, label ids and split of each row, and the ordered ``label_names``.

    The texts live in a :class:`~nbutils.data.textstore.TextStore` (a temporary file), not in memory;
    labels and splits are compact arrays. ``frame`` builds the familiar pandas table (text, label,
    split) on first use: convenient for small data, but it holds every text in memory, so code
    that must scale reads ``text_column(split)`` (lazy) and the array methods instead.
    """

    def __init__(self, frame: pd.DataFrame, label_names: list[str], *, source: str | Path,
                 format: str, skipped: list[BadRow] | None = None):
        missing = {"text", "label", "split"} - set(frame.columns)
        if missing:
            raise ValueError(f"frame lacks columns {sorted(missing)}")
        unknown = set(frame["split"]) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split value(s) {sorted(map(str, unknown))}")
        texts = TextStore(str(t) for t in frame["text"]).column()
        split_codes = np.asarray([SPLITS.index(s) for s in frame["split"]], dtype=np.int8)
        self._init(texts, np.asarray(frame["label"], dtype=np.int64), split_codes, label_names,
                   source=source, format=format, skipped=skipped)

    @classmethod
    def from_columns(cls, texts: TextColumn, labels, split_codes, label_names: list[str], *,
                     source: str | Path, format: str, skipped: list[BadRow] | None = None,
                     label_matrix=None) -> Dataset:
        """A dataset over stored texts; ``split_codes`` index :data:`SPLITS` (0 train, 1 dev, 2 test).

        ``label_matrix`` (rows x labels, 0/1) makes it multi-label; ``labels`` then holds the label
        each row is stratified by (:func:`stratification_labels`)."""
        ds = cls.__new__(cls)
        ds._init(texts, np.asarray(labels, dtype=np.int64), np.asarray(split_codes, dtype=np.int8),
                 label_names, source=source, format=format, skipped=skipped)
        if label_matrix is not None:
            matrix = np.asarray(label_matrix, dtype=np.uint8)
            if matrix.shape != (len(texts), len(ds.label_names)):
                raise ValueError(f"label_matrix has shape {matrix.shape}, expected "
                                 f"{(len(texts), len(ds.label_names))}")
            ds._matrix = matrix
        return ds

    def _init(self, texts, labels, split_codes, label_names, *, source, format, skipped):
        if not len(texts) == len(labels) == len(split_codes):
            raise ValueError("texts, labels and splits differ in length")
        self._texts, self._labels, self._splits = texts, labels, split_codes
        self._matrix: np.ndarray | None = None
        self._frame: pd.DataFrame | None = None
        self.label_names = list(label_names)
        self.source = Path(source)
        self.format = format
        self.skipped = list(skipped or [])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes().items())
        kind = "labels (multi-label)" if self.multi_label else "classes"
        return (f"Dataset({self.format}, {len(self.label_names)} {kind}, {sizes}, "
                f"skipped={len(self.skipped)}, source={str(self.source)!r})")

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def multi_label(self) -> bool:
        """Whether a text may carry several labels (``label_matrix``), not exactly one."""
        return self._matrix is not None

    def label_matrix(self, name: str | None = None) -> np.ndarray:
        """Rows x labels, 1 where the text carries the label (of one split, or of every row).

        A single-label dataset gives its one-hot matrix, so code written for multi-label reads
        either kind."""
        if self._matrix is None:
            labels = self.label_array(name)
            matrix = np.zeros((len(labels), len(self.label_names)), dtype=np.uint8)
            matrix[np.arange(len(labels)), labels] = 1
            return matrix
        return self._matrix if name is None else self._matrix[self._rows(name)]

    def label_sets(self, name: str | None = None) -> list[list[str]]:
        """The label names of each row (of one split, or of every row), in label order."""
        return [[self.label_names[i] for i in np.flatnonzero(row)] for row in self.label_matrix(name)]

    @property
    def frame(self) -> pd.DataFrame:
        """All rows as a DataFrame (text, label, split); built once, holds every text in memory."""
        if self._frame is None:
            self._frame = pd.DataFrame({
                "text": self._texts.tolist(), "label": self._labels.copy(),
                "split": np.asarray(SPLITS, dtype=object)[self._splits]})
        return self._frame

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.label_names)}

    def _rows(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise NbutilsError(f"unknown split {name!r}", fix=f"use one of {', '.join(SPLITS)}")
        return np.flatnonzero(self._splits == SPLITS.index(name))

    def split(self, name: str) -> pd.DataFrame:
        """The rows of one split (``train``, ``dev`` or ``test``), indexed from 0."""
        rows = self._rows(name)
        return pd.DataFrame({"text": self._texts[rows].tolist(), "label": self._labels[rows],
                             "split": np.full(len(rows), name, dtype=object)})

    def texts(self, name: str) -> list[str]:
        return self._texts[self._rows(name)].tolist()

    def text_column(self, name: str | None = None) -> TextColumn:
        """The texts of one split (or of every row), read from disk on demand."""
        return self._texts if name is None else self._texts[self._rows(name)]

    def labels(self, name: str) -> list[int]:
        return [int(x) for x in self._labels[self._rows(name)]]

    def label_array(self, name: str | None = None) -> np.ndarray:
        return self._labels if name is None else self._labels[self._rows(name)]

    def split_array(self) -> np.ndarray:
        """The split name of every row (object array)."""
        return np.asarray(SPLITS, dtype=object)[self._splits]

    def content_fingerprint(self) -> str:
        """A hash of what is in the dataset (texts, labels, splits, class names), not of where.

        Two copies of the same data give the same value wherever they live; shifting one label
        or editing one text changes it. blake2b over the columns: about 1 s per GB of text.
        """
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps(self.label_names, ensure_ascii=False).encode("utf-8"))
        digest.update(len(self._texts).to_bytes(8, "little"))
        # length-prefixed, so no separator can be forged inside a text; a TextStore column gives
        # its stored bytes (the same encoding) without decoding them: 500k articles, ~2x faster
        texts = self._texts
        chunks = (texts.iter_bytes() if hasattr(texts, "iter_bytes")
                  else (t.encode("utf-8", "surrogatepass") for t in texts))
        for data in chunks:
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        digest.update(np.ascontiguousarray(self._labels, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(self._splits, dtype=np.int8).tobytes())
        if self._matrix is not None:  # absent for single-label data: its fingerprint is unchanged
            digest.update(b"multi-label")
            digest.update(np.ascontiguousarray(self._matrix, dtype=np.uint8).tobytes())
        return digest.hexdigest()

    def sizes(self) -> dict[str, int]:
        counts = np.bincount(self._splits, minlength=len(SPLITS))
        return {s: int(counts[i]) for i, s in enumerate(SPLITS)}

    def class_counts(self) -> pd.DataFrame:
        """Rows per class (index: label names, in id order) and split (columns); for multi-label
        data, the rows carrying each label (a row counts once for each of its labels)."""
        n = len(self.label_names)
        if self._matrix is not None:
            table = np.stack([self._matrix[self._splits == i].sum(axis=0, dtype=np.int64)
                              for i in range(len(SPLITS))], axis=1)
            return pd.DataFrame(table, index=pd.Index(self.label_names, name="label"), columns=list(SPLITS))
        valid = (self._labels >= 0) & (self._labels < n)
        table = np.zeros((n, len(SPLITS)), dtype=np.int64)
        np.add.at(table, (self._labels[valid], self._splits[valid]), 1)
        return pd.DataFrame(table, index=pd.Index(self.label_names, name="label"), columns=list(SPLITS))

    def quality(self, max_examples: int = 5) -> dict:
        """Exact duplicates within each split, texts shared between splits, conflicting labels.

        Returns ``{"duplicates": {split: {"count", "examples": [{"text", "count"}]}},
        "leakage": {"count", "pairs": {"train/dev": n, ...}, "examples": [{"text", "splits"}]},
        "conflicting_labels": {"count", "examples": [{"text", "labels"}]}}``.
        ``duplicates.count`` is the number of rows that repeat an earlier row of the same split;
        ``leakage.count`` the number of distinct texts found in more than one split.
        Examples are listed in the order the texts first occur. Computed from one id per distinct
        text (``TextColumn.group_ids``): memory grows by a few bytes per row, not with the texts.
        """
        groups = self._texts.group_ids()
        n_groups = int(groups.max()) + 1 if len(groups) else 0
        first_row = np.full(n_groups, len(groups), dtype=np.int64)
        np.minimum.at(first_row, groups, np.arange(len(groups)))

        def text_of(group: int) -> str:
            return self._texts[int(first_row[group])]

        per_split = np.zeros((n_groups, len(SPLITS)), dtype=np.int64)
        np.add.at(per_split, (groups, self._splits), 1)
        duplicates = {}
        for i, s in enumerate(SPLITS):
            repeated = np.flatnonzero(per_split[:, i] > 1)  # group ids are in first-seen order
            duplicates[s] = {
                "count": int((per_split[repeated, i] - 1).sum()),
                "examples": [{"text": text_of(g), "count": int(per_split[g, i])}
                             for g in repeated[:max_examples]],
            }
        present = per_split > 0
        leaked = np.flatnonzero(present.sum(axis=1) > 1)
        pairs = {f"{a}/{b}": int((present[leaked, i] & present[leaked, j]).sum())
                 for i, a in enumerate(SPLITS) for j, b in enumerate(SPLITS) if j > i}
        # distinct (text, label) pairs: a text with more than one is labelled inconsistently
        # (multi-label: a text with two different label sets)
        label_ids, label_names = self._label_identity()
        width = len(label_names) + 1
        pair_keys = np.unique(groups * width + label_ids)
        pair_groups = pair_keys // width
        conflicting = np.unique(pair_groups[np.flatnonzero(np.diff(pair_groups) == 0)])
        conflict_examples = []
        for g in conflicting[:max_examples]:
            ids = sorted(int(k % width) for k in pair_keys[pair_groups == g])
            conflict_examples.append({"text": text_of(g), "labels": [label_names[i] for i in ids]})
        return {
            "duplicates": duplicates,
            "leakage": {"count": len(leaked), "pairs": pairs,
                        "examples": [{"text": text_of(g), "splits": [s for i, s in enumerate(SPLITS)
                                                                     if present[g, i]]}
                                     for g in leaked[:max_examples]]},
            "conflicting_labels": {"count": len(conflicting), "examples": conflict_examples},
        }

    def _label_identity(self) -> tuple[np.ndarray, list[str]]:
        """An id per row that two rows share exactly when their labels are the same, and names for
        the ids: the label itself, or for multi-label data the label set (``a+b``)."""
        if self._matrix is None:
            return self._labels, list(self.label_names)
        sets, ids = np.unique(self._matrix, axis=0, return_inverse=True)
        names = ["+".join(self.label_names[i] for i in np.flatnonzero(row)) or "(none)" for row in sets]
        return ids.reshape(-1).astype(np.int64), names

    def subsample(self, n_per_split: int | Mapping[str, int | None], seed: int = 42) -> Dataset:
        """A smaller dataset with the same class proportions per split, the same for the same seed.

        ``n_per_split`` is a row count for every split, or a dict ``{split: count}`` (splits not
        named, or given ``None``, are kept whole). A split smaller than its count is kept whole.
        """
        if isinstance(n_per_split, Mapping):
            unknown = set(n_per_split) - set(SPLITS)
            if unknown:
                raise NbutilsError(f"unknown split(s) {sorted(unknown)} in n_per_split",
                                   fix=f"use {', '.join(SPLITS)}")
            wanted = {s: n_per_split.get(s) for s in SPLITS}
        else:
            wanted = dict.fromkeys(SPLITS, n_per_split)
        keep = []
        labels = self._labels
        for split_index, s in enumerate(SPLITS):
            rows = np.flatnonzero(self._splits == split_index)
            n = wanted[s]
            if n is None or n >= len(rows):
                keep.append(rows)
                continue
            if n < 0:
                raise NbutilsError(f"negative subsample size {n} for split {s!r}")
            # One generator per split, so one split's size never changes another's sample.
            rng = np.random.default_rng([seed, split_index])
            classes, per_class = np.unique(labels[rows], return_counts=True)
            quotas = _largest_remainder(n, per_class / per_class.sum())
            for label, quota in zip(classes, quotas, strict=True):
                members = rows[labels[rows] == label]
                keep.append(rng.choice(members, size=quota, replace=False))
        index = np.sort(np.concatenate(keep)) if keep else np.array([], dtype=int)
        return Dataset.from_columns(self._texts[index], self._labels[index], self._splits[index],
                                    self.label_names, source=self.source, format=self.format,
                                    skipped=self.skipped,
                                    label_matrix=None if self._matrix is None else self._matrix[index])


def load_dataset(
    path: str | Path,
    format: str = "auto",
    *,
    text_column: str = "text",
    label_column: str = "label",
    on_bad_rows: str = "raise",
    split_seed: int = 42,
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    label_delimiter: str = "",
) -> Dataset:
    """Load the dataset at ``path`` (a folder, or one table file) into a :class:`Dataset`.

    ``format``: ``auto`` | ``titles`` | ``cnews`` | ``table`` | ``corpus``.
    ``text_column``/``label_column`` name the columns of a table. ``label_delimiter`` (tables
    only; e.g. ``"|"``) splits each label cell into several labels: the dataset is multi-label.
    Left empty, a label column holding JSON lists makes it multi-label too. ``on_bad_rows``: ``raise``
    (default) or ``skip`` (skipped rows are listed in ``Dataset.skipped``). ``split_seed`` and
    ``split_ratios`` (train, dev, test) decide the stratified split of a corpus or of a single
    table file without a ``split`` column.
    """
    path = Path(path)
    if format not in FORMATS:
        raise NbutilsError(f"unknown dataset format {format!r}", fix=f"use one of {', '.join(FORMATS)}")
    if on_bad_rows not in ("raise", "skip"):
        raise NbutilsError(f"on_bad_rows must be 'raise' or 'skip', not {on_bad_rows!r}")
    ratios = _check_ratios(split_ratios)
    if not path.exists():
        raise DataError(path, None, "no such file or folder",
                        fix="check the path, or fetch the data first (`nbutils data fetch NAME`)")
    if format == "auto":
        format = detect_format(path)
    if label_delimiter and format != "table":
        raise NbutilsError(f"a label delimiter ({label_delimiter!r}) applies to table files (CSV/TSV/JSONL), "
                           f"but {path} is in the {format} format, one label per text",
                           fix="leave the label delimiter empty (runner: -p data_label_delimiter=; "
                               "CLI: drop --label-delimiter), or convert the data to a table")
    if label_delimiter and label_delimiter.strip() != label_delimiter:
        raise NbutilsError(f"label delimiter {label_delimiter!r} has surrounding whitespace",
                           fix="pass the bare separator, e.g. '|' or ';' (whitespace around labels is stripped)")
    rows = _BadRows(on_bad_rows == "skip")
    if format == "titles":
        read = _read_titles(_folder(path, format), rows)
    elif format == "cnews":
        read = _read_cnews(_folder(path, format), rows)
    elif format == "table":
        read = _read_table(path, rows, text_column, label_column, ratios, split_seed, label_delimiter)
    else:
        read = _read_corpus(_folder(path, format), rows, ratios, split_seed)
    if not (read.split_codes == 0).any():
        raise DataError(path, None, "no usable training rows",
                        fix="check the files (or the skipped rows listed by `nbutils data check`)")
    return Dataset.from_columns(read.texts, read.labels, read.split_codes, read.names, source=path,
                                format=format, skipped=rows.skipped, label_matrix=read.matrix)


def detect_format(path: str | Path) -> str:
    """Name the layout of ``path`` (see the module docstring); raise if it is none of them."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return "table"
        raise DataError(path, None, f"cannot tell the dataset format of a {path.suffix or 'suffix-less'} file",
                        fix="pass a folder, or a .csv/.tsv/.jsonl file; expected " + _EXPECTED_LAYOUTS)
    names = {p.name for p in path.iterdir()}
    tables = sorted(n for n in names if Path(n).stem in _TABLE_STEMS and Path(n).suffix.lower() in _TABLE_SUFFIXES)
    text_layout = ("titles" if "class.txt" in names and "train.txt" in names
                   else "cnews" if any(n.startswith("cnews.") and n.endswith(".txt") for n in names) else None)
    if text_layout and tables:
        # Picking one would silently ignore the other set of files.
        raise DataError(path, None, f"both {text_layout} files and table files ({', '.join(tables)}) are here; "
                        "cannot tell which one is the dataset",
                        fix=f"pass format='{text_layout}' or format='table' (CLI: --data-format), "
                            "or move one set of files into its own folder")
    if text_layout:
        return text_layout
    if "train.txt" in names:
        # train.txt without class.txt: cnews-style if the first row starts with a label name.
        first = _first_data_line(path / "train.txt")
        if first is not None and "\t" in first and not first.rpartition("\t")[2].strip().isdigit():
            return "cnews"
        raise DataError(path / "class.txt", None, "missing class.txt next to train.txt (text<TAB>label_id rows)",
                        fix="add class.txt with one class name per line, in label-id order")
    if tables:
        return "table"
    if any(sub.is_dir() and not sub.name.startswith(".") and any(_article_files(sub))
           for sub in path.iterdir()):
        return "corpus"
    found = ", ".join(sorted(names)[:12]) or "nothing"
    raise DataError(path, None, f"cannot tell the dataset format of this folder (found: {found})",
                    fix="expected one of these layouts: " + _EXPECTED_LAYOUTS + "; or pass format=...")


# --- reading helpers ---------------------------------------------------------------------


class _BadRows:
    """Raise on a bad row, or (skip mode) remember it and let the caller move on."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.skipped: list[BadRow] = []

    def __call__(self, path: Path, line: int | None, reason: str, fix: str | None = None) -> None:
        if not self.skip:
            raise DataError(path, line, reason, fix=fix)
        self.skipped.append(BadRow(path, line, reason, fix))


def _decode(path: Path) -> tuple[str, bool]:
    """The file's text and whether it was clean UTF-8 (for small files: class.txt).

    Undecodable bytes become lone surrogates (``surrogateescape``) so the one bad line can be
    reported or skipped without losing the rest of the file.
    """
    data = path.read_bytes()
    if _looks_utf16(data):
        raise _utf16_error(path)
    try:
        text, clean = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, clean = data.decode("utf-8", "surrogateescape"), False
    if "\r" in text and "\n" not in text:
        # Classic-Mac line ends (CR only): those CRs are the lines; without this the whole file
        # is one line and every row is reported as one row with hundreds of fields.
        text = text.replace("\r", "\n")
    return text.removeprefix("\ufeff"), clean


def _utf16_error(path: Path) -> DataError:
    return DataError(path, None, "the file is UTF-16 (Windows 'Unicode'), not UTF-8",
                     fix=f"convert it: `iconv -f UTF-16 -t UTF-8 {path} > {path}.utf8`, and load the "
                         "converted file (or save as 'UTF-8' in your editor)")


def _line_separator(path: Path) -> bytes:
    """b"\n", or b"\r" for a classic-Mac file (CR line ends, no LF at all); UTF-16 is refused.
    Without this a CR-only file is one line whose rows all land in one row."""
    with open(path, "rb") as file:
        head = file.read(1 << 16)
    if _looks_utf16(head):
        raise _utf16_error(path)
    if b"\r" in head and b"\n" not in head and b"\n" not in path.read_bytes():
        return b"\r"
    return b"\n"


def _looks_utf16(data: bytes) -> bool:
    """A UTF-16 byte-order mark, or (no BOM) NUL bytes in every other position of the start."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    head = data[:2000]
    if len(head) < 4 or b"\x00" not in head:
        return False
    # ASCII and CJK text in UTF-16 both put many NULs on one parity; UTF-8 text has none.
    even, odd = head[0::2].count(0), head[1::2].count(0)
    return max(even, odd) >= len(head) // 8


def _undecodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def text_lines(path: str | Path) -> Iterator[str]:
    """A file of one text per line (what ``nbutils predict --file`` reads), streamed: every line
    without its ending, blank ones as they are, so result row i is line i. A line that is not
    UTF-8 is a :class:`DataError` naming the file and line, when it is reached; a missing file,
    a folder or a UTF-16 file is one at once."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "file not found", fix="pass a text file with one text per line")
    if path.is_dir():
        raise DataError(path, None, "is a folder", fix="pass a text file with one text per line")
    _line_separator(path)  # a UTF-16 file is refused now, before any work
    return (line for _, line in _lines(path, _BadRows(skip=False), keep_blank=True))


def _lines(path: Path, bad: _BadRows, keep_blank: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its ending) for each non-blank (or, with
    ``keep_blank``, every) decodable line.

    Streams the file (memory: one line), splitting on b"\\n" only: str.splitlines() would also
    break on \\x1c, \\x85, \\u2028... inside text. A line with bytes that are not UTF-8 is bad on
    its own; "\\n" never occurs inside a multi-byte character, so the other lines are unaffected.
    """
    if _line_separator(path) == b"\r":
        parts = path.read_bytes().split(b"\r")  # rare and old: read whole
        raws = (part + b"\n" for part in (parts[:-1] if parts[-1] == b"" else parts))
    else:
        raws = None
    with open(path, "rb") as file:
        for number, raw in enumerate(raws if raws is not None else file, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # BOM
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if raw.strip() or keep_blank:
                    bad(path, number, "undecodable bytes (not UTF-8)", _ICONV_FIX.format(path=path))
                continue
            line = line.removesuffix("\n").removesuffix("\r")
            if not keep_blank and not line.strip():
                continue
            yield number, line


def _first_data_line(path: Path) -> str | None:
    try:
        return next(_lines(path, _BadRows(skip=True)), (0, None))[1]
    except OSError:
        return None


def _folder(path: Path, format: str) -> Path:
    if not path.is_dir():
        raise DataError(path, None, f"the {format} format is a folder, not a file",
                        fix=f"pass the folder; expected {_EXPECTED_LAYOUTS}")
    return path


def _split_files(folder: Path, patterns: tuple[str, ...], what: str) -> dict[str, Path]:
    """The one file per split matching ``patterns`` (e.g. ``cnews.{stem}.txt``)."""
    files = {}
    for split, stems in _SPLIT_STEMS.items():
        found = [folder / p.format(stem=s) for p in patterns for s in stems
                 if (folder / p.format(stem=s)).is_file()]
        if len(found) > 1:
            raise DataError(folder, None, f"more than one {split} file: {', '.join(f.name for f in found)}",
                            fix="keep exactly one file per split")
        if not found:
            expected = " or ".join(p.format(stem=s) for p in patterns for s in stems)
            raise DataError(folder / patterns[0].format(stem=stems[0]), None,
                            f"missing {split} file of the {what} layout (expected {expected})",
                            fix="add the file, or point at the folder that holds train, dev and test files")
        files[split] = found[0]
    return files


def _check_ratios(ratios) -> tuple[float, float, float]:
    values = tuple(float(r) for r in ratios)
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6 or values[0] == 0:
        raise NbutilsError(f"split_ratios must be three non-negative numbers (train, dev, test) summing "
                           f"to 1 with train > 0, not {tuple(ratios)}", fix="e.g. split_ratios=(0.8, 0.1, 0.1)")
    return values  # type: ignore[return-value]


def _largest_remainder(n: int, shares) -> list[int]:
    """Whole counts summing to ``n`` as close as possible to ``n * shares``."""
    exact = [n * float(s) for s in shares]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def stratified_split(labels, ratios=(0.8, 0.1, 0.1), seed: int = 42, groups=None) -> np.ndarray:
    """A split name per row: each class is shuffled with ``seed`` and cut by ``ratios``.

    With ``groups`` (e.g. the texts themselves) rows of one group always share a split, so a
    text that occurs twice cannot be trained on and then tested on; groups are stratified by
    their first row's label and the ratios count groups. Written out rather than sklearn's
    train_test_split (twice) because that refuses classes with a single member and rounds the
    dev/test sizes over the whole set, not per class.
    """
    ratios = _check_ratios(ratios)
    labels = np.asarray(labels)
    if groups is not None:
        # Groups numbered in first-seen order: with no repeated text the split equals the
        # ungrouped one, and no fixed-width copy of long texts is made (np.unique would).
        group_of_row, _ = pd.factorize(pd.Series(list(groups), dtype=object))
        _, first = np.unique(group_of_row, return_index=True)
        return stratified_split(labels[first], ratios, seed)[group_of_row]
    out = np.empty(len(labels), dtype=object)
    rng = np.random.default_rng(seed)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for split, count in zip(SPLITS, _largest_remainder(len(members), ratios), strict=True):
            out[members[start:start + count]] = split
            start += count
    return out


def text_groups(texts) -> np.ndarray:
    """A group id per row, equal for exactly equal texts (numbered in first-seen order)."""
    return pd.factorize(pd.Series(list(texts), dtype=object))[0]


def grouped_stratified_folds(labels, groups, folds: int, seed: int = 42) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(fit rows, scored rows)`` per fold, for ``cross_val_predict(cv=...)``: every group's rows
    (e.g. a text and its duplicates) fall into one fold, so no row is scored by a model fitted on
    its copy. sklearn's StratifiedKFold (shuffled, seeded) deals the groups, stratified by each
    group's first label: with no repeated group the folds are StratifiedKFold's on the rows."""
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    group_of_row, _ = pd.factorize(pd.Series(list(groups), dtype=object))
    _, first = np.unique(group_of_row, return_index=True)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_of_group = np.empty(len(first), dtype=np.int64)
    for fold, (_, scored) in enumerate(splitter.split(np.zeros(len(first)), labels[first])):
        fold_of_group[scored] = fold
    fold_of_row = fold_of_group[group_of_row]
    rows = np.arange(len(labels))
    return [(rows[fold_of_row != k], rows[fold_of_row == k]) for k in range(folds)]


def order_label_names(names) -> list[str]:
    """The cnews order for exactly the cnews classes; numeric order for integers; else sorted."""
    names = set(names)
    if names == set(CNEWS_LABELS):
        return list(CNEWS_LABELS)
    if names and all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return sorted(names)


class _Columns(NamedTuple):
    """What a reader returns: stored texts, label ids, split codes (index into SPLITS), names."""

    texts: TextColumn
    labels: np.ndarray
    split_codes: np.ndarray
    names: list[str]
    matrix: np.ndarray | None = None  # multi-label: rows x labels, 0/1


_NO_SPLIT = -1  # split code of a row whose split is decided after reading (corpus, single table)
# Joins the labels of one multi-label row into one key while reading; never part of a label name
# (a label holding it is a bad row).
_LABEL_SEP = "\x1f"


def stratification_labels(label_matrix) -> np.ndarray:
    """For each row of a 0/1 label matrix, the id of its rarest label (fewest rows in the whole
    matrix; ties: the lower id): what multi-label splits and subsamples are stratified by, so rare
    labels reach every split. A row without labels gets ``n_labels``."""
    matrix = np.asarray(label_matrix, dtype=bool)
    counts = matrix.sum(axis=0)
    rarity = np.where(matrix, counts[None, :], np.iinfo(np.int64).max)
    key = rarity.argmin(axis=1).astype(np.int64) if matrix.shape[1] else np.zeros(len(matrix), np.int64)
    key[~matrix.any(axis=1)] = matrix.shape[1]
    return key


def _split_codes(splits) -> np.ndarray:
    return np.asarray([SPLITS.index(s) for s in splits], dtype=np.int8)


class _NamedRows:
    """Rows whose labels are names; ids are assigned once every label has been seen.

    Texts go straight to a TextStore; per row only small numbers stay in memory (label and file
    numbers, line, split), so reading a 500k-article corpus holds no article in memory.
    """

    def __init__(self):
        self.store = TextStore()
        self.label_codes = array("i")  # index into self.label_list
        self.label_list: list[str] = []
        self._label_code: dict[str, int] = {}
        self.splits = array("b")
        self.files: list[Path] = []
        self._file_code: dict[Path, int] = {}
        self.file_codes = array("i")
        self.lines = array("q")  # -1: no line number
        self.integer_rows: list[int] = []  # rows whose label was a JSON integer, not a string
        self.multi = False  # some row held several labels (or a label delimiter was given)
        self.label_delimiter = ""  # table cells are cut into labels at this string (empty: JSON lists only)

    @property
    def labels(self) -> list[str]:
        return [self.label_list[c] for c in self.label_codes]

    def add(self, text: str, label: str, split: str | None, path: Path, line: int | None,
            *, integer_label: bool = False) -> None:
        if integer_label:
            self.integer_rows.append(len(self.label_codes))
        self.store.append(text)
        code = self._label_code.get(label)
        if code is None:
            code = self._label_code[label] = len(self.label_list)
            self.label_list.append(label)
        self.label_codes.append(code)
        self.splits.append(_NO_SPLIT if split is None else SPLITS.index(split))
        file_code = self._file_code.get(path)
        if file_code is None:
            file_code = self._file_code[path] = len(self.files)
            self.files.append(path)
        self.file_codes.append(file_code)
        self.lines.append(-1 if line is None else line)

    def where(self, i: int) -> tuple[Path, int | None]:
        line = self.lines[i]
        return self.files[self.file_codes[i]], None if line < 0 else line

    def _suspect_rows(self, bad: _BadRows, label_codes: np.ndarray, swapped_fix: str) -> np.ndarray:
        """Rows that would silently become a class of their own: swapped label/text, or an
        integer label among label names. Returns their row numbers."""
        suspects = []
        counts = np.bincount(label_codes, minlength=len(self.label_list)) if len(label_codes) else np.zeros(0, int)
        for code in np.flatnonzero(counts == 1):  # a label seen once: a swapped row's "label" is its text
            i = int(np.flatnonzero(label_codes == code)[0])
            text, label = self.store.read(i), self.label_list[code]
            if text != label and text in self._label_code:
                bad(*self.where(i), f"label and text look swapped: the label {label[:40]!r} occurs only "
                    f"here and the text is the class name {text!r}", swapped_fix)
                suspects.append(i)
        if self.integer_rows:
            integer_set = set(self.integer_rows)
            named = {self.label_list[c] for i, c in enumerate(label_codes) if i not in integer_set}
            if named and not all(re.fullmatch(r"-?\d+", n) for n in named):
                for i in self.integer_rows:
                    label = self.label_list[label_codes[i]]
                    if label not in named:
                        bad(*self.where(i), f"integer label {label} among label names "
                            f"({', '.join(sorted(named)[:5])}...)",
                            "write the class name as a string, like the other rows")
                        suspects.append(i)
        return np.array(sorted(set(suspects)), dtype=np.int64)

    def to_frame(self, bad: _BadRows, *, names_from_train: bool, ratios=None, seed: int = 42,
                 swapped_fix: str = "put the class name in the label field and the text in the text field") -> _Columns:
        """Label names from the train rows (or all rows), then ids, then the split if needed."""
        label_codes = np.frombuffer(self.label_codes, dtype=np.int32) if self.label_codes else np.zeros(0, np.int32)
        splits = np.frombuffer(self.splits, dtype=np.int8) if self.splits else np.zeros(0, np.int8)
        suspect = np.zeros(len(label_codes), dtype=bool)
        suspect[self._suspect_rows(bad, label_codes, swapped_fix)] = True
        naming = ((splits == 0) if names_from_train else np.ones(len(label_codes), dtype=bool)) & ~suspect
        if self.multi:
            return self._multi_label_columns(bad, label_codes, splits, naming_rows=naming,
                                             suspect=suspect, ratios=ratios, seed=seed)
        used = np.unique(label_codes[naming])
        names = order_label_names(self.label_list[c] for c in used)
        ids = {name: i for i, name in enumerate(names)}
        id_of_code = np.array([ids.get(name, -1) for name in self.label_list], dtype=np.int64)
        row_ids = id_of_code[label_codes] if len(label_codes) else np.zeros(0, np.int64)
        row_ids[suspect] = -2  # already reported
        for i in np.flatnonzero(row_ids == -1):
            label = self.label_list[label_codes[i]]
            bad(*self.where(int(i)), f"unknown label {label!r}: not among the train split's labels "
                f"({', '.join(names)})",
                "correct the label, or add training rows for it (a class with no training "
                "rows cannot be learned)")
        keep = np.flatnonzero(row_ids >= 0)
        texts = self.store.column(keep)
        labels = row_ids[keep]
        if ratios is None:
            codes = splits[keep]
        else:  # copies of a text share a split: no train/test leak
            codes = _split_codes(stratified_split(labels, ratios, seed, groups=texts.group_ids()))
        return _Columns(texts, labels, codes, names)

    def _multi_label_columns(self, bad: _BadRows, label_codes: np.ndarray, splits: np.ndarray, *,
                             naming_rows: np.ndarray, suspect: np.ndarray, ratios, seed: int) -> _Columns:
        """``to_frame`` for multi-label rows: every distinct label set read is one code here; the
        label names are the labels in the naming rows' sets, each row becomes a 0/1 matrix row."""
        sets = [label.split(_LABEL_SEP) for label in self.label_list]
        names = order_label_names({part for code in np.unique(label_codes[naming_rows]) for part in sets[code]})
        ids = {name: i for i, name in enumerate(names)}
        set_rows = np.zeros((len(sets), len(names)), dtype=np.uint8)
        known = np.ones(len(sets), dtype=bool)
        for code, parts in enumerate(sets):
            for part in parts:
                if part in ids:
                    set_rows[code, ids[part]] = 1
                else:
                    known[code] = False
        usable = known[label_codes] & ~suspect if len(label_codes) else np.zeros(0, bool)
        for i in np.flatnonzero(~usable & ~suspect):
            unknown = [p for p in sets[label_codes[i]] if p not in ids]
            bad(*self.where(int(i)), f"unknown label(s) {', '.join(map(repr, unknown))}: not among the train "
                f"split's labels ({', '.join(names)})",
                "correct the label, or add training rows for it (a label with no training rows cannot be learned)")
        keep = np.flatnonzero(usable)
        texts = self.store.column(keep)
        matrix = set_rows[label_codes[keep]]
        key = stratification_labels(matrix)
        if ratios is None:
            codes = splits[keep]
        else:  # copies of a text share a split: no train/test leak
            codes = _split_codes(stratified_split(key, ratios, seed, groups=texts.group_ids()))
        return _Columns(texts, key, codes, names, matrix)


def _label_parts(value, delimiter: str) -> list[str] | None:
    """The labels of one multi-label cell: a JSON list (a list in JSONL, or a cell that reads as
    one), or a string cut at ``delimiter``. ``None``: a plain single label. Raises ValueError with
    the reason for a cell that cannot be read."""
    if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            value = parsed
    if isinstance(value, list):
        if any(isinstance(v, (dict, list, bool, float)) or v is None for v in value):
            raise ValueError("a label list may hold only label names (strings) or integers")
        parts = [str(v).strip() for v in value]
    elif delimiter and isinstance(value, (str, int)) and not isinstance(value, bool):
        parts = [p.strip() for p in str(value).split(delimiter)]
    else:
        return None
    if not parts or parts == [""]:
        raise ValueError("no labels (an empty label list)")
    if any(not p for p in parts):
        raise ValueError("an empty label between delimiters")
    if any(_LABEL_SEP in p for p in parts):
        raise ValueError("a label holds the control character \\x1f")
    return sorted(set(parts))


# --- the formats -----------------------------------------------------------------------


def read_class_names(path: Path) -> list[str]:
    """Class names from ``class.txt``, one per line in label-id order (trailing newline optional)."""
    if not path.is_file():
        raise DataError(path, None, "missing class.txt",
                        fix="add class.txt with one class name per line, in label-id order")
    text, clean = _decode(path)
    if not clean:
        raise DataError(path, None, "undecodable bytes (not UTF-8)", fix=_ICONV_FIX.format(path=path))
    lines = [line.removesuffix("\r").strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    seen: dict[str, int] = {}
    for number, name in enumerate(lines, 1):
        if not name:
            raise DataError(path, number, "empty class name (a blank line would shift every later label id)",
                            fix="remove the blank line, or give the class a name")
        if name in seen:
            raise DataError(path, number, f"duplicate class name {name!r} (also on line {seen[name]})",
                            fix="give every class a distinct name")
        seen[name] = number
    if not lines:
        raise DataError(path, None, "class.txt lists no classes", fix="one class name per line, in label-id order")
    return lines


def _read_titles(folder: Path, bad: _BadRows):
    names = read_class_names(folder / "class.txt")
    n_classes = len(names)
    texts = TextStore()
    labels = array("q")
    splits = array("b")
    trained: set[int] = set()
    # Files come in split order (train first), so dev/test rows can be checked against train's classes.
    for split, path in _split_files(folder, ("{stem}.txt",), "titles").items():
        for number, line in _lines(path, bad):
            fields = _drop_empty_tail(line.split("\t"), 2)
            if len(fields) != 2:
                if len(fields) == 1:
                    bad(path, number, "no TAB separator (expected text<TAB>label_id)",
                        "separate the text from the label id with one TAB character")
                else:
                    bad(path, number, f"expected 2 TAB-separated fields (text, label_id), found {len(fields)}",
                        "replace TAB characters inside the text with spaces")
                continue
            text, label = fields[0].strip(), fields[1].strip()
            if not text:
                bad(path, number, "empty text", "remove the line or fill in the text")
                continue
            if not (label.isascii() and label.isdigit()):
                bad(path, number, f"label id {label!r} is not a non-negative integer",
                    f"use the class's line number in class.txt, counting from 0 (0..{n_classes - 1})")
                continue
            label_id = int(label)
            if label_id >= n_classes:
                bad(path, number, f"label id {label_id} is outside class.txt ({n_classes} classes, ids 0..{n_classes - 1})",
                    "fix the label id, or add the missing class names to class.txt")
                continue
            if split == "train":
                trained.add(label_id)
            elif label_id not in trained:
                bad(path, number, f"class {names[label_id]!r} (id {label_id}) has no train rows, "
                    "so a model cannot learn it", "add training rows for this class, or fix the label id")
                continue
            texts.append(text)
            labels.append(label_id)
            splits.append(SPLITS.index(split))
    return _Columns(texts.column(), np.array(labels, dtype=np.int64), np.array(splits, dtype=np.int8), names)


def _drop_empty_tail(fields: list[str], wanted: int) -> list[str]:
    """Fields beyond ``wanted`` that are all blank (a trailing TAB or comma) are dropped."""
    if len(fields) > wanted and not any(f.strip() for f in fields[wanted:]):
        return fields[:wanted]
    return fields


def _read_cnews(folder: Path, bad: _BadRows):
    files = _split_files(folder, ("cnews.{stem}.txt", "{stem}.txt"), "cnews")
    rows = _NamedRows()
    for split, path in files.items():
        for number, line in _lines(path, bad):
            label, sep, text = line.partition("\t")
            label, text = label.strip(), text.strip()
            if not sep:
                bad(path, number, "no TAB separator (expected label_name<TAB>text)",
                    "separate the label name from the text with one TAB character")
            elif not label:
                bad(path, number, "empty label", "put the class name before the TAB")
            elif not text:
                bad(path, number, "empty text", "remove the line or fill in the text")
            else:
                rows.add(text, label, split, path, number)
    return rows.to_frame(bad, names_from_train=True, swapped_fix="write label_name<TAB>text")


def _article_files(class_dir: Path) -> list[Path]:
    """A class folder's article files: ``*.txt`` in any letter case, hidden files left out."""
    return [p for p in class_dir.iterdir()
            if p.suffix.lower() == ".txt" and not p.name.startswith(".") and p.is_file()]


def _read_corpus(folder: Path, bad: _BadRows, ratios, seed: int):
    rows = _NamedRows()
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        for nested in sorted(p for p in class_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            bad(nested, None, f"nested folder inside class folder {class_dir.name!r}: its files are not read",
                f"move its .txt files up into {class_dir.name}/, or make it a class folder of its own")
        # Sorted so the split depends only on the seed, never on the file system's listing order.
        for path in sorted(_article_files(class_dir)):
            data = path.read_bytes()
            try:
                content = data.decode("utf-8").removeprefix("\ufeff")
            except UnicodeDecodeError as err:
                bad(path, data.count(b"\n", 0, err.start) + 1, "undecodable bytes (not UTF-8)",
                    _ICONV_FIX.format(path=path))
                continue
            text = " ".join(content.split())
            if not text:
                bad(path, None, "empty text (the file is empty or only whitespace)", "remove the file")
                continue
            # the class folder stands in for the file: a corpus row is never reported later
            # (every label is known), and 500k Path objects would cost ~100 MB
            rows.add(text, class_dir.name, None, class_dir, None)
    if not len(rows.store):
        raise DataError(folder, None, "no articles found (expected <class name>/<article>.txt files)",
                        fix="point at the folder that holds one sub-folder per class")
    return rows.to_frame(bad, names_from_train=False, ratios=ratios, seed=seed)


def _read_table(path: Path, bad: _BadRows, text_column: str, label_column: str, ratios, seed: int,
                label_delimiter: str = ""):
    rows = _NamedRows()
    rows.multi = bool(label_delimiter)
    rows.label_delimiter = label_delimiter
    if path.is_dir():
        kinds = sorted({suffix for suffix in _TABLE_SUFFIXES
                        if any((path / f"{stem}{suffix}").is_file() for stem in _TABLE_STEMS)})
        if not kinds:
            raise DataError(path, None, "no train/dev/test table files in this folder",
                            fix="name them train.csv, dev.csv, test.csv (or .tsv/.jsonl), or pass one file")
        patterns = tuple("{stem}" + suffix for suffix in kinds)
        for split, file in _split_files(path, patterns, "table").items():
            _read_table_file(file, bad, text_column, label_column, rows, split)
        return rows.to_frame(bad, names_from_train=True)
    has_split = _read_table_file(path, bad, text_column, label_column, rows, None)
    if has_split:
        return rows.to_frame(bad, names_from_train=True)
    return rows.to_frame(bad, names_from_train=False, ratios=ratios, seed=seed)


def table_records(path: str | Path, text_column: str = "text", label_column: str = "label", *,
                  on_bad_rows: str = "raise") -> tuple[str, list[tuple[int, dict]], list[BadRow]]:
    """One CSV/TSV/JSONL file as written: ``(kind, [(line, record)], skipped)``, each record with
    all its columns (values as strings for CSV/TSV, as parsed for JSONL), read and checked like
    :func:`load_dataset` reads it (quoting, encoding, field counts, the two columns present).
    Rows without a text or a label are bad rows; ``nbutils data split`` rewrites what it keeps."""
    path = Path(path)
    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if not path.is_file() or kind is None:
        raise DataError(path, None, "not a CSV/TSV/JSONL file",
                        fix="pass one table file (.csv, .tsv or .jsonl) holding every row")
    bad = _BadRows(on_bad_rows == "skip")
    reader = _jsonl_records if kind == "jsonl" else _delimited_records
    records = []
    for number, record in reader(path, bad, kind, (text_column, label_column)):
        text, label = record.get(text_column), record.get(label_column)
        if not isinstance(text, str) or not text.strip():
            bad(path, number, f"missing or empty {text_column!r}", "remove the row or fill in the text")
        elif label is None or isinstance(label, (dict, bool, float)) or not str(label).strip():
            bad(path, number, f"missing or invalid {label_column!r} ({label!r})",
                "give every row a label name (a string) or an integer label")
        else:
            records.append((number, record))
    return kind, records, bad.skipped


def _read_table_file(path: Path, bad: _BadRows, text_column: str, label_column: str,
                     rows: _NamedRows, split: str | None) -> bool:
    """Append the rows of one CSV/TSV/JSONL file; return whether it had a ``split`` column."""
    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, None, f"unsupported table file type {path.suffix!r}",
                        fix="use .csv, .tsv or .jsonl")
    reader = _jsonl_records if kind == "jsonl" else _delimited_records
    has_split = None
    for number, record in reader(path, bad, kind, (text_column, label_column)):
        if has_split is None:
            has_split = "split" in record
        text, label = record.get(text_column), record.get(label_column)
        if text is None:
            bad(path, number, f"missing {text_column!r}", f"give every row a {text_column!r} value")
            continue
        try:
            parts = _label_parts(label, rows.label_delimiter)
        except ValueError as err:
            bad(path, number, f"{label_column!r} {label!r}: {err}",
                'write the labels as a JSON list (["a", "b"]) or separated by the label delimiter '
                "(runner: -p data_label_delimiter='|'; CLI: --label-delimiter '|')")
            continue
        if parts is not None:
            rows.multi = True
            label = _LABEL_SEP.join(parts)
        elif label is None or isinstance(label, (dict, list, bool, float)):
            bad(path, number, f"missing or invalid {label_column!r} ({label!r})",
                "give every row a label name (a string) or an integer label, or several labels "
                'as a JSON list (["a", "b"])')
            continue
        if not isinstance(text, str):
            bad(path, number, f"{text_column!r} is not a string ({type(text).__name__})",
                "store the text as a string")
            continue
        integer_label = isinstance(label, int)
        text, label = text.strip(), str(label).strip()
        if not text:
            bad(path, number, "empty text", "remove the row or fill in the text")
            continue
        if not label:
            bad(path, number, "empty label", f"fill in the {label_column!r} value")
            continue
        row_split = split
        if split is None and has_split:
            value = str(record.get("split") or "").strip().lower()
            row_split = _SPLIT_VALUES.get(value)
            if row_split is None:
                bad(path, number, f"unknown split {value!r}", "use train, dev (or val) or test")
                continue
        rows.add(text, label, row_split, path, number, integer_label=integer_label)
    return bool(has_split)


def _missing_columns(path: Path, columns, wanted) -> None:
    absent = [c for c in wanted if c not in columns]
    if absent:
        raise ColumnError(path, wanted, absent, list(map(str, columns)), kind="column")


# Per entry point (nbutils.core.errors.entry_point): how the user names the text and the label column.
_COLUMN_OPTIONS = {
    "run": ("-p data_text_column=<column>", "-p data_label_column=<column>",
            "add {} to `nbutils run` (or set the same names in your profile, params/*.yaml)"),
    "notebook": ('data_text_column = "<column>"', 'data_label_column = "<column>"',
                 "set {} in the notebook's parameters cell"),
    "cli": ("--text-column <column>", "--label-column <column>", "pass {}"),
    "python": ("text_column=<column>", "label_column=<column>", "pass {}"),
}


class ColumnError(DataError):
    """A table without the text or the label column asked for. Its "how to fix" names the option
    that exists where the user came in (``-p data_text_column=`` under ``nbutils run``, the
    parameters-cell variable in a notebook, ``--text-column`` on the command line)."""

    def __init__(self, path: Path, wanted, absent, columns: list[str], *, kind: str = "column",
                 line: int = 1):
        self.wanted, self.absent, self.columns = tuple(wanted), list(absent), list(columns)
        roles = [role for role, name in zip(("text", "label"), self.wanted, strict=False) if name in absent]
        text_option, label_option, how = _COLUMN_OPTIONS[entry_point()]
        options = " and ".join(text_option if role == "text" else label_option for role in roles)
        asked = " and no ".join(f"{role} {kind} {name!r}" for role, name in zip(("text", "label"), self.wanted,
                                                                          strict=False) if name in absent)
        super().__init__(path, line, f"no {asked}; the {kind}s are: {', '.join(columns) or '(none)'}",
                         fix=how.format(options) + " naming yours")


class _LineFeed:
    """The file's physical lines for ``csv.reader``, read from disk as they are asked for.

    Memory holds one line and the start of the current row: ``mark()`` notes where a row
    starts, and ``restart_after_mark()`` re-reads from the line after it (a bad row costs only
    its first line). Lines split on b"\n" only (never str.splitlines(), which also breaks on
    \x1c, \u2028... inside text); "\n" never occurs inside a multi-byte UTF-8 character, so
    each line decodes on its own. Undecodable bytes become lone surrogates
    (``surrogateescape``) so the one bad row can be reported; ``clean`` turns False then.
    """

    def __init__(self, path: Path):
        if _line_separator(path) == b"\r":  # classic-Mac line ends: rare and old, read whole
            self.file = io.BytesIO(path.read_bytes().replace(b"\r", b"\n"))
        else:
            self.file = open(path, "rb")  # noqa: SIM115 (closed by close(), from the generator's finally)
        self.pos = 0  # index of the next line to hand out; line number = index + 1
        self.offset = 0  # byte offset of that line
        self.clean = True
        self.mark()

    def mark(self) -> None:
        self.mark_pos, self.mark_offset, self.first_line = self.pos, self.offset, None

    def restart_after_mark(self) -> None:
        """Continue with the line after the marked row's first line."""
        self.file.seek(self.mark_offset)
        self.pos, self.offset = self.mark_pos, self.mark_offset
        self._read()  # the first line is skipped, not handed out again
        self.mark()

    def _read(self) -> str | None:
        raw = self.file.readline()
        if not raw:
            return None
        if self.offset == 0 and raw.startswith(b"\xef\xbb\xbf"):  # BOM
            raw = raw[3:]
            self.offset = 3
        self.pos += 1
        self.offset += len(raw)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.clean = False
            return raw.decode("utf-8", "surrogateescape")

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self._read()
        if line is None:
            raise StopIteration
        if self.first_line is None:
            self.first_line = line
        return line

    def close(self) -> None:
        self.file.close()


def _quote_problem(err: csv.Error | None, n_lines: int, at_end: bool) -> str:
    if err is not None and "expected after" in str(err):
        return ("malformed quotes: a double quote inside a quoted field is not doubled, or text "
                "follows the closing quote")
    if at_end:
        return "unbalanced double quote: the quoted field opened on this line never closes before the end of the file"
    return (f"unbalanced double quote: the quoted field opened on this line runs over {n_lines} lines "
            "and does not end as a row")


def _delimited_records(path: Path, bad: _BadRows, kind: str, wanted) -> Iterator[tuple[int, dict]]:
    """Rows of a CSV/TSV file. Quoted fields may span lines, but a quote that does not close
    where a row ends costs only its own line: reading restarts on the next line, so one stray
    quote cannot swallow the rest of the file. TSV is a no-quoting format by convention, so a
    TSV line that is not well-formed quoting is read literally (its quotes are text)."""
    delimiter = "\t" if kind == "tsv" else ","
    feed = _LineFeed(path)
    try:
        yield from _delimited_rows(path, bad, kind, wanted, feed, delimiter)
    finally:
        feed.close()


def _delimited_rows(path: Path, bad: _BadRows, kind: str, wanted, feed: _LineFeed, delimiter: str):
    reader = csv.reader(feed, delimiter=delimiter, strict=True)
    header = None
    while True:
        feed.mark()
        start = feed.pos
        problem = None
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problem = _quote_problem(err, feed.pos - start, "end of data" in str(err))
        else:
            spans = feed.pos - start
            if spans > 1 and header is not None:
                fields = _drop_empty_tail(fields, len(header))
                # a multi-line row is well-formed only with the header's field count and the
                # line breaks inside the text column
                labels_broken = any("\n" in f for c, f in zip(header, fields, strict=False) if c != wanted[0])
                if len(fields) != len(header) or labels_broken:
                    problem = _quote_problem(None, spans, False)
        if problem is not None:
            first_line = feed.first_line or ""
            feed.restart_after_mark()
            reader = csv.reader(feed, delimiter=delimiter, strict=True)  # a fresh reader, no half-read field
            if kind == "tsv":
                fields = first_line.rstrip("\r\n").split("\t")
            elif header is None:
                raise DataError(path, start + 1, f"header row: {problem}",
                                fix="the first row must name the columns, without stray quotes")
            else:
                bad(path, start + 1, problem,
                    'close the quote on this line, or write a quote that is part of the text as two ("")'
                    " inside a quoted field")
                continue
        if not fields or not any(f.strip() for f in fields):
            continue
        if header is None:
            header = [f.strip() for f in fields]
            _missing_columns(path, header, wanted)
            continue
        if not feed.clean and any(_undecodable(f) for f in fields):
            bad(path, start + 1, "undecodable bytes (not UTF-8)", _ICONV_FIX.format(path=path))
            continue
        fields = _drop_empty_tail(fields, len(header))
        if len(fields) != len(header):
            sep = "TAB" if kind == "tsv" else "comma"
            bad(path, start + 1, f"expected {len(header)} {sep}-separated fields (as in the header), found {len(fields)}",
                f"quote fields that contain a {sep} with double quotes")
            continue
        yield start + 1, dict(zip(header, fields, strict=True))
    if header is None:
        raise DataError(path, None, "empty table (no header row)", fix="the first row must name the columns")


def _jsonl_records(path: Path, bad: _BadRows, kind: str, wanted) -> Iterator[tuple[int, dict]]:
    first = True
    for number, line in _lines(path, bad):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            bad(path, number, f"not valid JSON ({err.msg} at column {err.colno})",
                "write one JSON object per line")
            continue
        if not isinstance(record, dict):
            bad(path, number, f"expected a JSON object, found {type(record).__name__}",
                'write one object per line, e.g. {"text": "...", "label": "..."}')
            continue
        if first:
            first = False
            if any(c not in record for c in wanted):
                absent = [c for c in wanted if c not in record]
                raise ColumnError(path, wanted, absent, list(record), kind="field", line=number)
        yield number, record

