"""Training throughput and model FLOPs utilisation (MFU) of a bert-base classifier at max_length 128.

MFU = model FLOPs trained per second / the card's dense bf16 peak. Model FLOPs per sequence of s
real tokens (nbutils.training.mfu, checked against torch's FlopCounterMode in tests/test_mfu.py):

    6 * N * s + 12 * L * h * s^2 + 6 * (h^2 + h * C)      N = L * (4 h^2 + 2 h f)

that is 6 x matrix parameters x tokens, plus attention, plus pooler and classifier. Padding
tokens are not model FLOPs: a padded batch does the work but gets no credit for it.

The arms, each the project's Trainer path with one more of what the field uses for BERT training:

    fp32-eager            fp32, TF32 off, eager attention, per-tensor AdamW (the older repos' way)
    tf32-sdpa             fp32 weights, TF32 tensor-core matmuls, SDPA, fused AdamW
    bf16-sdpa             bf16 autocast, SDPA (flash/memory-efficient kernels), fused AdamW
    bf16-sdpa-compiled    the same, torch.compile
    bf16-packed-compiled  the same on padding-free batches: DataCollatorWithFlattening rows
                          (nbutils.training.packing) with flash_attention_2 where flash-attn is
                          installed, else flex_attention (sdpa on CPU, where flex has no backward)

Each arm's label is read back while it trains: the matmul precision torch actually used (TF32 or
IEEE fp32), the attention implementation, the optimizer and whether the model was compiled.
First a short batch-size sweep of the bf16-sdpa arm (OOM ends it) picks the batch with the most
samples/s; then every arm runs at that batch, the arms interleaved over --reps rounds.

Data: ``random`` (default): every sequence max_length real tokens (the usual BERT figure;
packing then only removes the mask); ``titles``: THUCNews titles (~20 tokens), padded to the
longest in each batch or packed, where packing removes most of the work.

    python benchmarks/bench_gpu_mfu.py                       # CUDA: sweep, then all arms
    python benchmarks/bench_gpu_mfu.py --data titles         # padded vs packed on real titles
    python benchmarks/bench_gpu_mfu.py --tiny --device cpu   # rehearsal of the script, no MFU claim

Measured once on an NVIDIA H200 with an earlier version (bf16 SDPA against fp32 eager): MFU
9.6% at batch 64, 24.3% at 256, 28.2% compiled (docs/speed.md, "On a GPU"); docs/gpu.md says how to rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback

from nbutils.training.mfu import config_train_flops, mfu, peak_tflops
from nbutils.training.packing import (
    PackedBertForSequenceClassification,
    PackedClassificationCollator,
)

REPO = Path(__file__).resolve().parents[1]
SWEEP_ARM = "bf16-sdpa"


@dataclass(frozen=True)
class Arm:
    name: str
    precision: str  # fp32 | tf32 | bf16
    attention: str  # eager | sdpa | packed
    fused_adamw: bool
    compiled: bool


ARMS = {arm.name: arm for arm in (
    Arm("fp32-eager", "fp32", "eager", False, False),
    Arm("tf32-sdpa", "tf32", "sdpa", True, False),
    Arm("bf16-sdpa", "bf16", "sdpa", True, False),
    Arm("bf16-sdpa-compiled", "bf16", "sdpa", True, True),
    Arm("bf16-packed-compiled", "bf16", "packed", True, True),
)}


class Sequences(torch.utils.data.Dataset):
    """Token id lists with a class label each (no padding: the collator decides)."""

    def __init__(self, ids: list[list[int]], labels: list[int]):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}

    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]


def random_sequences(n: int, seq: int, vocab: int, classes: int, seed: int = 0) -> Sequences:
    g = torch.Generator().manual_seed(seed)
    low = 1000 if vocab > 2000 else 5  # past [PAD], [UNK], [CLS], [SEP], [MASK] and the unused rows
    ids = torch.randint(low, vocab, (n, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
    return Sequences(ids.tolist(), torch.randint(0, classes, (n,), generator=g).tolist())


def title_sequences(n: int, seq: int, data_dir: Path, tokenizer) -> Sequences:
    from nbutils.data.dataset import load_dataset

    dataset = load_dataset(data_dir)
    texts, labels = list(dataset.texts("train")[:n]), [int(y) for y in dataset.labels("train")[:n]]
    if len(texts) < n:
        texts, labels = (texts * (n // len(texts) + 1))[:n], (labels * (n // len(labels) + 1))[:n]
    return Sequences(tokenizer(texts, truncation=True, max_length=seq)["input_ids"], labels)


class StepClock(TrainerCallback):
    """Wall time of the steps after ``warmup`` (CUDA synchronised, so the clock is honest), and
    the matmul precision in force while they ran."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end, self.steps, self.tf32 = warmup, None, None, 0, None

    @staticmethod
    def _sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self._sync()
            self.start = time.perf_counter()
            self.tf32 = tf32_in_force()
        elif state.global_step > self.warmup:
            self.steps += 1

    def on_train_end(self, args, state, control, **kwargs):
        self._sync()
        self.end = time.perf_counter()


