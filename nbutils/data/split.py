"""``nbutils data split FILE OUT``: one messy table file -> clean train/dev/test files to keep.

What it does, in order, and records in ``OUT/split.json``:

1. reads FILE (CSV/TSV/JSONL) as the loader does (``nbutils.data.dataset.table_records``), every column kept;
2. drops exact duplicates (the text as the loader sees it: surrounding whitespace stripped), and
   with ``ignore_whitespace`` also texts that differ only in whitespace; the first row is kept;
3. lists texts that carry more than one label and drops all their rows (``conflicts="drop"``), or
   keeps one row per label (``conflicts="keep"``: they then share a split);
4. splits the rest stratified by label and grouped by text (``nbutils.data.dataset.stratified_split``,
   seeded): no text in two splits;
5. writes ``train``/``dev``/``test`` in FILE's format and column order (a ``split`` column is
   dropped: this split replaces it), rows in FILE's order, plus ``split.json``.

The same FILE and settings give byte-identical output. OUT is written to a temporary sibling and
renamed (nothing half-written); an existing OUT is never replaced without ``overwrite``, except
that a run that would write exactly what OUT already holds just says so.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from nbutils.core.errors import NbutilsError

SPLITS = ("train", "dev", "test")
RECORD = "split.json"
CONFLICT_POLICIES = ("drop", "keep")
MAX_LISTED = 100  # conflicting texts listed in split.json (the count is always complete)


@dataclass(frozen=True)
class SplitSettings:
    text_column: str = "text"
    label_column: str = "label"
    seed: int = 42
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    ignore_whitespace: bool = False  # texts differing only in whitespace are duplicates
    conflicts: str = "drop"  # drop | keep: texts with more than one label
    on_bad_rows: str = "raise"  # raise | skip
    label_delimiter: str = ""  # several labels per text separated by this (multi-label); JSON lists need none

    def __post_init__(self):
        if self.conflicts not in CONFLICT_POLICIES:
            raise NbutilsError(f"conflicts={self.conflicts!r} is not one of {CONFLICT_POLICIES}",
                               fix="pass --conflicts drop (leave such texts out) or keep (one row per label)")


def _label_key(label, delimiter: str = "") -> str:
    """A row's label as one string; several labels (a JSON list, or cut at ``delimiter``) as the
    JSON list of the set, in a fixed order, so ``b|a`` and ``a|b`` are the same labels."""
    from nbutils.data.dataset import _label_parts

    try:
        parts = _label_parts(label, delimiter)
    except ValueError:  # an empty label between delimiters...: kept as written (load_dataset says why)
        parts = None
    if parts is not None:
        return json.dumps(parts, ensure_ascii=False)
    if isinstance(label, list):
        return json.dumps(sorted(str(x).strip() for x in label), ensure_ascii=False)
    return str(label).strip()


def _strata(label_keys: list[str]) -> list[str]:
    """What the split is stratified by: the label, or for rows with several labels the row's
    rarest label (as ``load_dataset`` splits multi-label data), so rare labels reach every split."""
    sets = [json.loads(k) if k.startswith("[") else None for k in label_keys]
    if all(s is None for s in sets):
        return label_keys
    counts = Counter(label for labels in sets if labels for label in labels)
    return [min(labels, key=lambda x: (counts[x], x)) if labels else key for labels, key in zip(sets, label_keys,
                                                                                             strict=True)]


def _text_key(text: str, ignore_whitespace: bool) -> str:
    text = text.strip()
    return re.sub(r"\s+", "", text) if ignore_whitespace else text


def plan_split(records: list[tuple[int, dict]], settings: SplitSettings) -> tuple[dict[str, list], dict]:
    """``({split: [(line, record)]}, what was done)`` for the rows of one table file."""
    from nbutils.data.dataset import stratified_split

    labels_of: dict[str, set[str]] = defaultdict(set)
    shown: dict[str, str] = {}  # a text as first written, for the listing
    for _, record in records:
        key = _text_key(record[settings.text_column], settings.ignore_whitespace)
        labels_of[key].add(_label_key(record[settings.label_column], settings.label_delimiter))
        shown.setdefault(key, record[settings.text_column].strip())
    conflicting = {key for key, labels in labels_of.items() if len(labels) > 1}
    kept, seen_exact, seen = [], set(), set()
    removed = Counter()
    conflict_lines: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for line, record in records:
        exact = record[settings.text_column].strip()
        key = _text_key(exact, settings.ignore_whitespace)
        label = _label_key(record[settings.label_column], settings.label_delimiter)
        if key in conflicting:
            conflict_lines[key][label].append(line)
            if settings.conflicts == "drop":
                removed["conflicting_label_rows"] += 1
                continue
        identity = (key, label) if settings.conflicts == "keep" else key
        if identity in seen:
            removed["exact_duplicates" if (exact, label) in seen_exact else "whitespace_duplicates"] += 1
            continue
        seen.add(identity)
        seen_exact.add((exact, label))
        kept.append((line, record, key, label))
    if not kept:
        raise NbutilsError("no rows left after removing duplicates and conflicting labels",
                           fix="check the text and label columns, or pass --conflicts keep")
    names = stratified_split(_strata([k[3] for k in kept]), settings.ratios, settings.seed, groups=[k[2] for k in kept])
    parts: dict[str, list] = {s: [] for s in SPLITS}
    for (line, record, _, _), split in zip(kept, names, strict=True):
        parts[split].append((line, record))
    listed = [{"text": shown[key], "labels": {label: lines for label, lines in sorted(by_label.items())}}
              for key, by_label in list(conflict_lines.items())[:MAX_LISTED]]
    done = {"rows_read": len(records), "rows_kept": len(kept),
            "removed": {k: removed[k] for k in ("exact_duplicates", "whitespace_duplicates",
                                                  "conflicting_label_rows")},
            "conflicting_texts": {"count": len(conflicting), "policy": settings.conflicts,
                                  "listed": listed}}
    return parts, done


def _render(kind: str, columns: list[str], rows: list[tuple[int, dict]]) -> bytes:
    out = io.StringIO()
    if kind == "jsonl":
        for _, record in rows:
            out.write(json.dumps({k: v for k, v in record.items() if k != "split"}, ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(out, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([record.get(c, "") for c in columns] for _, record in rows)
    return out.getvalue().encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_file(path: str | Path, out: str | Path, settings: SplitSettings | None = None, *,
               overwrite: bool = False, log=print) -> dict:
    """Split the table file ``path`` into ``out/{train,dev,test}.<ext>`` + ``out/split.json``;
    returns the record. See the module docstring."""
    from nbutils.core.io import atomic_dir
    from nbutils.data.dataset import table_records

    settings = settings or SplitSettings()
    path, out = Path(path), Path(out)
    kind, records, skipped = table_records(path, settings.text_column, settings.label_column,
                                           on_bad_rows=settings.on_bad_rows)
    parts, done = plan_split(records, settings)
    columns = [c for c in (records[0][1] if records else {}) if c != "split"]
    suffix = path.suffix.lower()
    files = {split: _render(kind, columns, rows) for split, rows in parts.items()}
    record = {
        "input": {"file": path.name, "sha256": _sha256(path.read_bytes()), "format": kind,
                  "bad_rows_skipped": [str(row) for row in skipped]},
        "settings": {**asdict(settings), "ratios": list(settings.ratios)},
        **done,
        "split_column_replaced": any("split" in r for _, r in records[:1]),
        "outputs": {split: {"file": f"{split}{suffix}", "rows": len(parts[split]), "sha256": _sha256(data),
                            "per_label": dict(sorted(Counter(_label_key(r[settings.label_column],
                                                                        settings.label_delimiter)
                                                             for _, r in parts[split]).items()))}
                    for split, data in files.items()},
    }
    text = json.dumps(record, ensure_ascii=False, indent=2) + "\n"
    if out.exists() and not overwrite and _holds(out, files, suffix, text):
        log(f"{out} already holds this split of {path.name} (same file, same settings): nothing to do")
        return record
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split, data in files.items():
            (tmp / f"{split}{suffix}").write_bytes(data)
        (tmp / RECORD).write_text(text, encoding="utf-8")
    _describe(record, out, log)
    return record


def _holds(out: Path, files: dict[str, bytes], suffix: str, text: str) -> bool:
    """Whether ``out`` is exactly what this split would write."""
    expected = {f"{split}{suffix}": data for split, data in files.items()}
    expected[RECORD] = text.encode("utf-8")
    present = {p.name for p in out.iterdir()} if out.is_dir() else set()
    return present == set(expected) and all((out / name).read_bytes() == data for name, data in expected.items())


def _describe(record: dict, out: Path, log) -> None:
    removed = record["removed"]
    conflicts = record["conflicting_texts"]
    log(f"read {record['rows_read']:,} rows; removed {removed['exact_duplicates']:,} exact duplicate(s), "
        f"{removed['whitespace_duplicates']:,} whitespace duplicate(s), "
        f"{removed['conflicting_label_rows']:,} row(s) of {conflicts['count']:,} text(s) with conflicting "
        f"labels (policy: {conflicts['policy']})")
    for item in conflicts["listed"][:5]:
        log(f"  conflicting: {item['text'][:60]!r} " + ", ".join(
            f"{label} (line {', '.join(map(str, lines))})" for label, lines in item["labels"].items()))
    if record["split_column_replaced"]:
        log("  the input's 'split' column was replaced by this split")
    log("wrote " + ", ".join(f"{o['file']} {o['rows']:,}" for o in record["outputs"].values())
        + f" and {RECORD} to {out}")


def add_parser(sub) -> None:
    """The ``split`` subcommand of ``nbutils data``."""
    p = sub.add_parser("split", help="dedupe a table file, drop or list conflicting labels, and write a "
                                     "group-aware stratified train/dev/test split")
    p.add_argument("file", help="one CSV/TSV/JSONL file with every row")
    p.add_argument("out", help="output folder (train/dev/test in FILE's format + split.json); must not exist")
    p.add_argument("--text-column", default="text", help="the text column (JSONL: key) (default: text)")
    p.add_argument("--label-column", default="label", help="the label column (JSONL: key) (default: label)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split (default: 42)")
    p.add_argument("--ratios", default="0.8,0.1,0.1", help="train,dev,test shares (default: 0.8,0.1,0.1)")
    p.add_argument("--ignore-whitespace", action="store_true",
                   help="texts that differ only in whitespace are duplicates too")
    p.add_argument("--conflicts", choices=CONFLICT_POLICIES, default="drop",
                   help="texts with more than one label: drop all their rows (default) or keep one per label")
    p.add_argument("--label-delimiter", default="",
                   help="several labels per text separated by this (e.g. '|'): label sets are compared as sets "
                        "and the split is stratified by each text's rarest label (JSON-list labels need none)")
    p.add_argument("--skip-bad-rows", action="store_true", help="skip and list bad rows instead of failing")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(args: argparse.Namespace) -> dict:
    try:
        ratios = tuple(float(x) for x in args.ratios.split(","))
    except ValueError:
        ratios = ()
    if len(ratios) != 3:
        raise NbutilsError(f"--ratios {args.ratios!r} is not three numbers", fix="write e.g. --ratios 0.8,0.1,0.1")
    settings = SplitSettings(text_column=args.text_column, label_column=args.label_column, seed=args.seed,
                             ratios=ratios, ignore_whitespace=args.ignore_whitespace,
                             conflicts=args.conflicts, on_bad_rows="skip" if args.skip_bad_rows else "raise",
                             label_delimiter=args.label_delimiter)
    return split_file(args.file, args.out, settings, overwrite=args.overwrite)


__all__ = ["SplitSettings", "add_parser", "plan_split", "run", "split_file"]
