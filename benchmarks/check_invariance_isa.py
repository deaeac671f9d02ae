"""Which CPU code paths give the same training bits at 1 and 2 threads: the invariance checks under
each path the libraries let one select, each in a fresh process.

A machine has one CPU, but its libraries can be told to run the kernels of an older one:

- ``ONEDNN_MAX_CPU_ISA`` caps oneDNN, which runs the bf16 (autocast) matrix products: AVX2,
  AVX512_CORE, AVX512_CORE_BF16 (AMD Zen 4 / Intel Cooper Lake have no more), AVX512_CORE_AMX
  (Intel Sapphire Rapids and later), DEFAULT (the best this CPU has);
- ``ATEN_CPU_CAPABILITY`` picks ATen's vectorised kernels (LayerNorm, softmax, reductions,
  elementwise): default (no vectors), avx2, avx512;
- ``MKL_ENABLE_INSTRUCTIONS`` caps MKL, which runs the fp32 matrix products: AVX2, AVX512
  (fp32 rows only: bf16 products do not go through MKL).

For each path and precision the child process trains the small BERT of
tests/test_thread_invariance.py (fine-tuning and masked-LM pre-training, 5 batches of uneven
shapes) with ``make_thread_invariant``, once at 1 thread and once switching 2, 1, 2, ..., and
compares every parameter and the evaluation logits (``holds``: all equal); it also compares the
demo model's ``nn.Linear`` products (forward and both gradients) at 1 and 2 threads for batches of
32 texts of 1 to 48 tokens (``products``: how many of the 144 shapes differ). A path where either
differs is one where the thread check (nbutils.runtime.thread_check) holds one count in a run that
meets such a shape.
A path can only be selected up to what the CPU has: above it the library falls back to the CPU's
best, so the ``isa``/``aten`` columns say what actually ran.

    python benchmarks/check_invariance_isa.py            # 11 fresh processes; writes
                                                         # benchmarks/results/invariance_isa_<cpu>.txt
    python benchmarks/check_invariance_isa.py --quick    # bf16 under DEFAULT and AVX512_CORE_BF16 only
    python benchmarks/check_invariance_isa.py --grid     # every combination (21 processes)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nbutils.runtime.machine import cpu_name

REPO = Path(__file__).resolve().parent.parent
ONEDNN = ("DEFAULT", "AVX2", "AVX512_CORE", "AVX512_CORE_BF16", "AVX512_CORE_AMX")
ATEN = ("avx512", "avx2", "default")  # default: ATen's scalar kernels (no vector instructions)
MKL = ("unset", "AVX2")
TASKS = ("finetune", "pretrain")


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
                return [f for f in line.split(":", 1)[1].split() if f in wanted]
    except OSError:
        pass
    return []


def cpu_slug() -> str:
    """e.g. intel_xeon_processor_amx: the CPU's name and its best bf16 feature, for the file name."""
    flags = cpu_flags()
    best = "amx" if "amx_bf16" in flags else "avx512bf16" if "avx512_bf16" in flags else "avx512" \
        if "avx512f" in flags else "avx2" if "avx2" in flags else "base"
    name = re.sub(r"\(r\)|\(tm\)|cpu|@.*$|\d+-core", "", cpu_name().lower())
    return re.sub(r"[^a-z0-9]+", "_", name).strip("_") + f"_{best}"


