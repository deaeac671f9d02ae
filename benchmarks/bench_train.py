"""Training throughput: the project's fine-tuning path vs. the way the older repos train.

Both arms run Hugging Face Trainer on the same model (same initial weights), the same training
examples in the same number of steps with the same batch size and learning-rate schedule:

- project: ``nbutils.training.finetune``'s defaults -- titles tokenized once in one batched call of the fast
  tokenizer and cut on token ids (``nbutils.text.tokenization.Truncator``), ``DataCollatorWithPadding`` (each
  batch padded to its longest title), SDPA attention, and the precision ``nbutils.runtime.device``
  chooses: bf16 autocast on a GPU and on CPUs with native bf16 (AVX512-BF16 / AMX), else fp32;
  optionally length buckets in random order (``--group-by-length 1``);
- older repos: every example tokenized inside the data loader's ``__getitem__`` and padded to
  ``max_length``, eager attention, fp32 (pybert / Bert-Chinese-Text-Classification-Pytorch style).

Each rep trains both arms (A then B, the next rep B then A) from the same random initial weights
on the same examples, with its own seed (seed, seed+1, ...): the median of the real samples/s (examples trained / wall
time of ``trainer.train``, tokenization included for the project arm) gives the speed-up, and the
dev accuracies over the seeds say whether the two arms learn equally well (mean, spread and the
paired difference project - older repos).

    python benchmarks/bench_train.py --reps 3                  # ~4 min on a quiet 2-core CPU
    python benchmarks/bench_train.py --precision fp32          # project arm without bf16
    python benchmarks/bench_train.py --group-by-length 1       # project arm with length buckets
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)
from transformers.trainer_callback import PrinterCallback

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.runtime.device import choose_device
from nbutils.text.tokenization import EncodedTexts, Truncator, load_tokenizer
from nbutils.training.finetune import LengthBucketTrainer


class PerExampleTokenized(torch.utils.data.Dataset):
    """The older repos' data path: tokenize and pad each example when the loader asks for it."""

    def __init__(self, texts, labels, tokenizer, max_length):
        self.texts, self.labels, self.tokenizer, self.max_length = texts, labels, tokenizer, max_length

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        enc = self.tokenizer(self.texts[i], padding="max_length", truncation=True, max_length=self.max_length)
        return {**{k: torch.tensor(v) for k, v in enc.items()}, "labels": self.labels[i]}


def run_arm(arm, args, model_dir, train, dev, label_names, seed):
    """Train one arm from ``model_dir``'s weights with ``seed``; return (samples/s, dev accuracy)."""
    choice = choose_device(args.device, args.precision)
    project = arm == "project"
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(label_names), attn_implementation="sdpa" if project else "eager")
    tokenizer = load_tokenizer(model_dir)
    precision = choice.training_args() if project else {"use_cpu": choice.device == "cpu"}
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=args.lr, warmup_steps=0.1, lr_scheduler_type="linear", weight_decay=0.01,
            seed=seed, data_seed=seed, save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True,
            train_sampling_strategy="random",  # project arm: length buckets via nbutils' Trainer
            **precision,
        )
        start = time.perf_counter()
        if project:
            cut = Truncator(tokenizer, args.max_length)
            data = EncodedTexts(cut(train[0]), train[1])
            collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if choice.device == "cuda" else None)
        else:
            data = PerExampleTokenized(train[0], train[1], tokenizer, args.max_length)
            collator = default_data_collator
        trainer = (LengthBucketTrainer if project else Trainer)(
            model=model, args=targs, train_dataset=data, data_collator=collator, processing_class=tokenizer)
        trainer.group_by_length = project and bool(args.group_by_length)
        trainer.model_accepts_loss_kwargs = False  # same loss scaling in both arms (see nbutils.training.finetune)
        trainer.remove_callback(PrinterCallback)
        prep = time.perf_counter() - start
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start + (prep if project else 0.0)
    samples = args.steps * args.batch_size
    # Dev accuracy, computed the same way for both arms (fixed padding, no grouping).
    model.eval()
    enc = tokenizer(dev[0], padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    device = next(model.parameters()).device
    with torch.inference_mode():
        preds = torch.cat([
            model(input_ids=enc["input_ids"][i:i + 256].to(device),
                  attention_mask=enc["attention_mask"][i:i + 256].to(device)).logits.argmax(-1).cpu()
            for i in range(0, len(dev[0]), 256)])
    accuracy = float((preds.numpy() == np.asarray(dev[1])).mean())
    return samples / seconds, accuracy


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT.parent / "shared/data/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT.parent / "shared/models/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--model", default="", help="model folder; default: a random small BERT of --vocab")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--reps", type=int, default=3, help="A/B pairs, each with its own seed")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32, help="both arms; titles are at most 32 tokens")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dev-samples", type=int, default=2000)
    parser.add_argument("--group-by-length", type=int, default=0,
                        help="project arm: length-grouped batches (off by default, as in nbutils.training.finetune)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", help="project arm: auto | bf16 | fp32 (nbutils.runtime.device)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default); 1 is steadier on a shared, busy machine")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    full = load_dataset(args.data)
    dev_split = full.subsample({"train": 0, "dev": args.dev_samples, "test": 0}, seed=args.seed)
    dev = (dev_split.texts("dev"), dev_split.labels("dev"))
    print(f"{choose_device(args.device, args.precision).describe()}\nmodel "
          f"{args.model if args.model else f'random BERT {args.hidden}x{args.layers}'}, {args.steps} steps x "
          f"{args.batch_size}, max_length {args.max_length}, torch threads {torch.get_num_threads()}, "
          f"{args.reps} seeds, {len(dev[0])} dev titles")
    results = {"project": [], "older repos": []}
    for rep in range(args.reps):
        seed = args.seed + rep  # initial weights, training sample and data order
        ds = full.subsample({"train": args.steps * args.batch_size, "dev": 0, "test": 0}, seed=seed)
        train = (ds.texts("train"), ds.labels("train"))
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = args.model or str(make_random_bert(
                args.vocab, Path(tmp) / "model", hidden_size=args.hidden, num_layers=args.layers,
                num_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden, seed=seed))
            # alternate which arm goes first, so one-off warm-up costs do not always land on one arm
            for arm in (list(results) if rep % 2 == 0 else list(results)[::-1]):
                rate, acc = run_arm("project" if arm == "project" else "old", args, model_dir, train, dev,
                                    full.label_names, seed)
                results[arm].append((rate, acc))
                print(f"  seed {seed} {arm:<11}: {rate:7.1f} samples/s, dev accuracy {acc:.4f}", flush=True)
    med = {arm: statistics.median(r for r, _ in runs) for arm, runs in results.items()}
    for arm, runs in results.items():
        accs = [a for _, a in runs]
        spread = f" +- {statistics.stdev(accs):.4f} (sd over seeds)" if len(accs) > 1 else ""
        print(f"{arm:<11}: median {med[arm]:7.1f} samples/s, dev accuracy after {args.steps} steps "
              f"{statistics.mean(accs):.4f}{spread}")
    diffs = [p[1] - o[1] for p, o in zip(results["project"], results["older repos"], strict=True)]
    paired = f"{statistics.mean(diffs):+.4f}"
    if len(diffs) > 1:
        paired += f" +- {statistics.stdev(diffs) / len(diffs) ** 0.5:.4f} (standard error)"
    print(f"speed-up project / older repos: {med['project'] / med['older repos']:.2f}x; "
          f"dev accuracy difference, paired by seed: {paired}")

if __name__ == "__main__":
    main()
