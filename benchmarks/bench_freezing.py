"""Training-step cost of each freezing strategy, interleaved so a busy machine hits all alike.

The comparison notebook (05) times each strategy in its own run, one after the other; on a
shared machine the load changes between runs and so do those times. Here every strategy takes
one training step (forward, backward, AdamW update) on the same batch in turn, round after
round, starting the round from a different strategy each time, and the median step time per
strategy is compared with ``full``'s. Same model weights, same real THUCNews titles, same
batch size; only what trains differs.

    python benchmarks/bench_freezing.py --rounds 30
    python benchmarks/bench_freezing.py --model runs/<run>/pretrain/model --batch-size 32
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.training import freezing

SHARED = REPO_ROOT.parent / "shared"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: a random BERT of the demo size)")
    parser.add_argument("--data", default=str(SHARED / "data" / "thucnews-titles"))
    parser.add_argument("--vocab", default=str(SHARED / "models" / "bert-base-chinese-vocab" / "vocab.txt"))
    parser.add_argument("--hidden", type=int, default=128, help="random model: hidden size")
    parser.add_argument("--layers", type=int, default=2, help="random model: encoder layers")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=30, help="steps per strategy (after 2 warm-up rounds)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model) if args.model else make_random_bert(
            args.vocab, Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
            num_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden, max_position_embeddings=128)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        data = load_dataset(args.data)
        base = AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=len(data.label_names), attn_implementation="sdpa")
    texts, labels = data.texts("train"), data.labels("train")
    collate = DataCollatorWithPadding(tokenizer)
    batches = []
    for r in range(args.rounds + 2):
        rows = range(r * args.batch_size, (r + 1) * args.batch_size)
        enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=args.max_length)
        batch = collate([{"input_ids": ids, "labels": labels[i]} for ids, i in zip(enc["input_ids"], rows, strict=True)])
        batches.append(batch)

    strategies = freezing.strategies_for(base.config.num_hidden_layers)
    arms = {}
    for strategy in strategies:
        model = copy.deepcopy(base).train()
        summary = freezing.apply_strategy(model, strategy)
        if strategy.llrd_decay is not None:
            groups = freezing.llrd_param_groups(model, 5e-4, strategy.llrd_decay, 0.01)
        else:
            groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
        arms[strategy.name] = (model, torch.optim.AdamW(groups, lr=5e-4), summary.trainable_params, [])

    def step(name: str, batch) -> float:
        model, optimizer, _, _ = arms[name]
        start = time.perf_counter()
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    names = list(arms)
    torch.manual_seed(0)
    for r, batch in enumerate(batches):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            seconds = step(name, batch)
            if r >= 2:  # the first two rounds allocate optimizer state and warm kernels up
                arms[name][3].append(seconds)

    full = statistics.median(arms["full"][3])
    print(f"model: {model_dir if args.model else f'random BERT hidden {args.hidden}, {args.layers} layers'}; "
          f"batch {args.batch_size} titles, max_length {args.max_length}; {args.rounds} interleaved rounds; "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'strategy':<20}{'trainable':>12}{'median step ms':>16}{'speed-up vs full':>18}")
    for name, (_, _, trainable, times) in arms.items():
        median = statistics.median(times)
        print(f"{name:<20}{trainable:>12,}{1000 * median:>16.1f}{full / median:>17.2f}x")


if __name__ == "__main__":
    main()
