"""Prediction of many long texts: peak RSS and time per text at two sizes, streamed vs in memory.

Builds its inputs itself from the real THUCNews titles (``data/raw/thucnews-titles``, ``make
data``), as ``bench_scale.py`` does: per size N, N pseudo-articles of ~900 characters (log-normal,
some far longer), one per line of a text file. The model is a random 128x2 BERT of the real
vocabulary with a 10-class head (``finetune_config.json``: max_length 128, head), fp32 on the CPU.

Two ways of the same work, each size in its own process under ``/usr/bin/time`` (wall time and
the kernel's peak RSS), both running
``nbutils predict --model M --file F --output O --batch-size 64 --device cpu``:

- ``stream``     this tree: the file is read, predicted and written a chunk at a time
  (``Predictor.frames`` -> ``write_predictions``);
- ``in-memory``  the code at ``--old-ref`` (default 7ed45e4, before streaming; extracted with
  ``git archive``): every line read into a list, one table for all rows, then written.

Prints, per way and size, wall time, peak RSS and time per text; per way, the large/small ratios
(flat memory: ~1.0x; linear time: the per-text time ratio ~1.0x); and whether the two ways wrote
the same labels for every text.

    python benchmarks/bench_predict_scale.py                          # 10,000 and 100,000 texts
    python benchmarks/bench_predict_scale.py --sizes 2000,20000 --ways stream
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# benchmarks/ is sys.path[0] when this file runs
from bench_scale import measured, old_tree, read_titles, write_articles

REPO = Path(__file__).resolve().parents[1]


def make_inputs(titles: Path, work: Path, sizes: list[int], seed: int) -> dict[int, Path]:
    """One text file per size, one article per line (the labels dropped)."""
    names, per_class = read_titles(titles)
    files = {}
    for n in sizes:
        rng = np.random.default_rng([seed, n])
        labelled = work / f"cnews-{n}.txt"
        write_articles(labelled, n, names, per_class, rng, corpus=None)
        files[n] = work / f"texts-{n}.txt"
        with open(labelled, encoding="utf-8") as src, open(files[n], "w", encoding="utf-8", newline="\n") as out:
            for line in src:
                out.write(line.partition("\t")[2])
        labelled.unlink()
    return files


def make_model(vocab: Path, titles: Path, out: Path) -> Path:
    from nbutils.checkpoints.random_bert import make_random_classifier

    names, _ = read_titles(titles)
    return make_random_classifier(vocab, names, out, hidden_size=128, num_layers=2, num_heads=2,
                                  intermediate_size=512, head_std=2.0, prediction_max_length=128)


def labels_of(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row["label"] for row in csv.DictReader(f)]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_model":  # in a child: this process never imports torch
        make_model(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="texts per size, comma-separated (two or more)")
    parser.add_argument("--ways", default="stream,in-memory", help="stream and/or in-memory")
    parser.add_argument("--old-ref", default="7ed45e4", help="commit whose code is the in-memory way")
    parser.add_argument("--titles", default=str(REPO / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--work", default="", help="folder for the generated files (default: new /tmp folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    ways = [w for w in args.ways.split(",") if w]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench_predict_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"work folder {work}; {os.cpu_count()} CPUs; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
          f"load average {os.getloadavg()}", flush=True)
    try:
        run(args, sizes, ways, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, sizes: list[int], ways: list[str], work: Path) -> None:
    t0 = time.perf_counter()
    files = make_inputs(Path(args.titles), work, sizes, args.seed)
    chars = {n: sum(len(line) - 1 for line in open(f, encoding="utf-8")) for n, f in files.items()}
    print("inputs: " + ", ".join(f"{n:,} texts ({chars[n] / n:.0f} characters on average, "
                                 f"{files[n].stat().st_size / 1e6:.0f} MB)" for n in sizes)
          + f", made in {time.perf_counter() - t0:.0f} s", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_model", args.vocab, args.titles,
                    str(work / "model")], check=True)
    model = work / "model" / "clf"
    code = {"stream": str(REPO)}
    if "in-memory" in ways:
        code["in-memory"] = str(old_tree(args.old_ref, work / "old-code"))
    results = {}
    for n in sizes:
        for way in ways:
            out = work / f"out-{way}-{n}"
            out.mkdir()
            env = {**os.environ, "PYTHONPATH": code[way], "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            cmd = [sys.executable, "-m", "nbutils.cli", "predict", "--model", str(model), "--file", str(files[n]),
                   "--output", str(out / "predictions.csv"), "--batch-size", "64", "--device", "cpu"]
            r = measured(cmd, env, out / "log.txt", code[way])  # cwd = the way's code (python -m)
            if r["rc"]:
                print((out / "log.txt").read_text(errors="replace")[-3000:], flush=True)
                raise SystemExit(f"{way} at {n:,} texts failed (rc {r['rc']})")
            r["labels"] = labels_of(out / "predictions.csv")
            assert len(r["labels"]) == n, (way, n, len(r["labels"]))
            results[(way, n)] = r
            print(f"{way:>9} {n:>8,} texts: wall {r['wall_s']:7.1f} s  {1000 * r['wall_s'] / n:6.2f} ms/text  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB  load {r['load_before']:.2f}->{r['load_after']:.2f}",
                  flush=True)
            (out / "predictions.csv").unlink()
    small, big = sizes[0], sizes[-1]
    print(f"\n{big:,} vs {small:,} texts ({big / small:.0f}x the texts)")
    for way in ways:
        a, b = results[(way, small)], results[(way, big)]
        per_text = (b["wall_s"] / big) / (a["wall_s"] / small)
        print(f"  {way:>9}: peak RSS {a['peak_rss_mb']:.0f} -> {b['peak_rss_mb']:.0f} MB "
              f"({b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x), time per text {1000 * a['wall_s'] / small:.2f} -> "
              f"{1000 * b['wall_s'] / big:.2f} ms ({per_text:.2f}x; wall {b['wall_s'] / a['wall_s']:.1f}x)")
    if len(ways) == 2:
        print("\nin-memory / stream at the same size (> 1: streaming is cheaper)")
        for n in sizes:
            old, new = results[("in-memory", n)], results[("stream", n)]
            same = sum(x == y for x, y in zip(old["labels"], new["labels"], strict=True))
            print(f"  {n:>8,} texts: peak RSS {old['peak_rss_mb'] / new['peak_rss_mb']:.2f}x, "
                  f"time {old['wall_s'] / new['wall_s']:.2f}x; identical labels {same:,} of {n:,}")


if __name__ == "__main__":
    main()
