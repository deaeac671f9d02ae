"""Benchmark `nbutils convert` on a full-size BERT checkpoint against `cp -r` of the same files.

Builds a bert-base-chinese-sized checkpoint (12 layers, hidden 768, the real 21,128-token vocab:
~412 MB of tensor data) with random weights via make_random_bert + export, then runs, interleaved
A/B/A/B, (A) `cp -r` of the checkpoint folder and (B) `nbutils convert` of it as a whole process.
Prints median wall times, their ratio, and the convert process's peak resident memory (from
wait4's rusage of that child alone) relative to the checkpoint's data size.

    python benchmarks/bench_convert.py                # 5 repeats, vocab from ../shared
    python benchmarks/bench_convert.py --repeats 3 --vocab path/to/vocab.txt

Goals: convert within 10x the copy's wall time; peak RSS within 2x the data size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_VOCAB = REPO.parent / "shared" / "models" / "bert-base-chinese-vocab" / "vocab.txt"


def run_timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.read().decode()}")
    proc.stderr.close()
    return wall, usage.ru_maxrss * 1024  # Linux reports KiB


def build_checkpoint(vocab: Path, work: Path) -> Path:
    """A bert-base-chinese-sized Google-layout checkpoint with random weights, in work/google."""
    from nbutils.checkpoints.convert import export
    from nbutils.checkpoints.random_bert import make_random_bert

    hf = make_random_bert(vocab, work / "hf", hidden_size=768, num_layers=12, num_heads=12,
                          intermediate_size=3072, max_position_embeddings=512, seed=0)
    google = export(hf, work / "google")
    shutil.rmtree(hf)
    return google


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vocab", type=Path, default=DEFAULT_VOCAB)
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_checkpoint(args.vocab, args.build_only)
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_convert-", dir=args.work_dir))
    try:
        t0 = time.perf_counter()
        # Build in a child: Linux carries a process's peak RSS across fork+exec, so a parent
        # that had held the torch model would inflate every measured child's ru_maxrss.
        subprocess.run([sys.executable, __file__, "--vocab", str(args.vocab), "--build-only", str(work)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        google = work / "google"
        data_bytes = sum(p.stat().st_size for p in google.glob("bert_model.ckpt.data-*"))
        total_bytes = sum(p.stat().st_size for p in google.iterdir())
        print(f"checkpoint: {data_bytes / 1e6:.1f} MB tensor data, {total_bytes / 1e6:.1f} MB in all "
              f"(built in {time.perf_counter() - t0:.0f} s)")

        copy = lambda out: ["cp", "-r", str(google), str(out)]  # noqa: E731
        convert = lambda out: [sys.executable, "-m", "nbutils.cli", "convert", str(google), str(out)]  # noqa: E731
        run_timed(copy(work / "warm"))  # read the files into the page cache once for both sides
        shutil.rmtree(work / "warm")
        times: dict[str, list[float]] = {"cp -r": [], "nbutils convert": []}
        peaks: list[int] = []
        for i in range(args.repeats):
            for label, make in (("cp -r", copy), ("nbutils convert", convert)):
                out = work / f"out-{i}"
                wall, peak = run_timed(make(out))
                times[label].append(wall)
                if label == "nbutils convert":
                    peaks.append(peak)
                shutil.rmtree(out)
            print(f"  repeat {i + 1}: cp -r {times['cp -r'][-1]:.2f} s, convert {times['nbutils convert'][-1]:.2f} s, "
                  f"convert peak RSS {peaks[-1] / 1e6:.0f} MB")

        cp_med = statistics.median(times["cp -r"])
        cv_med = statistics.median(times["nbutils convert"])
        peak = max(peaks)
        result = {
            "data_bytes": data_bytes,
            "repeats": args.repeats,
            "cp_median_s": round(cp_med, 3),
            "convert_median_s": round(cv_med, 3),
            "time_ratio": round(cv_med / cp_med, 2),
            "convert_peak_rss_bytes": peak,
            "rss_ratio": round(peak / data_bytes, 2),
        }
        print(f"median wall: cp -r {cp_med:.2f} s, nbutils convert {cv_med:.2f} s -> ratio {cv_med / cp_med:.1f}x (goal <= 10x)")
        print(f"peak RSS of convert: {peak / 1e6:.0f} MB = {peak / data_bytes:.2f}x the {data_bytes / 1e6:.0f} MB of tensor data (goal <= 2x)")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