# -- the child: one code path, both tasks, one precision --
def _onednn_isa() -> str:
    """What oneDNN reports it runs (its verbose header), from one bf16 product."""
    import torch

    with tempfile.TemporaryFile(mode="w+") as capture:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(capture.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                a = torch.randn(64, 64).bfloat16()
                (a @ a).sum()
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    found = re.search(r"isa:([^\n]*)", text)
    return found.group(1).strip() if found else "not reported"


def _products(precision: str) -> tuple[int, int]:
    """Demo-model nn.Linear products (forward and both gradients) that differ at 1 and 2 threads."""
    import torch

    from nbutils.runtime.invariant import _functions
    from nbutils.runtime.thread_check import ThreadCheck

    linear = _functions()["linear"]
    generator = torch.Generator().manual_seed(0)
    differ = total = 0
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    for inputs, outputs in ((128, 128), (128, 512), (512, 128)):
        weight = torch.randn(outputs, inputs, generator=generator, requires_grad=True)
        bias = torch.randn(outputs, generator=generator, requires_grad=True)
        for tokens in range(1, 49):
            x = torch.randn(32, tokens, inputs, generator=generator, requires_grad=True)
            check = ThreadCheck((1, 2), hold=1, trust_mkl_fp32=False)
            with autocast:
                check.product("linear", linear, x, weight, bias)
            differ += check.held
            total += 1
    return differ, total


def child(precision: str) -> dict:
    from nbutils.runtime import configure_process

    configure_process(quiet=True)  # MKL's reproducible mode, before torch loads (as every entry point does)
    sys.path.insert(0, str(REPO / "tests"))
    import test_thread_invariance as checks
    import torch

    started = time.monotonic()
    out = {"aten": torch.backends.cpu.get_cpu_capability(), "isa": _onednn_isa(), "precision": precision}
    for task in TASKS:
        differ = checks._differences(task, precision, invariant=True)
        out[task] = "holds" if not differ else f"differs: {', '.join(differ[:2])}" + (
            f" (+{len(differ) - 2})" if len(differ) > 2 else "")
    different, total = _products(precision)
    out["products"] = f"{different}/{total} differ"
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


# -- the parent: every path in a fresh process --
def paths(quick: bool, grid: bool) -> list[tuple[str, dict]]:
    """By default one selection at a time, the others left at the machine's best: bf16 under each
    oneDNN cap, then under each ATen kernel set; fp32 under each MKL cap, then each ATen kernel set.
    ``grid``: every combination (bf16: oneDNN x ATen; fp32: MKL x ATen)."""
    if quick:
        return [("bf16", {"ONEDNN_MAX_CPU_ISA": isa}) for isa in ("DEFAULT", "AVX512_CORE_BF16")]
    if grid:
        rows = [("bf16", {"ONEDNN_MAX_CPU_ISA": isa, "ATEN_CPU_CAPABILITY": aten}) for isa in ONEDNN for aten in ATEN]
        return rows + [("fp32", {"MKL_ENABLE_INSTRUCTIONS": mkl, "ATEN_CPU_CAPABILITY": aten})
                       for mkl in MKL for aten in ATEN]
    rows = [("bf16", {"ONEDNN_MAX_CPU_ISA": isa}) for isa in ONEDNN]
    rows += [("bf16", {"ATEN_CPU_CAPABILITY": aten}) for aten in ATEN[1:]]
    rows += [("fp32", {"MKL_ENABLE_INSTRUCTIONS": mkl}) for mkl in MKL]
    return rows + [("fp32", {"ATEN_CPU_CAPABILITY": aten}) for aten in ATEN[1:]]


def run_child(precision: str, selected: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("OMP_NUM_THREADS", None)
    env.pop("MKL_CBWR", None)
    for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS"):
        env.pop(name, None)
    env.update({k: v for k, v in selected.items() if v != "unset"})
    done = subprocess.run([sys.executable, __file__, "--child", precision], env=env, capture_output=True,
                          text=True, timeout=1800)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"precision": precision, "error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def table(rows: list[tuple[dict, dict]]) -> str:
    header = ("precision", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "aten", "isa",
              "finetune", "pretrain", "products", "seconds")
    lines = ["\t".join(header)]
    for selected, result in rows:
        if "error" in result:
            lines.append(f"{result['precision']}\t" + "\t".join(selected.get(k, "best") for k in header[1:4])
                         + f"\terror: {result['error']}")
            continue
        lines.append("\t".join([result["precision"], *(selected.get(k, "best") for k in header[1:4]),
                                result["aten"], result["isa"], result["finetune"], result["pretrain"],
                                result["products"], str(result["seconds"])]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=("fp32", "bf16"), help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="bf16 under DEFAULT and AVX512_CORE_BF16 only")
    parser.add_argument("--grid", action="store_true", help="every combination (21 processes) instead of one "
                        "selection at a time (11)")
    parser.add_argument("--jobs", type=int, default=1, help="child processes at a time (each uses 2 threads "
                        "at most; several at once only add waiting, never change a bit)")
    parser.add_argument("--out", default="", help="result file (default benchmarks/results/invariance_isa_<cpu>.txt)")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    from concurrent.futures import ThreadPoolExecutor

    import torch

    load_start = os.getloadavg()
    selections = paths(args.quick, args.grid)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each child is its own process
        results = list(pool.map(lambda path: run_child(*path), selections))
    rows = [(selected, result) for (_, selected), result in zip(selections, results, strict=True)]
    text = table(rows)
    print(text)
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"invariance_isa_{cpu_slug()}.txt"
    header = (f"# python benchmarks/check_invariance_isa.py{' --quick' if args.quick else ''}\n"
              f"# CPU: {cpu_name()} ({', '.join(cpu_flags())}); {os.cpu_count()} CPUs; torch {torch.__version__}\n"
              f"# load average (1, 5, 15 min) at start {[round(x, 2) for x in load_start]}, "
              f"at the end {[round(x, 2) for x in os.getloadavg()]}\n"
              "# finetune/pretrain: every parameter and the logits equal after training at 1 thread and switching "
              "2,1,2,... (holds), else the first tensors that differ; products: demo-model nn.Linear products "
              "(forward and gradients, 32 texts x 1..48 tokens) that differ at 1 and 2 threads. Where a row differs, "
              "nbutils.runtime.thread_check finds it in a run that meets such a shape and holds one count\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(header + text + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"\nwritten: {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
