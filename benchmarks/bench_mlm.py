"""Masked-LM training step: stock BertForMaskedLM head vs. the head on masked positions only.

Both models hold the same weights and see the same batches (THUCNews headlines, the stock
collator's 15% masks). Each round times one forward + backward of A (stock: the vocabulary
decoder scores every position) and then B (nbutils.pretrain: only masked positions reach the
decoder), interleaved A/B/A/B so that load drifts on a shared machine hit both alike. Prints
the median seconds per step of each, the ratio, and the largest loss difference on identical
batches (eval mode, so dropout does not differ).

    python benchmarks/bench_mlm.py                       # demo size and batch (params/demo.yaml)
    python benchmarks/bench_mlm.py --hidden 768 --layers 12 --heads 12 --intermediate 3072
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

from nbutils.paths import REPO_ROOT
from nbutils.pretrain import load_mlm_model, make_collator, tokenize_texts

SHARED = REPO_ROOT.parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=Path, default=SHARED / "models/bert-base-chinese-vocab/vocab.txt")
    parser.add_argument("--titles", type=Path, default=SHARED / "data/thucnews-titles/train.txt")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches, cycled")
    parser.add_argument("--rounds", type=int, default=16, help="timed A/B pairs")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(str(args.vocab))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.heads, intermediate_size=args.intermediate,
                        max_position_embeddings=max(64, args.max_length))
    folder = Path(__import__("tempfile").mkdtemp(prefix="bench_mlm_"))
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    stock = BertForMaskedLM.from_pretrained(folder)
    masked_only = load_mlm_model(folder, masked_only_head=True)

    lines = args.titles.read_text(encoding="utf-8").splitlines()[: args.batch_size * args.batches]
    features = tokenize_texts([line.split("\t")[0] for line in lines], tokenizer, max_length=args.max_length)
    collator = make_collator(tokenizer, seed=0)
    batches = [collator(features[i:i + args.batch_size]) for i in range(0, len(features), args.batch_size)]

    # Same batches, same weights: the losses must agree.
    for model in (stock, masked_only):
        model.eval()
    with torch.no_grad():
        diffs = [abs(float(stock(**b).loss) - float(masked_only(**b).loss)) for b in batches]
    worst = max(diffs)

    def step(model, batch) -> float:
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        return time.perf_counter() - start

    for model in (stock, masked_only):
        model.train()
        step(model, batches[0])  # warm-up: first-call allocations
    times = {"stock": [], "masked_only": []}
    for i in range(args.rounds):
        batch = batches[i % len(batches)]
        times["stock"].append(step(stock, batch))
        times["masked_only"].append(step(masked_only, batch))

    a, b = statistics.median(times["stock"]), statistics.median(times["masked_only"])
    tokens = statistics.mean(int(x["attention_mask"].sum()) for x in batches)
    print(f"model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, intermediate "
          f"{args.intermediate}, vocab {config.vocab_size}; batch {args.batch_size} headlines "
          f"(~{tokens:.0f} tokens), {torch.get_num_threads()} threads, {args.rounds} interleaved rounds")
    print(f"A stock head (all positions)  : median {a * 1000:8.1f} ms/step  ({tokens / a:8.0f} tokens/s)")
    print(f"B head on masked positions    : median {b * 1000:8.1f} ms/step  ({tokens / b:8.0f} tokens/s)")
    print(f"speed-up A/B: {a / b:.2f}x")
    print(f"largest |loss A - loss B| over {len(batches)} identical batches: {worst:.2e} "
          f"({'OK' if worst <= args.tolerance else 'FAIL'}, tolerance {args.tolerance:g})")
    if worst > args.tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
