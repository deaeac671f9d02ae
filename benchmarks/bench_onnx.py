"""CPU serving: ``nbutils predict`` (PyTorch fp32) vs ONNX Runtime fp32 vs ONNX Runtime int8.

One run exports the model (``nbutils export-onnx``: fp32 + dynamic int8), loads the three
backends once, then classifies the same texts with each, chunk by chunk in rotating order
(A/B/C, B/C/A, ...), at every thread count asked for. Timed: the whole ``predictor(texts)`` call
a user makes (tokenization, truncation, length-sorted batches, softmax, the output table), which
is the same code for all three; only the forward pass differs. Prints texts/s, the speed ratio of
each ONNX backend to PyTorch (total time and median per chunk), the resident memory each loaded
backend added, label agreement with PyTorch, the largest logits difference, and test accuracy
when the model is a fine-tuned classifier of the dataset's classes. Also on 512-token texts
(consecutive test titles joined) where the model has 512 positions. Load average before/after.

    python benchmarks/bench_onnx.py --model runs/<run>/finetune/model   # fine-tuned: accuracy too
    python benchmarks/bench_onnx.py --random 768x12 --n 500 --long 32   # bert-base-sized, random
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.inference.onnx_export import export_onnx
from nbutils.inference.predict import OnnxPredictor, Predictor

BACKENDS = ("torch", "onnx", "onnx-int8")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_classifier(vocab: str, label_names, out: Path, hidden: int, layers: int) -> Path:
    """A BERT of the real vocabulary with random weights and a spread-out random head (so labels
    are not near-ties): enough for speed and agreement, not for accuracy."""
    return make_random_classifier(vocab, label_names, out, hidden_size=hidden, num_layers=layers,
                                  num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                  head_std=2.0, prediction_max_length=512)


def long_texts(tokenizer, titles: list[str], count: int, tokens: int) -> list[str]:
    """``count`` texts of at least ``tokens`` WordPiece tokens: consecutive test titles joined."""
    texts, start = [], 0
    while len(texts) < count and start < len(titles):
        parts, n = [], 0
        while n < tokens and start < len(titles):
            parts.append(titles[start])
            n += len(tokenizer(titles[start], add_special_tokens=False)["input_ids"])
            start += 1
        texts.append("，".join(parts))
    return texts


def race(predictors: dict, texts: list[str], chunks: int, batch_size: int, max_length: int | None):
    """Time each predictor on the same chunks, rotating who goes first; returns times and frames."""
    size = -(-len(texts) // chunks)
    seconds = {name: 0.0 for name in predictors}
    per_chunk = {name: [] for name in predictors}
    frames = {name: [] for name in predictors}
    names = list(predictors)
    for c in range(chunks):
        chunk = texts[c * size:(c + 1) * size]
        if not chunk:
            break
        for name in names[c % len(names):] + names[:c % len(names)]:
            start = time.perf_counter()
            frame = predictors[name](chunk, batch_size=batch_size, max_length=max_length)
            took = time.perf_counter() - start
            seconds[name] += took
            per_chunk[name].append(took)
            frames[name].append(frame)
    import pandas as pd

    return seconds, per_chunk, {n: pd.concat(f, ignore_index=True) for n, f in frames.items()}


def report(title: str, n: int, seconds: dict, per_chunk: dict, frames: dict, labels=None) -> None:
    print(f"  {title}")
    for name in seconds:
        line = f"    {name:<10} {n / seconds[name]:8.1f} texts/s ({seconds[name]:6.1f} s)"
        if name != "torch":
            median = statistics.median(t / o for t, o in zip(per_chunk["torch"], per_chunk[name], strict=True))
            same = (frames[name]["label"] == frames["torch"]["label"]).mean()
            line += (f"  speed-up vs torch {seconds['torch'] / seconds[name]:.2f}x (median per chunk "
                     f"{median:.2f}x), labels agree {same:.2%}")
        if labels is not None:
            line += f", accuracy {(frames[name]['label'].to_numpy() == labels).mean():.2%}"
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--model", default="", help="fine-tuned model folder (accuracy is reported)")
    parser.add_argument("--random", default="128x2",
                        help="without --model: HIDDENxLAYERS of a random BERT (128x2: demo, 768x12: bert-base)")
    parser.add_argument("--n", type=int, default=10000, help="test titles to classify (10000: all)")
    parser.add_argument("--long", type=int, default=32, help="512-token texts (0: skip; needs 512 positions)")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--chunks", type=int, default=6, help="rotations per thread count")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    ds = load_dataset(args.data)
    # test.txt is sorted by class: a subset is drawn evenly from all of it, not its first rows
    n_test = len(ds.texts("test"))
    rows = np.sort(np.random.default_rng(0).permutation(n_test)[: min(args.n, n_test)])
    titles = [ds.texts("test")[i] for i in rows]
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir = Path(args.model)
        else:
            hidden, layers = (int(x) for x in args.random.split("x"))
            model_dir = random_classifier(args.vocab, ds.label_names, Path(tmp), hidden, layers)
        start = time.perf_counter()
        export_report = export_onnx(model_dir, Path(tmp) / "export")
        sizes = {f: (Path(tmp) / "export" / f).stat().st_size / 2**20 for f in export_report["files"].values()}
        print(f"model {model_dir if args.model else f'random BERT {args.random}'}; export + int8 + "
              f"checks {time.perf_counter() - start:.0f} s; files "
              + ", ".join(f"{f} {mb:.1f} MB" for f, mb in sizes.items())
              + "; logits difference on the export's own check batches: "
              + ", ".join(f"{k} {v:.1e}" for k, v in export_report["max_abs_logit_diff"].items()))

        # Resident memory each backend adds once loaded and warmed up on a few titles (weights
        # mapped from safetensors count only once touched by a forward pass).
        memory, predictors = {}, {}
        torch.set_num_threads(1)
        for backend in BACKENDS:
            before = rss_mb()
            predictors[backend] = (Predictor(model_dir, "cpu") if backend == "torch"
                                   else OnnxPredictor(Path(tmp) / "export", backend, threads=1))
            predictors[backend](titles[:64])
            memory[backend] = rss_mb() - before
        print("resident memory added by loading + a first batch: "
              + ", ".join(f"{k} {v:.0f} MB" for k, v in memory.items()))

        # Logits on the same token ids (untimed): how close the graphs are on real texts.
        cut = predictors["torch"].truncator(None, None)
        ids = [cut.cut(x) for x in predictors["torch"].tokenizer(titles, add_special_tokens=True)["input_ids"]]
        logits = {name: p.logits(ids, args.batch_size) for name, p in predictors.items()}
        for name in ("onnx", "onnx-int8"):
            diff = np.abs(logits[name] - logits["torch"])
            agree = (logits[name].argmax(1) == logits["torch"].argmax(1)).mean()
            print(f"{name} vs torch fp32 on {len(ids)} test titles: labels agree {agree:.4%}, "
                  f"max |logits difference| {diff.max():.2e} (mean {diff.mean():.2e})")

        labels = None
        if args.model and predictors["torch"].label_names == list(ds.label_names):
            labels = np.array([ds.label_names[ds.labels("test")[i]] for i in rows])
        elif args.model:
            print("model classes differ from the dataset's: no accuracy")
        predicted = np.bincount(logits["torch"].argmax(1), minlength=len(predictors["torch"].label_names))
        print(f"classes predicted by torch fp32 (texts per class): {predicted.tolist()}")

        long = []
        if args.long and predictors["torch"].max_positions >= 512:
            long = long_texts(predictors["torch"].tokenizer, ds.texts("test"), args.long, 512)
        elif args.long:
            print(f"no 512-token texts: the model has {predictors['torch'].max_positions} positions")

        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for backend in ("onnx", "onnx-int8"):
                predictors[backend] = OnnxPredictor(Path(tmp) / "export", backend, threads=threads)
            print(f"threads {threads} (torch.set_num_threads and ONNX Runtime intra-op threads):")
            seconds, per_chunk, frames = race(predictors, titles, args.chunks, args.batch_size, None)
            report(f"{len(titles)} test titles, {args.chunks} rotations", len(titles), seconds, per_chunk,
                   frames, labels)
            if long:
                seconds, per_chunk, frames = race(predictors, long, min(args.chunks, len(long)),
                                                  args.batch_size, 512)
                report(f"{len(long)} texts cut to 512 tokens", len(long), seconds, per_chunk, frames)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
