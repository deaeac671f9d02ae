"""Prediction with long texts tokenized whole (``count_tokens=True``) against tokenized only at the
ends the model keeps (the default, ``Truncator.cut_with_counts``): texts/s and their ratio.

Both ways give the model the same ids (the labels and ``truncated`` are compared, and must be
equal); only the whole way counts every text's tokens (``n_tokens``). Texts: the dataset's test
titles, and texts of ``--tokens`` WordPiece tokens (consecutive test titles joined, as in
``bench_backends.py``), cut as the model was trained. Backend torch-fp32 at ``--threads``. The two
ways classify the same chunks of texts in alternating order; texts/s is per chunk (median), the
ratio the median over chunks of the per-chunk time ratio.

    python benchmarks/bench_predict_cut.py --model runs/<run>/finetune/model --n 4000 --long 1200
    python benchmarks/bench_predict_cut.py --random 768x12 --n 500 --long 64   # bert-base size, random
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_backends import long_texts

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.inference.predict import Predictor
from nbutils.runtime.machine import cpu_name

WAYS = {"whole": True, "windows": False}  # count_tokens


def run_cell(predictor: Predictor, texts: list[str], chunks: int) -> dict:
    size = -(-len(texts) // chunks)
    took = {way: [] for way in WAYS}
    frames = {way: [] for way in WAYS}
    for c in range(chunks):
        part = texts[c * size:(c + 1) * size]
        for way in (list(WAYS) if c % 2 == 0 else list(WAYS)[::-1]):
            start = time.perf_counter()
            frames[way].append(predictor(part, count_tokens=WAYS[way]))
            took[way].append(time.perf_counter() - start)
    labels = {way: [x for f in frames[way] for x in f["label"]] for way in WAYS}
    truncated = {way: [x for f in frames[way] for x in f["truncated"]] for way in WAYS}
    return {"texts_per_s": {way: size / statistics.median(took[way]) for way in WAYS},
            "ratio": statistics.median(a / b for a, b in zip(took["whole"], took["windows"], strict=True)),
            "same_labels": labels["whole"] == labels["windows"],
            "same_truncated": truncated["whole"] == truncated["windows"],
            "truncated_share": sum(truncated["whole"]) / len(texts)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a fine-tuned model folder")
    parser.add_argument("--random", help="HIDDENxLAYERS: a random classifier of that size instead")
    parser.add_argument("--data", default=str(REPO_ROOT / "data" / "raw" / "thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT / "data" / "raw" / "bert-base-chinese-vocab" / "vocab.txt"))
    parser.add_argument("--n", type=int, default=4000, help="test titles")
    parser.add_argument("--long", type=int, default=1200, help="long texts (0: none)")
    parser.add_argument("--tokens", type=int, default=512, help="tokens per long text")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunks", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ds = load_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else None
        if model is None:
            hidden, layers = (int(x) for x in args.random.split("x"))
            model = make_random_classifier(args.vocab, ds.label_names, Path(tmp) / "random", hidden_size=hidden,
                                           num_layers=layers, num_heads=max(1, hidden // 64),
                                           intermediate_size=4 * hidden, head_std=2.0, prediction_max_length=48)
        predictor = Predictor(model, "cpu", backend="torch-fp32", threads=args.threads)
        titles = ds.texts("test")
        cells = {"titles": titles[: args.n]}
        if args.long:
            cells[f"{args.tokens}-token texts"] = long_texts(predictor.tokenizer, titles, args.long, args.tokens)
        print(f"{cpu_name()}, {os.cpu_count()} CPUs, {args.threads} thread(s); model {model}; cut to "
              f"{predictor.train_config.get('max_length')} tokens ({predictor.train_config.get('truncation')}); "
              f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        predictor(titles[:256])  # first calls (allocations, the tokenizer's caches) outside the timing
        for name, texts in cells.items():
            r = run_cell(predictor, texts, args.chunks)
            speed = r["texts_per_s"]
            print(f"{name:16s} {len(texts):6d} texts, {r['truncated_share']:6.1%} cut: whole {speed['whole']:8.1f} "
                  f"texts/s (median chunk), windows {speed['windows']:8.1f} texts/s, whole/windows time {r['ratio']:.2f}x; "
                  f"same labels {r['same_labels']}, same truncated {r['same_truncated']}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
