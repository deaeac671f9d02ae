"""Are two runs' results the same? Compares every number in the stages' result files of two
run directories (``*/metrics.json`` anywhere in the run, ``explore/stats.json``,
``freezing/results.csv`` and ``report/baseline.json``) and prints how many are identical.

Clock and memory readings (runtimes, samples/s, tokens/s, peak memory, load) differ between any
two runs of the same code, so they are counted apart, not compared. Use it to show that a
refactoring left the numbers alone: run the same profile at the same seeds and
``OMP_NUM_THREADS=1`` before and after, then::

    python benchmarks/compare_runs.py runs/<before> runs/<after>

Exit status 0 when every compared number is identical and both runs have the same files and
keys, 1 otherwise. With ``--shared-only`` (two versions of the code, one of which adds or drops
an output) the numbers present in both runs decide; the others are listed as ONLY.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from pathlib import Path

# Keys that measure the machine, not the model (matched against the last part of the key path).
TIMING = re.compile(r"(runtime|_s$|seconds|per_s|per_second|memory|wall|load|_time|time_s|step_s|"
                    r"fit_seconds|duration)")
RESULT_FILES = ("explore/stats.json", "freezing/results.csv", "report/baseline.json")


def result_files(run: Path) -> list[str]:
    """Relative paths of the result files in ``run``."""
    found = {p.relative_to(run).as_posix() for p in run.rglob("metrics.json")}
    found |= {name for name in RESULT_FILES if (run / name).is_file()}
    return sorted(found)


def numbers(value, path: str = ""):
    """``(key path, number)`` for every number (not bool) in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from numbers(item, f"{path}[{i}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, float(value)


def csv_numbers(path: Path):
    with path.open(encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.DictReader(f)):
            key = f"row{i}:{row.get('strategy', '')}-{row.get('seed', '')}"
            for column, text in row.items():
                try:
                    yield f"{key}/{column}", float(text)
                except (TypeError, ValueError):
                    continue


def read_numbers(path: Path) -> dict[str, float]:
    if path.suffix == ".csv":
        return dict(csv_numbers(path))
    return dict(numbers(json.loads(path.read_text(encoding="utf-8"))))


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def compare(before: Path, after: Path) -> tuple[int, int, list[str], list[str]]:
    """``(identical, timing values skipped, differences, files or keys in only one run)``."""
    identical, skipped, differences, unmatched = 0, 0, [], []
    files_before, files_after = result_files(before), result_files(after)
    for name in sorted(set(files_before) ^ set(files_after)):
        unmatched.append(f"{name}: only in {'the first' if name in files_before else 'the second'} run")
    for name in sorted(set(files_before) & set(files_after)):
        a, b = read_numbers(before / name), read_numbers(after / name)
        for key in sorted(set(a) | set(b)):
            if TIMING.search(key.rsplit("/", 1)[-1]):
                skipped += 1
            elif key not in a or key not in b:
                unmatched.append(f"{name}{key}: only in {'the first' if key in a else 'the second'} run")
            elif same(a[key], b[key]):
                identical += 1
            else:
                differences.append(f"{name}{key}: {a[key]!r} != {b[key]!r}")
    return identical, skipped, differences, unmatched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path, help="the first run directory")
    parser.add_argument("after", type=Path, help="the second run directory")
    parser.add_argument("--shared-only", action="store_true",
                        help="judge only the numbers both runs have (code that added or dropped an "
                             "output); those in one run only are still listed")
    args = parser.parse_args(argv)
    identical, skipped, differences, unmatched = compare(args.before, args.after)
    for line in unmatched:
        print("ONLY", line)
    for line in differences:
        print("DIFFERENT", line)
    print(f"{identical} values identical, {len(differences)} different, {len(unmatched)} in one run only, "
          f"{skipped} clock/memory readings not compared ({len(result_files(args.before))} result files)")
    return 0 if identical and not differences and (args.shared_only or not unmatched) else 1


if __name__ == "__main__":
    sys.exit(main())
