"""GPU training throughput and MFU of a bert-base-sized classifier at max_length 128.

Model FLOPs utilisation (MFU) = model FLOPs actually trained per second / the card's dense
bf16 peak. Forward FLOPs per token and layer, counting a multiply-add as 2: Q, K, V and output
projections 8h^2, feed-forward 16h^2, attention scores and weighted sum 4sh; training costs
about 3x the forward pass, so ``3 * L * (24 h^2 + 4 s h)`` per token (embeddings, pooler and
classifier are negligible).

Two ways, alternated A/B/A/B with the same random weights and the same batches of 128 random
token ids: the project's path (Trainer, bf16 autocast, SDPA attention) and the older repos'
way (fp32, eager attention). Steady-state time is measured after warm-up steps.

    python benchmarks/bench_gpu_mfu.py                    # on a CUDA machine
    python benchmarks/bench_gpu_mfu.py --tiny --device cpu  # checks the script itself, no MFU claim

Measured once on an NVIDIA H200 (docs/speed.md, "On a GPU"): MFU 9.6% at batch 64, 24.3% at 256, 28.2% compiled.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback

from nbutils.runtime.device import choose_device

# Dense (no sparsity) bf16 tensor-core peaks in TFLOPS, by a substring of the device name.
# Order matters: the first match wins ("H100 PCIe" before "H100").
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def train_flops_per_token(layers: int, hidden: int, seq: int) -> float:
    """Forward 2 FLOPs per multiply-add: per layer 24h^2 (projections + FFN) + 4sh (attention); x3 for training."""
    return 3.0 * layers * (24.0 * hidden * hidden + 4.0 * seq * hidden)


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seq: int, vocab: int, classes: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1000, vocab, (n, seq), generator=g)
        self.labels = torch.randint(0, classes, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


class StepClock(TrainerCallback):
    """Wall time of the steps after ``warmup`` (synchronising CUDA so the clock is honest)."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self._sync()
            self.start = time.perf_counter()
        elif state.global_step > self.warmup:
            self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        self._sync()
        self.end = time.perf_counter()


def run(arm: str, args, config: BertConfig, data, device: str) -> float:
    """Samples/s of steady-state training for one arm."""
    project = arm == "project"
    choice = choose_device(device)
    torch.manual_seed(0)
    config._attn_implementation = "sdpa" if project else "eager"
    model = BertForSequenceClassification(config)
    precision = choice.training_args() if project else {"use_cpu": choice.device == "cpu"}
    clock = StepClock(args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
            learning_rate=5e-5, warmup_steps=0.1, save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=2,
            dataloader_pin_memory=choice.device == "cuda",
            torch_compile=project and args.compile, **precision,
        )
        trainer = Trainer(model=model, args=targs, train_dataset=data, callbacks=[clock])
        trainer.model_accepts_loss_kwargs = False
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return clock.steps * args.batch_size / (clock.end - clock.start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps per run")
    parser.add_argument("--reps", type=int, default=2, help="A/B pairs")
    parser.add_argument("--compile", action="store_true", help="torch.compile the project arm")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="override the card's dense bf16 peak")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy model to test the script on CPU")
    args = parser.parse_args()

    choice = choose_device(args.device)
    if choice.device != "cuda" and not args.tiny:
        raise SystemExit(f"needs a CUDA GPU ({choice.describe()}); use --tiny --device cpu to test the script")
    if args.tiny:
        config = BertConfig(vocab_size=21128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=256, num_labels=10)
    else:
        config = BertConfig(vocab_size=21128, num_labels=10)  # bert-base: 12 x 768, 12 heads, FFN 3072
    data = RandomTokens(args.batch_size * (args.warmup + args.steps), args.seq, config.vocab_size, 10)
    name = torch.cuda.get_device_name(0) if choice.device == "cuda" else choice.name
    peak = args.peak_tflops or peak_tflops(name)
    flops_per_sample = train_flops_per_token(config.num_hidden_layers, config.hidden_size, args.seq) * args.seq
    print(f"{choice.describe()}\ncard: {name}; dense bf16 peak: {f'{peak:.0f} TFLOPS' if peak else 'unknown (pass --peak-tflops)'}")
    print(f"model: {config.num_hidden_layers} x {config.hidden_size}, seq {args.seq}, batch {args.batch_size}; "
          f"{flops_per_sample / 1e9:.1f} GFLOPs per training sample")

    results = {f"project ({choice.precision}, sdpa)": [], "older repos (fp32, eager)": []}
    for rep in range(args.reps):
        for arm in results:
            rate = run("project" if arm.startswith("project") else "old", args, config, data, args.device)
            results[arm].append(rate)
            print(f"  rep {rep + 1} {arm:<26}: {rate:8.1f} samples/s", flush=True)
    for arm, rates in results.items():
        rate = statistics.median(rates)
        tflops = rate * flops_per_sample / 1e12
        mfu = f", MFU {100 * tflops / peak:.1f}%" if peak else ""
        print(f"{arm:<26}: median {rate:8.1f} samples/s, {tflops:7.1f} model TFLOPS{mfu}")
    a, b = (statistics.median(r) for r in results.values())
    print(f"speed-up project / older repos: {a / b:.2f}x")


if __name__ == "__main__":
    main()
