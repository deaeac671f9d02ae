"""What capping oneDNN below AMX costs bf16 fine-tuning: the price of bf16 products that give the
same bits at any thread count on an Intel Xeon with AMX (benchmarks/check_invariance_isa.py: under
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 none of the demo model's products differ; with AMX some
weight gradients do).

Each round runs two fresh processes, A (oneDNN's best, AMX here) then B (the cap), B first every
other round; each times ``--steps`` fine-tuning steps (autocast bf16 forward, backward, fused AdamW)
of the demo BERT (128 hidden, 2 layers, 512 intermediate, vocabulary 21,128) on batches of 32
texts of 40 tokens, at ``--threads`` threads, after 5 warm-up steps. Prints the median step time
of each arm and the ratio B/A per round and over all rounds.

    python benchmarks/bench_onednn_isa.py --rounds 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CAP = "AVX512_CORE_BF16"


def child(steps: int, threads: int) -> dict:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=21128, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=128, num_labels=10)
    config._attn_implementation = "sdpa"
    model = BertForSequenceClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(1, 21128, (32, 40))
    labels = torch.randint(0, 10, (32,))
    times = []
    for step in range(steps + 5):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 5:
            times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times)}


def run(arm: str, steps: int, threads: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS")}
    if arm == "B":
        env["ONEDNN_MAX_CPU_ISA"] = CAP
    out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(steps), "--threads", str(threads)],
                         env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])["median_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.steps, args.threads)))
        return 0
    print(f"load average at start: {os.getloadavg()}")
    ratios, a_all, b_all = [], [], []
    for r in range(args.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        got = {arm: run(arm, args.steps, args.threads) for arm in order}
        a_all.append(got["A"])
        b_all.append(got["B"])
        ratios.append(got["B"] / got["A"])
        print(f"round {r + 1} ({'/'.join(order)}): A (oneDNN best) {1000 * got['A']:.1f} ms, "
              f"B ({CAP}) {1000 * got['B']:.1f} ms, B/A {ratios[-1]:.3f}", flush=True)
    print(f"median step: A {1000 * statistics.median(a_all):.1f} ms, B {1000 * statistics.median(b_all):.1f} ms; "
          f"B/A median {statistics.median(ratios):.3f} over {args.rounds} rounds at {args.threads} thread(s); "
          f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