def tf32_in_force() -> bool:
    """Whether CUDA fp32 matmuls run as TF32 right now (False on CPU: there is no TF32)."""
    if not torch.cuda.is_available():
        return False
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    return precision == "tf32" if precision not in (None, "none") else bool(matmul.allow_tf32)


def packed_attention(device: str) -> str:
    """flash_attention_2 (variable-length kernels) where flash-attn is installed, else
    flex_attention on CUDA; sdpa on CPU (flex has no CPU backward): correct but quadratic."""
    if device != "cuda":
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "flex_attention"
    return "flash_attention_2"


def training_arguments(arm: Arm, args, device: str, tmp: str) -> TrainingArguments:
    cuda = device == "cuda"
    # TF32 explicitly on or off: Trainer turns it on by itself for compiled runs otherwise
    tf32 = (arm.precision == "tf32") if cuda else None
    return TrainingArguments(
        output_dir=tmp, max_steps=args.warmup + args.steps, per_device_train_batch_size=args.batch_size,
        learning_rate=5e-5, warmup_steps=0.1, save_strategy="no", eval_strategy="no",
        logging_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=args.workers,
        dataloader_pin_memory=cuda, use_cpu=not cuda, bf16=arm.precision == "bf16", tf32=tf32,
        optim="adamw_torch_fused" if arm.fused_adamw else "adamw_torch", torch_compile=arm.compiled,
        remove_unused_columns=False, seed=0, data_seed=0,
    )


