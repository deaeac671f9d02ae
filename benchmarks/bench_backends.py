"""Every prediction backend and ``auto``: texts/s, peak resident memory, agreement with torch-fp32.

Arms: torch-fp32, torch-bf16 (where the CPU has native bf16), onnx, onnx-int8 (the ONNX export of
the model, made once into the cache or taken from --export), and auto (a Predictor with
``backend="auto"`` and an empty decision cache: its probe is timed apart, then it runs like the
backend it chose). Cells: titles and 512-token texts (consecutive test titles joined; cut as the
model was trained, so a 48-token model sees 48 tokens), at each thread count asked for. Within a
cell the arms classify the same chunks in rotating order (A/B/C/D/E, B/C/D/E/A, ...), each the
whole ``predictor(texts)`` call a user makes; a cell prints texts/s (total), the median per-chunk
speed ratio to torch-fp32, labels agreeing with torch-fp32 on the cell's texts, test accuracy
where the model is a fine-tuned classifier of the dataset's classes, and whether auto is within
10% of the fastest arm it may pick (labels agreeing with torch-fp32 on >= 99.5% of the cell's
texts, and int8 only where the export's check on the dev split passed; median over chunks of the
per-chunk speed ratio), and auto's probe time as a share of its time on the cell. Also per cell: the share of torch-fp32's time spent outside the forward pass
(tokenization, truncation, batching, the output table). Peak RSS: one child process per arm, thread count and
text kind (load + one pass over the first chunk), ``ru_maxrss``. Load average before and after.

    python benchmarks/bench_backends.py --model runs/<run>/finetune/model --n 10000 --long 64
    python benchmarks/bench_backends.py --random 768x12 --n 300 --long 12   # bert-base size, random
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.inference import backends
from nbutils.inference.onnx_export import describe_check, export_onnx
from nbutils.inference.onnx_files import CHECK_KEY, why_not_offered
from nbutils.inference.predict import Predictor

ARMS = ("torch-fp32", "torch-bf16", "onnx", "onnx-int8")


def long_texts(tokenizer, titles: list[str], count: int, tokens: int) -> list[str]:
    """``count`` texts of at least ``tokens`` WordPiece tokens: consecutive test titles joined
    (starting again one title later when the titles run out, so every text differs)."""
    lengths = [len(x) for x in tokenizer(titles, add_special_tokens=False)["input_ids"]]
    texts: list[str] = []
    for offset in range(len(titles)):
        parts, n = [], 0
        for i in range(offset, len(titles)):
            parts.append(titles[i])
            n += lengths[i] + 1
            if n >= tokens:
                texts.append("，".join(parts))
                parts, n = [], 0
                if len(texts) == count:
                    return texts
        if offset >= 15:  # enough distinct starting points
            break
    return texts


def make_predictor(model_dir: Path, arm: str, threads: int) -> Predictor:
    torch.set_num_threads(threads)
    return Predictor(model_dir, "cpu", backend=arm, threads=threads)


def peak_rss_child(args) -> None:
    """--rss-child: load one arm, classify the texts once, print peak RSS (MB) as JSON."""
    texts = json.loads(Path(args.rss_texts).read_text(encoding="utf-8"))
    predictor = make_predictor(Path(args.model), args.rss_child, args.rss_threads)
    predictor(texts, batch_size=args.batch_size)
    print(json.dumps({"arm": args.rss_child, "backend": predictor.backend, "peak_rss_mb": own_peak_rss_mb()}))


def own_peak_rss_mb() -> float:
    """This process's peak resident memory. Linux: VmHWM, the high-water mark of this program's
    memory since exec; not ru_maxrss, which a child inherits from the parent that started it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_rss(model_dir: Path, arm: str, texts: list[str], threads: int, batch_size: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as fh:
        json.dump(texts, fh, ensure_ascii=False)
    (backends.cache_dir() / backends.CACHE_FILE).unlink(missing_ok=True)  # auto probes in the child
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        out = subprocess.run([sys.executable, __file__, "--model", str(model_dir), "--rss-child", arm,
                              "--rss-texts", fh.name, "--rss-threads", str(threads), "--batch-size",
                              str(batch_size)], capture_output=True, text=True, env=env)
    finally:
        os.unlink(fh.name)
    if out.returncode:  # one arm failing is reported; the others are still measured
        print(f"  peak RSS of {arm} not measured: {out.stderr.strip().splitlines()[-1:]}", flush=True)
        return float("nan")
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def outside_forward_share(predictor: Predictor, texts: list[str], batch_size: int) -> tuple[float, float]:
    """Seconds of a whole call and of the same call with a forward pass that does nothing."""
    start = time.perf_counter()
    predictor(texts, batch_size=batch_size)
    whole = time.perf_counter() - start
    forward, n_labels = predictor._forward, len(predictor.label_names)
    predictor._forward = lambda ids, mask: np.zeros((len(ids), n_labels), dtype=np.float32)
    try:
        start = time.perf_counter()
        predictor(texts, batch_size=batch_size)
        bare = time.perf_counter() - start
    finally:
        predictor._forward = forward
    return whole, bare


def run_cell(title: str, model_dir: Path, texts: list[str], threads: int, args, labels, arms) -> dict:
    """One cell: every arm and auto over the same chunks in rotating order."""
    predictors = {arm: make_predictor(model_dir, arm, threads) for arm in arms}
    (backends.cache_dir() / backends.CACHE_FILE).unlink(missing_ok=True)  # auto has no decision: it probes
    auto = make_predictor(model_dir, "auto", threads)
    cut = auto.truncator(None, None)
    chunks = np.array_split(np.arange(len(texts)), min(args.chunks, len(texts)))
    first = [texts[i] for i in chunks[0]]
    ids = [cut.cut(x) for x in auto.tokenizer(first, add_special_tokens=True)["input_ids"]]
    start = time.perf_counter()
    auto.decide(ids, args.batch_size)
    probe_s = time.perf_counter() - start
    predictors["auto"] = auto
    for predictor in predictors.values():  # warm-up: first-call kernel selection is not timed
        predictor(texts[:8], batch_size=args.batch_size)
    names = list(predictors)
    seconds = {n: 0.0 for n in names}
    ratios = {n: [] for n in names}
    per_chunk = {n: [] for n in names}
    label_rows = {n: [None] * len(chunks) for n in names}
    for c, rows in enumerate(chunks):
        chunk = [texts[i] for i in rows]
        took = {}
        for name in names[c % len(names):] + names[: c % len(names)]:
            torch.set_num_threads(threads)
            start = time.perf_counter()
            frame = predictors[name](chunk, batch_size=args.batch_size)
            took[name] = time.perf_counter() - start
            label_rows[name][c] = frame["label"].to_numpy()
        for name in names:
            seconds[name] += took[name]
            per_chunk[name].append(took[name])
            ratios[name].append(took["torch-fp32"] / took[name])
    whole, bare = outside_forward_share(predictors["torch-fp32"], texts[: len(chunks[0])], args.batch_size)
    predicted = {n: np.concatenate(v) for n, v in label_rows.items()}
    speed = {n: len(texts) / seconds[n] for n in names}
    best = max((n for n in names if n != "auto"), key=speed.get)
    print(f"  {title}, {threads} thread(s): {len(texts)} texts, {len(chunks)} chunks in rotating order; "
          f"torch-fp32 outside the forward pass: {bare / whole:.0%} of its time")
    cell = {"cell": title, "threads": threads, "texts": len(texts), "arms": {}, "auto": auto.backend,
            "auto_probe_s": round(probe_s, 2), "auto_reason": auto.decision.reason,
            "outside_forward_share": round(bare / whole, 3)}
    for name in names:
        agree = float((predicted[name] == predicted["torch-fp32"]).mean())
        line = (f"    {name:<11} {speed[name]:9.1f} texts/s  x{statistics.median(ratios[name]):.2f} fp32 "
                f"(median per chunk)  labels agree {agree:.2%}")
        row = {"texts_per_s": round(speed[name], 2), "median_ratio_to_fp32": round(statistics.median(ratios[name]), 3),
               "agreement": agree}
        if labels is not None:
            row["accuracy"] = float((predicted[name] == labels).mean())
            line += f"  accuracy {row['accuracy']:.2%}"
        print(line, flush=True)
        cell["arms"][name] = row
    # auto is held to the fastest arm it may pick: labels agreeing with torch-fp32 on >= 99.5% of
    # the cell's texts, and for onnx-int8 the export's own check passed (onnx_files.why_not_offered)
    exact = [n for n in names if n != "auto" and cell["arms"][n]["agreement"] >= backends.AGREEMENT_BAR
             and (n != "onnx-int8" or not why_not_offered(backends.export_cache(model_dir)))]
    best_exact = max(exact, key=speed.get)
    # per chunk, so that a burst of load during one arm's turn does not decide the comparison
    auto_vs_best = statistics.median(b / a for a, b in zip(per_chunk["auto"], per_chunk[best_exact], strict=True))
    within = auto_vs_best >= 0.9
    job_s = seconds["auto"]
    cell.update(best_arm=best, best_exact_arm=best_exact, auto_vs_best_exact=round(auto_vs_best, 3),
                auto_within_10pct_of_best_exact=bool(within), auto_probe_share_of_job=round(probe_s / job_s, 3))
    print(f"    auto chose {auto.backend} (probe {probe_s:.1f} s, {probe_s / job_s:.0%} of its {job_s:.1f} s "
          f"on the cell's texts: {auto.decision.reason})", flush=True)
    print(f"    fastest arm {best}; fastest exact-enough arm {best_exact}; auto/that {auto_vs_best:.2f} "
          f"(median per chunk; totals {speed['auto'] / speed[best_exact]:.2f}) -> "
          f"{'within' if within else 'NOT within'} 10%", flush=True)
    return cell


def setup_model(args, ds, tmp: Path) -> tuple[Path, str]:
    if args.model:
        return Path(args.model), str(args.model)
    hidden, layers = (int(x) for x in args.random.split("x"))
    out = Path(args.random_dir) if args.random_dir else tmp
    clf = out / "clf"
    if not (clf / "model.safetensors").is_file():
        make_random_classifier(args.vocab, ds.label_names, out, hidden_size=hidden, num_layers=layers,
                               num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                               head_std=2.0, prediction_max_length=512)
    return clf, f"random BERT {args.random} (real vocabulary, random weights)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--model", default="", help="fine-tuned model folder (accuracy is reported)")
    parser.add_argument("--random", default="768x12", help="without --model: HIDDENxLAYERS of a random BERT")
    parser.add_argument("--random-dir", default="", help="keep (and reuse) the random model here")
    parser.add_argument("--n", type=int, default=1000, help="test titles (drawn evenly; 10000: all)")
    parser.add_argument("--long", type=int, default=16, help="512-token texts (0: none)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    parser.add_argument("--chunks", type=int, default=10, help="chunks per cell (rotations of the arm order)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS child processes")
    parser.add_argument("--json", default="", help="also write the cells as JSON here")
    parser.add_argument("--cache", default="", help="cache folder for the export and decisions "
                        "(default: the bench/ folder of the nbutils cache; auto's decisions are cleared per cell)")
    parser.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rss-texts", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rss-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--rss-only", action="store_true", help="only the peak-RSS child processes")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if args.rss_child:
        return peak_rss_child(args)

    # exports and decisions of the benchmark live apart from the user's (the export is reused)
    os.environ["NBUTILS_CACHE_DIR"] = args.cache or str(backends.cache_dir() / "bench")
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)}; {backends.cpu_model()}; "
          f"{os.cpu_count()} cores; {', '.join(f'{k} {v}' for k, v in backends.versions().items())}", flush=True)
    ds = load_dataset(args.data)
    n_test = len(ds.texts("test"))
    rows = np.sort(np.random.default_rng(0).permutation(n_test)[: min(args.n, n_test)])
    titles = [ds.texts("test")[i] for i in rows]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, described = setup_model(args, ds, Path(tmp))
        export = backends.export_cache(model_dir)
        if not (export / "model.int8.onnx").is_file() or why_not_offered(export).startswith("its labels were never"):
            start = time.perf_counter()
            export_onnx(model_dir, export, overwrite=True, check_texts=args.data)  # int8 checked on dev
            print(f"exported {model_dir} to {export} in {time.perf_counter() - start:.0f} s", flush=True)
        check = json.loads((export / "onnx_export.json").read_text(encoding="utf-8"))[CHECK_KEY]
        print(describe_check(check), flush=True)
        probe = Predictor(model_dir, "cpu", backend="torch-fp32")
        arms = [a for a in ARMS if a != "torch-bf16" or not probe._bf16_unavailable()]
        labels = None
        if args.model and probe.label_names == list(ds.label_names):
            labels = np.array([ds.label_names[ds.labels("test")[i]] for i in rows])
        cells = {"titles": titles}
        if args.long:
            cells["512-token texts"] = long_texts(probe.tokenizer, ds.texts("test"), args.long, 512)
        print(f"model: {described}; cut as trained: {probe.truncator(None, None).max_length} tokens; arms: "
              f"{', '.join(arms)}, auto", flush=True)
        del probe
        results = []
        for title, texts in cells.items() if not args.rss_only else ():
            for threads in (int(t) for t in args.threads.split(",")):
                results.append(run_cell(title, model_dir, texts, threads, args,
                                        labels if title == "titles" else None, arms))
        if not args.no_rss:
            for title, texts in cells.items():
                first = texts[: -(-len(texts) // args.chunks)]
                for threads in (int(t) for t in args.threads.split(",")):
                    rss = {arm: peak_rss(model_dir, arm, first, threads, args.batch_size) for arm in [*arms, "auto"]}
                    print(f"  peak RSS, {title} (a child process per arm: load + {len(first)} texts, "
                          f"{threads} thread(s); auto with its probe): "
                          + ", ".join(f"{a} {mb:.0f} MB" for a, mb in rss.items()), flush=True)
                    for cell in results:
                        if cell["cell"] == title and cell.get("threads") == threads:
                            cell["peak_rss_mb"] = {a: round(mb) for a, mb in rss.items()}
    load_after = os.getloadavg()
    print(f"load average after: {' '.join(f'{x:.2f}' for x in load_after)}")
    if args.json:
        from nbutils.core.io import write_json

        write_json(args.json, {"model": described, "cpu": backends.cpu_model(), "machine": platform.machine(),
                               "versions": backends.versions(), "load_before": load_before,
                               "load_after": load_after, "command": " ".join(sys.argv), "cells": results})


if __name__ == "__main__":
    main()
