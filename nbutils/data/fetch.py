"""``nbutils data``: fetch a named dataset or vocabulary into ``data/raw/<name>/``, and check one.

A file comes from the first local mirror folder that has it (``--from DIR`` or
``$NBUTILS_DATA_MIRROR``, for machines without internet) or else from its public URL. Every
file is checked against its known sha256 before it appears under its final name; the files of
one fetch are staged side by side and renamed into place only once all of them are verified,
so a failed or interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from nbutils.core.errors import NbutilsError
from nbutils.core.io import atomic_file, read_json, write_json
from nbutils.core.paths import default_mirror_dirs

TIMEOUT_S = 15
CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a resource. ``sha256`` maps each accepted hash to what that version is."""

    name: str
    url: str | None
    sha256: dict[str, str] = field(default_factory=dict)
    # An unknown hash is reported as unverified instead of rejected (a file with several
    # published versions, only some of whose hashes we know).
    allow_unknown: bool = False
    # Fetched only when a mirror has it (no public URL serves this exact file).
    optional: bool = False


@dataclass(frozen=True)
class Resource:
    name: str
    description: str
    files: tuple[RemoteFile, ...]


_TITLES_URL = ("https://raw.githubusercontent.com/649453932/Bert-Chinese-Text-Classification-Pytorch/"
               "master/THUCNews/data/{}")
_VOCAB_URL = "https://huggingface.co/google-bert/bert-base-chinese/resolve/main/{}"

RESOURCES: dict[str, Resource] = {
    r.name: r
    for r in (
        Resource(
            "thucnews-titles",
            "THUCNews news headlines, 10 classes: text<TAB>label_id + class.txt",
            (
                RemoteFile("train.txt", _TITLES_URL.format("train.txt"), {
                    "ae6ec85dfae39c60c2b0e8ae7fc2175325cdb52d0c36e1bc82b4fae263ab698a":
                        "the 33,590-line subset of the local mirror",
                }, allow_unknown=True),  # the public file is the full 180,000-line split
                RemoteFile("dev.txt", _TITLES_URL.format("dev.txt"), {
                    "6ed73aa2c57ee1560c8f76570d48735c4b1c29ae4983fe3523d56e115813e175": "public 10k dev split",
                }),
                RemoteFile("test.txt", _TITLES_URL.format("test.txt"), {
                    "ebecc8c896635ad69730083ca7b81d37c42c9a5779bc05c9d2479d894e34f026": "public 10k test split",
                }),
                RemoteFile("class.txt", _TITLES_URL.format("class.txt"), {
                    "005e8813ad639c219e5902dc84889202b4a717b4238497d26c3fbd5e43927a86": "the 10 class names",
                }),
            ),
        ),
        Resource(
            "bert-base-chinese-vocab",
            "the 21,128-token WordPiece vocabulary of Google's Chinese BERT-Base (+ its bert_config.json)",
            (
                RemoteFile("vocab.txt", _VOCAB_URL.format("vocab.txt"), {
                    "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c":
                        "bert-base-chinese vocab.txt (21,128 tokens)",
                }),
                # Google's original config; the hub's config.json is a different (HF) file.
                RemoteFile("bert_config.json", None, {
                    "f321a9a3bbce53f019c5d7107fb66667d05f31d9d58e9f2fb8b9093b0dfd6acb":
                        "chinese_L-12_H-768_A-12 bert_config.json",
                }, optional=True),
            ),
        ),
    )
}


@dataclass
class FetchedFile:
    name: str
    sha256: str
    source: str  # "present", a mirror path or a URL
    verified: bool  # matched a known hash
    note: str


def resource(name: str) -> Resource:
    if name not in RESOURCES:
        raise NbutilsError(f"unknown resource {name!r}", fix=f"use one of: {', '.join(RESOURCES)}")
    return RESOURCES[name]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> str:
    """Copy ``src`` to ``dst`` in chunks; return the sha256 of what was copied."""
    digest = hashlib.sha256()
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        dst.write(chunk)
    return digest.hexdigest()


