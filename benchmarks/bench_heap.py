"""Where training's memory comes from: glibc's heap, its own mmap per large block, huge pages.

Four ways of running the same training steps (the demo's 128x2 BERT, batch 32, bf16 autocast as
fine-tuning uses on CPUs with native bf16 or ``--precision fp32`` as masked-LM pre-training,
fused AdamW and gradients freed after every step as every nbutils training runs them, one thread), each in a fresh process
that imports nbutils first as the notebooks do, so nothing carries over:

- ``default``: glibc as it comes (a block is mapped on its own only above a threshold that glibc
  raises to the size of every such block freed, so after step 1 most activations come from the
  heap, whose freed fragments stay resident);
- ``mmap``: ``nbutils.runtime.memory.large_blocks_via_mmap`` (blocks >= 4 MiB mapped and unmapped every
  step: lower peak, but every step faults its activations' pages in again, 4 KiB at a time);
- ``mmap+thp``: the same plus ``THP_MEM_ALLOC_ENABLE=1``, torch's switch that advises the kernel
  to back tensors of 2 MiB or more with transparent huge pages (far fewer page faults): what
  ``nbutils run`` and the ``nbutils`` commands switch on for long inputs (``max_length`` >= 256),
  where ``finetune`` also maps large blocks (``nbutils.runtime.memory``);
- ``thp``: huge pages alone.

The arms run in turn (rotated each rep) at each max_length; it prints the median time per step,
peak RSS (``ru_maxrss``) and both as ratios to ``default``, and checks that every arm ends at the
same loss (only where memory comes from changes, not the numbers).

    python benchmarks/bench_heap.py                          # 48, 128 and 512 tokens, 2 reps, ~10 min on 2 cores
    python benchmarks/bench_heap.py --lengths 48 --steps 300 --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ARMS = {"default": {}, "mmap": {}, "mmap+thp": {"THP_MEM_ALLOC_ENABLE": "1"}, "thp": {"THP_MEM_ALLOC_ENABLE": "1"}}


def worker(arm: str, length: int, steps: int, warmup: int, precision: str) -> None:
    import importlib
    import resource

    importlib.import_module("nbutils")  # first, as every notebook does: its environment before torch loads
    import torch

    from nbutils.runtime.device import cpu_has_native_bf16

    torch.set_num_threads(1)
    autocast = precision == "bf16" or (precision == "auto" and cpu_has_native_bf16())
    if arm.startswith("mmap"):
        from nbutils.runtime.memory import large_blocks_via_mmap

        assert large_blocks_via_mmap(), "no glibc mallopt here"
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, num_labels=10, max_position_embeddings=512)
    model = BertForSequenceClassification(config).train()
    # fused, as nbutils.runtime.device has Trainer run it: the per-tensor AdamW allocates temporaries the
    # size of the 10.8 MB embedding every step, which made huge pages look good on titles (0.86x)
    # where the real path (no such temporaries) does not gain
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(1)

    def step() -> float:
        ids = torch.randint(100, 21000, (32, length), generator=generator)
        labels = torch.randint(0, 10, (32,), generator=generator)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    ms = (time.perf_counter() - start) / steps * 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT {ms:.3f} {peak:.1f} {loss!r} {'bf16' if autocast else 'fp32'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[48, 128, 512])
    parser.add_argument("--steps", type=int, default=0, help="timed steps per run (0: 7,200 / max_length, at least 6)")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="auto: bf16 autocast where the CPU multiplies bf16 natively, as fine-tuning does; "
                             "fp32 as masked-LM pre-training does")
    parser.add_argument("--worker", nargs=5, metavar=("ARM", "LENGTH", "STEPS", "WARMUP", "PRECISION"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        arm, length, steps, warmup, precision = args.worker
        worker(arm, int(length), int(steps), int(warmup), precision)
        return
    print(f"load average at start: {os.getloadavg()}")
    for length in args.lengths:
        steps = args.steps or max(6, 7200 // length)
        warmup = 10 if length <= 128 else 3
        results: dict[str, list[tuple[float, float, str]]] = {arm: [] for arm in ARMS}
        names = list(ARMS)
        for rep in range(args.reps):
            for arm in names[rep % len(names):] + names[:rep % len(names)]:
                env = {**os.environ, **ARMS[arm]}
                if arm in ("default", "mmap"):
                    env["THP_MEM_ALLOC_ENABLE"] = "0"  # whatever the caller's shell has
                out = subprocess.run([sys.executable, __file__, "--worker", arm, str(length), str(steps), str(warmup),
                                      args.precision],
                                     env=env, capture_output=True, text=True, check=True).stdout
                ms, peak, loss, used = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
                results[arm].append((float(ms), float(peak), loss))
                print(f"  {length:4d} tokens  {arm:9s} rep {rep + 1}: {float(ms):8.2f} ms/step  peak {float(peak):6.0f} MB")
        base_ms = statistics.median(r[0] for r in results["default"])
        base_peak = max(r[1] for r in results["default"])
        print(f"max_length {length}, batch 32, {used}, {steps} timed steps, median of {args.reps}:")
        for arm, runs in results.items():
            ms = statistics.median(r[0] for r in runs)
            peak = max(r[1] for r in runs)
            print(f"  {arm:9s} {ms:8.2f} ms/step ({ms / base_ms:.2f}x)  peak {peak:6.0f} MB ({peak / base_peak:.2f}x)")
        losses = {r[2] for runs in results.values() for r in runs}
        print(f"  final losses of every run {'identical' if len(losses) == 1 else 'DIFFER: ' + str(losses)}")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
