"""What the thread check (nbutils.runtime.thread_check) costs a real fine-tuning, and which case it finds.

Fine-tunes the demo's BERT (random weights of the real vocabulary: 128 hidden, 2 layers, 2 heads,
512 intermediate; batch 32, max_length 48, evaluation batch 128, as params/demo.yaml) through
``nbutils.training.finetune.finetune`` under the adaptive thread policy, so the governor and the check run as
in ``make demo``, and prints the check's record: the case (invariant or held), why, how many
product shapes it compared and the seconds it took against the training's wall time.

The check's cost comes up front (each new shape once), so one epoch shows the most it can cost;
the demo trains 8. On a CPU where a product differs it holds at the first such shape and stops
checking; to see the whole cost of the invariant case on such a CPU, select a code path whose
products agree, e.g. ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` on an Intel Xeon with AMX
(benchmarks/check_invariance_isa.py lists which agree).

    python benchmarks/bench_thread_check.py                       # 1 epoch, the precision auto picks
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python benchmarks/bench_thread_check.py
    python benchmarks/bench_thread_check.py --precision fp32 --epochs 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from nbutils.runtime import configure_process

POLICY = configure_process().threads  # before torch loads: the adaptive policy, as the runner does

from nbutils.checkpoints.random_bert import make_random_bert  # noqa: E402
from nbutils.core.paths import REPO_ROOT  # noqa: E402
from nbutils.data.dataset import load_dataset  # noqa: E402
from nbutils.runtime.machine import cpu_name  # noqa: E402
from nbutils.runtime.threads import machine_load  # noqa: E402
from nbutils.training.finetune import FinetuneConfig, finetune  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--precision", default="auto", help="auto | bf16 | fp32")
    parser.add_argument("--max-eval-samples", type=int, default=2000)
    args = parser.parse_args(argv)
    if not POLICY.adaptive:
        parser.error(f"the thread governor is off here ({POLICY.reason}): unset OMP_NUM_THREADS and "
                     "NBUTILS_THREAD_POLICY, on a machine with 2 or more CPUs")
    dataset = load_dataset(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_random_bert(args.vocab, Path(tmp) / "model", hidden_size=128, num_layers=2, num_heads=2,
                                     intermediate_size=512, max_position_embeddings=128)
        config = FinetuneConfig(max_length=48, epochs=args.epochs, batch_size=32, eval_batch_size=128,
                                learning_rate=5e-4, precision=args.precision, early_stopping_patience=0,
                                max_eval_samples=args.max_eval_samples, max_test_samples=1000)
        load = machine_load()
        start = time.monotonic()
        result = finetune(dataset, model_dir, Path(tmp) / "out", config, save_model=False)
        wall = time.monotonic() - start
        metrics = json.loads((Path(tmp) / "out" / "metrics.json").read_text(encoding="utf-8"))
    threads = metrics["threads"]
    bits = threads.get("bits", {})
    print(f"CPU: {cpu_name()}; ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')}; "
          f"load average at start {load}, at the end {machine_load()}")
    print(f"precision {metrics.get('precision', args.precision)}, {threads.get('steps')} steps, "
          f"steps at each count {threads.get('steps_at')}, held from step {threads.get('held_from_step')}")
    print(f"case: {bits.get('case')}: {bits.get('reason')}")
    print(f"check: {bits.get('seconds')} s for {bits.get('products_checked')} product shapes and "
          f"{bits.get('batches_checked')} batch; training {result.train_runtime_s:.1f} s (finetune() {wall:.1f} s): "
          f"{100 * bits.get('seconds', 0) / result.train_runtime_s:.2f}% of training")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
