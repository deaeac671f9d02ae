"""Masked-LM training step: stock BertForMaskedLM head vs. the head on masked positions only,
vs. that head scoring only the tokens of the pre-training texts (``mlm_output_vocabulary: corpus``).

All three models hold the same weights and see the same batches (THUCNews headlines, the stock
collator's masks). Each round times one forward + backward of A (stock: the vocabulary decoder
scores every position), B (nbutils.pretraining.mlm: only masked positions reach the decoder) and C (B,
whose softmax runs over the tokens of the whole train split only), interleaved A/B/C/A/B/C so
that load drifts on a shared machine hit all alike. Prints the median seconds per step of each,
the ratios, and two checks on identical batches: A and B give the same loss, and C's training
loss is what C's saved head gives over the whole vocabulary. No dropout, as the demo's pre-training.

    python benchmarks/bench_mlm.py                       # demo size and batch (params/demo.yaml)
    python benchmarks/bench_mlm.py --mlm-probability 0.3
    python benchmarks/bench_mlm.py --hidden 768 --layers 12 --heads 12 --intermediate 3072
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from nbutils.core.paths import REPO_ROOT
from nbutils.pretraining.mlm import load_mlm_model, make_collator, tokenize_texts

SHARED = REPO_ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=Path, default=SHARED / "models/bert-base-chinese-vocab/vocab.txt")
    parser.add_argument("--titles", type=Path, default=SHARED / "data/thucnews-titles/train.txt")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mlm-probability", type=float, default=0.15)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--rounds", type=int, default=16, help="timed A/B pairs")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(str(args.vocab))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate,
                        max_position_embeddings=max(64, args.max_length), hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    folder = Path(__import__("tempfile").mkdtemp(prefix="bench_mlm_"))
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stock = BertForMaskedLM.from_pretrained(folder)
    masked_only = load_mlm_model(folder, masked_only_head=True)
    corpus = load_mlm_model(folder, masked_only_head=True)

    lines = args.titles.read_text(encoding="utf-8").splitlines()
    every = tokenize_texts([line.split("\t")[0] for line in lines], tokenizer, max_length=args.max_length)
    corpus.restrict_output_vocabulary(i for f in every for i in f["input_ids"])
    features = every[: args.batch_size * args.batches]
    collator = make_collator(tokenizer, seed=0, mlm_probability=args.mlm_probability)
    batches = [collator(features[i:i + args.batch_size]) for i in range(0, len(features), args.batch_size)]

    # Same batches, same weights: A and B must agree; C trains the loss its saved head gives.
    with torch.no_grad():
        for model in (stock, masked_only, corpus):
            model.eval()
        worst = max(abs(float(stock(**b).loss) - float(masked_only(**b).loss)) for b in batches)
        scored = [float(corpus(**b).loss) for b in batches]  # eval: the whole vocabulary
        corpus.train()
        worst_corpus = max(abs(float(corpus(**b).loss) - s) for b, s in zip(batches, scored, strict=True))

    def step(model, batch) -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        return time.perf_counter() - start

    arms = {"stock": stock, "masked_only": masked_only, "corpus": corpus}
    for model in arms.values():
        model.train()
        step(model, batches[0])  # warm-up: first-call allocations
    times = {name: [] for name in arms}
    for i in range(args.rounds):
        batch = batches[i % len(batches)]
        for name, model in arms.items():
            times[name].append(step(model, batch))

    a, b, c = (statistics.median(times[name]) for name in arms)
    tokens = statistics.mean(int(x["attention_mask"].sum()) for x in batches)
    print(f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
          f"{args.intermediate}, vocab {config.vocab_size}; batch {args.batch_size} headlines "
          f"(~{tokens:.0f} tokens), {args.mlm_probability:.0%} masked, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds")
    print(f"A stock head (all positions)   : median {a * 1000:8.1f} ms/step  ({tokens / a:8.0f} tokens/s)")
    print(f"B head on masked positions     : median {b * 1000:8.1f} ms/step  ({tokens / b:8.0f} tokens/s)")
    print(f"C B over the corpus's {len(corpus.output_token_ids):,} tokens: median {c * 1000:8.1f} ms/step  "
          f"({tokens / c:8.0f} tokens/s)")
    print(f"speed-up A/B: {a / b:.2f}x   B/C: {b / c:.2f}x   A/C: {a / c:.2f}x")
    print(f"largest |loss A - loss B| over {len(batches)} identical batches: {worst:.2e} "
          f"({'OK' if worst <= args.tolerance else 'FAIL'}, tolerance {args.tolerance:g})")
    print(f"largest |C training loss - C saved head's loss|: {worst_corpus:.2e} "
          f"({'OK' if worst_corpus <= args.tolerance else 'FAIL'})")
    if max(worst, worst_corpus) > args.tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