def run_arm(arm: Arm, args, config: BertConfig, data: Sequences, tokenizer, device: str) -> dict:
    """Train ``arm`` for warm-up + timed steps; its steady-state rates and what it ran with."""
    if args.no_compile:
        arm = dataclasses.replace(arm, compiled=False)
    attention = packed_attention(device) if arm.attention == "packed" else arm.attention
    arm_config = BertConfig.from_dict(config.to_dict())
    arm_config._attn_implementation = attention
    torch.manual_seed(0)
    if arm.attention == "packed":
        model = PackedBertForSequenceClassification(arm_config)
        collator = PackedClassificationCollator(flash_kwargs=attention.startswith("flash"))
    else:
        model = BertForSequenceClassification(arm_config)
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)
    clock = StepClock(args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(model=model, args=training_arguments(arm, args, device, tmp), train_dataset=data,
                          data_collator=collator, callbacks=[clock])
        trainer.model_accepts_loss_kwargs = False
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    seconds = clock.end - clock.start
    samples = clock.steps * args.batch_size
    lengths = data.lengths()
    # the timed steps see a random share of the data: its mean FLOPs per sequence
    flops_per_sample = config_train_flops(config, lengths) / len(lengths)
    return {"arm": arm.name, "batch_size": args.batch_size, "samples_per_s": samples / seconds,
            "tokens_per_s": samples * statistics.fmean(lengths) / seconds,
            "model_tflops": samples * flops_per_sample / seconds / 1e12, "attention": attention,
            "matmul_fp32_as": "tf32" if clock.tf32 else "ieee fp32", "autocast": arm.precision == "bf16",
            "optimizer": "adamw_torch_fused" if arm.fused_adamw else "adamw_torch", "compiled": arm.compiled,
            "packed": arm.attention == "packed"}


def sweep(args, config, data, tokenizer, device: str) -> tuple[int, list[dict]]:
    """The batch size with the most samples/s for the bf16-sdpa arm (a size that runs out of
    memory ends the sweep); every point measured."""
    points = []
    for batch in args.batch_sizes:
        try:
            point = run_arm(ARMS[SWEEP_ARM], argparse.Namespace(**{**vars(args), "batch_size": batch,
                            "steps": args.sweep_steps}), config, data, tokenizer, device)
        except torch.OutOfMemoryError:
            print(f"  sweep batch {batch}: out of memory", flush=True)
            break
        points.append(point)
        print(f"  sweep batch {batch:>5}: {point['samples_per_s']:9.1f} samples/s", flush=True)
    if not points:
        raise SystemExit(f"no batch size of {args.batch_sizes} fits in memory; try smaller --batch-sizes")
    return max(points, key=lambda p: p["samples_per_s"])["batch_size"], points


def run_rounds(args, config, data, tokenizer, device: str) -> tuple[list[dict], list[dict]]:
    """Every arm, --reps rounds, interleaved. An arm that fails (out of memory, a kernel or
    compiler the machine lacks) is recorded with its error and the others still run: one run on
    a borrowed GPU should give every number it can."""
    results, failed = [], []
    for rep in range(args.reps):
        for name in args.arms.split(","):
            try:
                result = run_arm(ARMS[name], args, config, data, tokenizer, device)
            except Exception as err:  # noqa: BLE001 -- recorded, and the next arm runs
                failed.append({"arm": name, "round": rep + 1, "error": f"{type(err).__name__}: {err}"[:2000]})
                print(f"  round {rep + 1} {name:<22}: FAILED {failed[-1]['error'][:300]}", flush=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            results.append(result)
            print(f"  round {rep + 1} {name:<22}: {result['samples_per_s']:9.1f} samples/s", flush=True)
    return results, failed


def summarise(results: list[dict], peaks: dict) -> list[dict]:
    """Median over the rounds per arm, with MFU against the bf16 peak (and the TF32 peak for the
    arm whose fp32 matmuls ran as TF32)."""
    rows = []
    for name in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == name]
        row = {**runs[0], **{k: statistics.median(r[k] for r in runs) for k in
                             ("samples_per_s", "tokens_per_s", "model_tflops")}, "rounds": len(runs)}
        row["mfu_bf16_peak"] = mfu(row["model_tflops"] * 1e12, peaks["bf16"])
        if row["matmul_fp32_as"] == "tf32":
            row["mfu_tf32_peak"] = mfu(row["model_tflops"] * 1e12, peaks["tf32"])
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu only with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer toy model: rehearses the script, no MFU claim")
    parser.add_argument("--seq", type=int, default=128, help="max_length in tokens")
    parser.add_argument("--data", choices=("random", "titles"), default="random")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data/raw/thucnews-titles")
    parser.add_argument("--vocab-dir", type=Path, default=REPO / "data/raw/bert-base-chinese-vocab")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--batch-sizes", default="64,128,256,512", help="the sweep (bf16-sdpa)")
    parser.add_argument("--batch-size", type=int, default=0, help="skip the sweep and use this batch size")
    parser.add_argument("--sweep-steps", type=int, default=15, help="timed steps per sweep point")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps per run (compilation happens here)")
    parser.add_argument("--reps", type=int, default=1, help="rounds over the arms (interleaved)")
    parser.add_argument("--no-compile", action="store_true",
                        help="run the *-compiled arms without torch.compile (their results say compiled: false)")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the card's dense bf16 peak, if not listed")
    parser.add_argument("--json", type=Path, help="also write the results here (JSON)")
    return parser


def device_facts(device: str) -> dict:
    if device != "cuda":
        import platform

        return {"device": "cpu", "card": platform.processor() or platform.machine(), "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {"device": "cuda", "card": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda}


def main(argv: list[str] | None = None) -> dict:
    from nbutils.core.io import write_json
    from nbutils.text.vocab import build_tokenizer

    args = build_parser().parse_args(argv)
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b]
    unknown = [a for a in args.arms.split(",") if a not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}: use --arms with some of {', '.join(ARMS)}")
    device = "cuda" if args.device in ("auto", "cuda") and torch.cuda.is_available() else args.device
    if device == "auto":
        device = "cpu"
    if device != "cuda" and not args.tiny:
        raise SystemExit("bench_gpu_mfu needs a CUDA GPU for bert-base; use --tiny --device cpu to rehearse it")
    if not (args.vocab_dir / "vocab.txt").is_file():
        raise SystemExit(f"{args.vocab_dir / 'vocab.txt'} not found: run `make data`, or pass --vocab-dir")
    tokenizer = build_tokenizer(args.vocab_dir / "vocab.txt")
    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256) if args.tiny else {}
    config = BertConfig(vocab_size=len(tokenizer), num_labels=10, max_position_embeddings=512, **sizes)
    n = max([args.batch_size, *args.batch_sizes]) * (args.warmup + max(args.steps, args.sweep_steps))
    data = (random_sequences(n, args.seq, config.vocab_size, 10) if args.data == "random"
            else title_sequences(n, args.seq, args.data_dir, tokenizer))
    facts = device_facts(device)
    peaks = ({"bf16": args.peak_tflops, "tf32": args.peak_tflops / 2} if args.peak_tflops
             else {kind: peak_tflops(facts["card"], kind) for kind in ("bf16", "tf32")})
    print(f"{facts}\nbert {config.num_hidden_layers} x {config.hidden_size}, max_length {args.seq}, data {args.data} "
          f"(mean {statistics.fmean(data.lengths()):.1f} tokens); dense bf16 peak: {peaks['bf16'] or 'unknown'} TFLOPS",
          flush=True)
    points = []
    if not args.batch_size:
        args.batch_size, points = sweep(args, config, data, tokenizer, device)
        print(f"best batch size: {args.batch_size}", flush=True)
    results, failed = run_rounds(args, config, data, tokenizer, device)
    rows = summarise(results, peaks)
    for row in rows:
        share = f", MFU {100 * row['mfu_bf16_peak']:.1f}% of bf16 peak" if row["mfu_bf16_peak"] else ""
        print(f"{row['arm']:<22} {row['samples_per_s']:9.1f} samples/s {row['model_tflops']:8.2f} model TFLOPS{share} "
              f"[matmul fp32 as {row['matmul_fp32_as']}, attention {row['attention']}, {row['optimizer']}"
              f"{', compiled' if row['compiled'] else ''}{', bf16 autocast' if row['autocast'] else ''}]")
    report = {**facts, "tiny": args.tiny, "data": args.data, "max_length": args.seq, "batch_size": args.batch_size,
              "peak_tflops": peaks, "sweep": points, "arms": rows, "failed_arms": failed, "command": " ".join(["bench_gpu_mfu.py", *(argv or sys.argv[1:])])}
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