def download(url: str, dst: BinaryIO, timeout: float = TIMEOUT_S) -> str:
    """Stream ``url`` into ``dst``; return its sha256. Network errors raise ``OSError``."""
    request = urllib.request.Request(url, headers={"User-Agent": "nbutils-data-fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return copy_hashing(response, dst)


def mirror_folders(name: str, mirrors: Sequence[str | Path]) -> list[Path]:
    """Folders that may hold ``name``'s files: ``DIR/<name>/`` first, then ``DIR`` itself."""
    folders = []
    for mirror in map(Path, mirrors):
        for folder in (mirror / name, mirror):
            if folder.is_dir() and folder not in folders:
                folders.append(folder)
    return folders


def _judge(spec: RemoteFile, digest: str) -> tuple[bool, str]:
    """(verified, note); raise if the hash is known to be wrong."""
    if digest in spec.sha256:
        return True, f"sha256 verified ({spec.sha256[digest]})"
    if spec.allow_unknown or not spec.sha256:
        return False, f"sha256 {digest} unverified (not a known version of {spec.name})"
    raise NbutilsError(
        f"{spec.name}: sha256 mismatch: got {digest}, expected {' or '.join(spec.sha256)}",
        fix="the source file is corrupt or a different version: replace it with the original "
            "(or fetch it from its public URL), then run the fetch again",
    )


def _how_to_provide(res: Resource, dest: Path, missing: list[RemoteFile]) -> str:
    urls = "\n".join(f"      {f.url}" for f in missing if f.url)
    return (
        "give a local mirror folder that holds the files (the folder itself or its parent with a "
        f"`{res.name}/` sub-folder):\n"
        f"    nbutils data fetch {res.name} --from DIR\n"
        f"  or set it once for every command (several folders separated by {os.pathsep!r}):\n"
        "    export NBUTILS_DATA_MIRROR=DIR\n"
        + (f"  or download these files by hand into {dest}/:\n{urls}" if urls else "")
    )


def fetch(
    name: str,
    dest_root: str | Path = "data/raw",
    *,
    mirrors: Sequence[str | Path] | None = None,
    force: bool = False,
    downloader: Callable[[str, BinaryIO], str] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Put resource ``name`` into ``dest_root/<name>/``; return that folder.

    ``mirrors`` defaults to ``$NBUTILS_DATA_MIRROR``. Files already present with a known (or, for
    a file that allows it, any) hash are kept unless ``force``. ``downloader(url, dst)`` writes
    the URL's bytes and returns their sha256 (default: :func:`download`, tests pass a fake).
    """
    res = resource(name)
    dest = Path(dest_root) / res.name
    folders = mirror_folders(res.name, default_mirror_dirs() if mirrors is None else mirrors)
    downloader = downloader or download
    log(f"{res.name}: {res.description}")
    log(f"  into {dest}" + (f"  (mirrors: {', '.join(map(str, folders))})" if folders else "  (no mirror)"))

    done: list[FetchedFile] = []
    todo: list[RemoteFile] = []
    for spec in res.files:
        target = dest / spec.name
        if target.is_file() and not force:
            digest = sha256_file(target)
            if digest in spec.sha256 or spec.allow_unknown or not spec.sha256:
                verified, note = _judge(spec, digest)
                log(f"  {spec.name:<18} already present, {note}")
                done.append(FetchedFile(spec.name, digest, "present", verified, note))
                continue
            log(f"  {spec.name:<18} present but its sha256 {digest[:12]}... is not a known one: fetching again")
        todo.append(spec)

    created = not dest.exists()
    try:
        with contextlib.ExitStack() as stage:
            for spec in todo:
                fetched = _fetch_one(spec, dest, folders, downloader, stage, res)
                if fetched is not None:
                    log(f"  {spec.name:<18} from {fetched.source}  {fetched.note}")
                    done.append(fetched)
            # Leaving the stack renames every staged file into place (all of them were verified).
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()  # only if the failed fetch left it empty
        raise
    _write_record(dest, res, done)
    unverified = [f.name for f in done if not f.verified]
    log(f"  done: {len(done)} file(s) in {dest}"
        + (f"; unverified: {', '.join(unverified)}" if unverified else ", all sha256 verified"))
    return dest


def _write_record(dest: Path, res: Resource, done: list[FetchedFile]) -> None:
    """Record where each file came from in ``fetch.json`` (a file kept as present keeps its origin)."""
    record_path = dest / "fetch.json"
    earlier = {}
    with contextlib.suppress(OSError, ValueError):
        earlier = read_json(record_path).get("files", {})
    files = {}
    for f in done:
        entry = {"sha256": f.sha256, "source": f.source, "verified": f.verified, "note": f.note}
        if f.source == "present" and earlier.get(f.name, {}).get("sha256") == f.sha256:
            entry["source"] = earlier[f.name].get("source", "present")
        files[f.name] = entry
    write_json(record_path, {"resource": res.name, "files": files})


def _fetch_one(spec: RemoteFile, dest: Path, folders: list[Path], downloader, stage: contextlib.ExitStack,
               res: Resource) -> FetchedFile | None:
    """Stage one verified file (renamed into place when ``stage`` closes without error)."""
    for folder in folders:
        src = folder / spec.name
        if src.is_file():
            tmp = stage.enter_context(atomic_file(dest / spec.name))
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                digest = copy_hashing(fin, fout)
            verified, note = _judge(spec, digest)
            return FetchedFile(spec.name, digest, str(src), verified, note)
    if spec.url is None:
        if spec.optional:
            return None
        raise NbutilsError(f"{spec.name} of {res.name} is in no mirror and has no public URL",
                           fix=_how_to_provide(res, dest, [spec]))
    tmp = stage.enter_context(atomic_file(dest / spec.name))
    try:
        with open(tmp, "wb") as fout:
            digest = downloader(spec.url, fout)
    except OSError as err:  # URLError, timeouts and refused connections are all OSErrors
        searched = ", ".join(map(str, folders)) or "none given"
        reason = getattr(err, "reason", err)
        raise NbutilsError(
            f"could not download {spec.url} ({reason}); no mirror holds {spec.name} (searched: {searched})",
            fix=_how_to_provide(res, dest, [f for f in res.files if f.url]),
        ) from err
    verified, note = _judge(spec, digest)
    return FetchedFile(spec.name, digest, spec.url, verified, note)


# --- command line --------------------------------------------------------------------


def check(path: str | Path, format: str = "auto", *, text_column: str = "text", label_column: str = "label",
          label_delimiter: str = "", skip_bad_rows: bool = False, max_examples: int = 5,
          log: Callable[[str], None] = print):
    """Load a dataset and print its sizes, class balance, skipped rows and quality findings;
    for multi-label data also the labels per text and the commonest label pairs."""
    from nbutils.data.dataset import load_dataset

    ds = load_dataset(path, format, text_column=text_column, label_column=label_column,
                      on_bad_rows="skip" if skip_bad_rows else "raise", label_delimiter=label_delimiter)
    kind = "labels (multi-label: several per text)" if ds.multi_label else "classes"
    log(f"{ds.source}: format {ds.format}, {len(ds.label_names)} {kind}, {len(ds):,} rows")
    log("  " + "  ".join(f"{split} {n:,}" for split, n in ds.sizes().items()))
    if ds.multi_label:
        _log_labels_per_text(ds, max_examples, log)
    else:
        _hint_delimiter(ds.label_names, log)
    log("class balance (rows per class and split):" if not ds.multi_label
        else "label balance (rows carrying each label, per split):")
    log("\n".join("  " + line for line in ds.class_counts().to_string().splitlines()))
    log(f"bad rows skipped: {len(ds.skipped)}")
    for row in ds.skipped[:20]:
        log(f"  {row}")
    if len(ds.skipped) > 20:
        log(f"  ... and {len(ds.skipped) - 20} more")
    q = ds.quality(max_examples)
    log("exact duplicates within a split: "
        + ", ".join(f"{s} {d['count']}" for s, d in q["duplicates"].items()))
    for s, d in q["duplicates"].items():
        for e in d["examples"]:
            log(f"  {s}: {e['count']}x {e['text'][:60]!r}")
    leak = q["leakage"]
    log(f"texts in more than one split (leakage): {leak['count']} ("
        + ", ".join(f"{pair} {n}" for pair, n in leak["pairs"].items()) + ")")
    for e in leak["examples"]:
        log(f"  {'+'.join(e['splits'])}: {e['text'][:60]!r}")
    conflict = q["conflicting_labels"]
    log(f"texts with more than one {'label set' if ds.multi_label else 'label'}: {conflict['count']}")
    for e in conflict["examples"]:
        log(f"  {'/'.join(e['labels'])}: {e['text'][:60]!r}")
    return ds


def _log_labels_per_text(ds, max_examples: int, log: Callable[[str], None]) -> None:
    from nbutils.data.statistics import label_cardinality, label_cooccurrence, top_label_pairs

    log("labels per text (cardinality: the mean):")
    for split, n in ds.sizes().items():
        if n:
            c = label_cardinality(ds.label_matrix(split))
            counts = ", ".join(f"{k}: {v:,}" for k, v in c["texts_by_label_count"].items())
            log(f"  {split}: cardinality {c['cardinality']:.2f}, density {c['density']:.3f}, "
                f"{c['distinct_label_sets']:,} distinct label sets; texts by label count {counts}")
    pairs = top_label_pairs(label_cooccurrence(ds.label_matrix("train"), ds.label_names), max_examples)
    log("label pairs most often on one train text:" if pairs else "no two labels ever share a train text")
    for p in pairs:
        log(f"  {' + '.join(p['labels'])}: {p['texts']:,} texts "
            f"({p['share_of_first']:.0%} of {p['labels'][0]}, {p['share_of_second']:.0%} of {p['labels'][1]})")


def _hint_delimiter(label_names, log: Callable[[str], None]) -> None:
    """Single-label names that look like several labels joined (``a|b``): say how to split them."""
    for sep in ("|", ";", ",", "/"):
        joined = [n for n in label_names if sep in n]
        if len(joined) >= 2:
            log(f"note: {len(joined)} of the {len(label_names)} label names contain {sep!r} (e.g. {joined[0]!r}); "
                f"if a text carries several labels, pass --label-delimiter '{sep}' "
                f"(runner: -p data_label_delimiter='{sep}') to read them as multi-label")
            return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="nbutils data", description="Fetch a named dataset or vocabulary into data/raw/<name>/, or check a dataset.")
    sub = parser.add_subparsers(dest="command", required=True)

    p_fetch = sub.add_parser("fetch", help="fetch a named dataset or vocabulary into data/raw/<name>/")
    p_fetch.add_argument("name", choices=sorted(RESOURCES), help="what to fetch")
    p_fetch.add_argument("--from", dest="mirrors", action="append", metavar="DIR",
                         help="local mirror folder (the resource folder or its parent); repeatable; "
                              "default: $NBUTILS_DATA_MIRROR, then the public URL")
    p_fetch.add_argument("--dest", default="data/raw", help="parent folder (default: data/raw)")
    p_fetch.add_argument("--force", action="store_true", help="fetch again even if the files are present")

    p_check = sub.add_parser("check", help="load a dataset; print sizes, class balance, bad rows, duplicates, leakage")
    p_check.add_argument("path", help="dataset folder or file to read and check")
    p_check.add_argument("--format", default="auto", choices=["auto", "titles", "cnews", "table", "corpus"],
                         help="dataset layout (default: auto, detected from the files)")
    p_check.add_argument("--text-column", default="text", help="table formats: the text column (default: text)")
    p_check.add_argument("--label-column", default="label", help="table formats: the label column (default: label)")
    p_check.add_argument("--label-delimiter", default="",
                         help="table formats: several labels per text separated by this (e.g. '|'): "
                              "multi-label; a label column of JSON lists is read as multi-label without it")
    p_check.add_argument("--skip-bad-rows", action="store_true", help="skip and list bad rows instead of failing")
    p_check.add_argument("--examples", type=int, default=5, help="examples shown per finding")

    from nbutils.data.split import add_parser as add_split_parser

    add_split_parser(sub)
    sub.add_parser("list", help="list the resources `fetch` knows")

    args = parser.parse_args(argv)
    if args.command == "fetch":
        fetch(args.name, args.dest, mirrors=args.mirrors, force=args.force)
    elif args.command == "split":
        from nbutils.data.split import run as run_split

        run_split(args)
    elif args.command == "check":
        check(args.path, args.format, text_column=args.text_column, label_column=args.label_column,
              label_delimiter=args.label_delimiter, skip_bad_rows=args.skip_bad_rows, max_examples=args.examples)
    else:
        for res in RESOURCES.values():
            print(f"{res.name}: {res.description}")
            for spec in res.files:
                print(f"  {spec.name:<18} {spec.url or '(mirror only)'}")
    return 0
