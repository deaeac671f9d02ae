"""Prediction throughput: ``nbutils.predict`` vs. ``transformers.pipeline("text-classification")``.

Same model folder, same texts (the THUCNews test titles), CPU. The pipeline runs with its
defaults (one text per forward pass); ``nbutils.predict`` tokenizes all texts in one call,
sorts them by length and runs padded batches under ``torch.inference_mode``. The texts are
split into chunks and the two ways alternate chunk by chunk (A/B/A/B); model loading is
excluded from both. Prints texts/s of each, the ratio of total times, the median of the
per-chunk ratios, and whether every predicted label is identical.

    python benchmarks/bench_predict.py --model runs/<run>/finetune/model      # a fine-tuned model
    python benchmarks/bench_predict.py --threads 1                            # random 256x4 BERT
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.inference.predict import load_predictor, predict


def random_classifier(vocab: str, label_names, out: Path, hidden: int, layers: int) -> Path:
    """A small BERT with a random classification head: enough to time and compare labels."""
    return make_random_classifier(vocab, label_names, out, hidden_size=hidden, num_layers=layers,
                                  num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                  prediction_max_length=512)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT.parent / "shared/models/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--model", default="", help="fine-tuned model folder; default: random small BERT")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n", type=int, default=10000, help="test titles to classify (10000: all)")
    parser.add_argument("--chunks", type=int, default=4, help="A/B alternations")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier on a shared, busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ds = load_dataset(args.data)
    texts = ds.texts("test")[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else random_classifier(
            args.vocab, ds.label_names, Path(tmp), args.hidden, args.layers)
        pipe = transformers.pipeline("text-classification", model=str(model_dir), device="cpu")
        load_predictor(str(model_dir.resolve()), "cpu")  # load once, like the pipeline above
        predict(texts[:8], model_dir, device="cpu")  # warm-up both
        pipe(texts[:8])
        print(f"model {model_dir if args.model else f'random BERT {args.hidden}x{args.layers}'}, "
              f"{len(texts)} test titles in {args.chunks} chunks, torch threads {torch.get_num_threads()}")

        size = -(-len(texts) // args.chunks)
        times = {"nbutils.predict": 0.0, "pipeline": 0.0}
        ratios, ours, theirs = [], [], []
        for c in range(args.chunks):
            chunk = texts[c * size:(c + 1) * size]
            start = time.perf_counter()
            ours += predict(chunk, model_dir, batch_size=args.batch_size, device="cpu")["label"].tolist()
            t_ours = time.perf_counter() - start
            start = time.perf_counter()
            theirs += [r["label"] for r in pipe(chunk)]
            t_pipe = time.perf_counter() - start
            times["nbutils.predict"] += t_ours
            times["pipeline"] += t_pipe
            ratios.append(t_pipe / t_ours)
            print(f"  chunk {c + 1}: nbutils.predict {len(chunk) / t_ours:8.1f} texts/s, "
                  f"pipeline {len(chunk) / t_pipe:7.1f} texts/s, ratio {t_pipe / t_ours:.2f}x", flush=True)

    for name, seconds in times.items():
        print(f"{name:<16}: {len(texts) / seconds:8.1f} texts/s ({seconds:.1f} s)")
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"speed-up nbutils.predict / pipeline: {times['pipeline'] / times['nbutils.predict']:.2f}x "
          f"(median per chunk {statistics.median(ratios):.2f}x); identical labels: {same}/{len(texts)}")


if __name__ == "__main__":
    main()
