"""The GPU path in one prepared run: every notebook, then MFU, one results file.

    make gpu-check                 # on a CUDA machine (at most 8 minutes on one H100/H200)
    make gpu-check DEVICE=cpu      # the rehearsal: the same steps at smoke sizes on the CPU

1. ``nbutils run`` of notebooks 01-06 with ``params/gpu-check.yaml`` (a bert-base-sized BERT of
   random weights from the real vocabulary, CUDA + bf16, step budgets that let each stage
   finish). The rehearsal lays every value of ``params/smoke.yaml`` over it and runs on the CPU.
2. ``benchmarks/bench_gpu_mfu.py``: a batch-size sweep, then every arm (fp32-eager, TF32,
   bf16 SDPA, compiled, packed) at the best batch size (the rehearsal: ``--tiny`` sizes).
3. One JSON file: card, driver, torch, CUDA, every stage's seconds, the MFU arms, and whether
   the whole check stayed within its budget. On CUDA it goes to ``benchmarks/results/``; the
   rehearsal writes it into its run directory (nothing in the repository changes).

A stage that fails is recorded (with the runner's error) and the check goes on to the benchmark,
so one run on a GPU always yields a results file. docs/gpu.md has the time budget.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 480  # the whole check on one GPU: notebooks + benchmark
BENCH_MIN_S = 180  # the benchmark gets this long even after slow notebooks (the file then says "over")
# What notebooks may take on the GPU before the benchmark (per cell: papermill's timeout)
CELL_TIMEOUT_S = {"cuda": 300, "cpu": 900}
BENCH_ARGS = {
    # the sweep in bf16 eager, then 5 arms x (6 warm-up + 20 timed) steps (docs/gpu.md, the budget)
    "cuda": ["--batch-sizes", "256,512", "--sweep-steps", "8", "--steps", "20", "--warmup", "6"],
    # the rehearsal: a 2-layer toy model, a few steps (no MFU claim on a CPU); compiling it would
    # cost a minute of CPU per compiled arm, so those arms run uncompiled (and say so)
    "cpu": ["--tiny", "--device", "cpu", "--batch-sizes", "4,8", "--sweep-steps", "2", "--steps", "3",
            "--warmup", "1", "--workers", "0", "--no-compile"],
}


def rehearsal_overrides() -> dict:
    """The CPU rehearsal: every value params/smoke.yaml sets, on the CPU."""
    from nbutils.pipeline.runner import load_profile

    return {**load_profile("smoke"), "device": "cpu"}


def machine_facts(device: str) -> dict:
    """Card, driver, torch/CUDA/transformers versions and the host, for the results file."""
    import torch
    import transformers

    facts = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda,
             "transformers": transformers.__version__, "python": platform.python_version(),
             "host_cpu": _cpu_model(), "host_cpus": os.cpu_count()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts.update(card=props.name, gpus=torch.cuda.device_count(),
                     memory_gib=round(props.total_memory / 2**30, 1), driver=_nvidia_smi("driver_version"))
    else:
        facts.update(card=None, gpus=0, driver=None)
    return facts


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or platform.machine()


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def run_notebooks(device: str, runs_dir: Path, overrides: dict) -> dict:
    """Notebooks 01-06 through the runner; each stage's status and seconds from the manifest."""
    from nbutils.core.errors import NbutilsError
    from nbutils.pipeline.runner import run_pipeline

    values = {**(rehearsal_overrides() if device == "cpu" else {}), **overrides}
    started = time.perf_counter()
    error = None
    try:
        root = run_pipeline("gpu-check", values, runs_dir=runs_dir, cell_timeout=CELL_TIMEOUT_S[device])
    except NbutilsError as err:  # RunFailed: a stage failed; the manifest says which
        error = str(err)
        root = _newest_run(runs_dir)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8")) if root else {}
    stages = [{"notebook": n["name"], "status": n["status"], "seconds": n.get("duration_s")}
              for n in manifest.get("notebooks", [])]
    return {"run_dir": str(root) if root else None, "status": manifest.get("status", "failed"),
            "error": error, "seconds": time.perf_counter() - started, "stages": stages}


def _newest_run(runs_dir: Path) -> Path | None:
    runs = sorted(runs_dir.glob("*-gpu-check*"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def run_benchmark(device: str, timeout_s: float, extra: list[str]) -> dict:
    """bench_gpu_mfu.py in its own process (its memory and compiled graphs go with it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mfu.json"
        cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu_mfu.py"), *BENCH_ARGS[device], *extra,
               "--json", str(out)]
        started = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
            log, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as err:
            log, code = f"{err.stdout or ''}{err.stderr or ''}\nstopped after {timeout_s:.0f} s", "timeout"
        seconds = time.perf_counter() - started
        report = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else None
    print(log[-4000:], flush=True)
    return {"command": " ".join(cmd[1:-2]), "exit": code, "seconds": seconds, "report": report,
            "log_tail": None if report else log[-3000:]}


def summary(results: dict) -> str:
    """A few lines for the terminal: stage seconds, best MFU, within budget or not."""
    lines = [f"card: {results['machine']['card'] or results['machine']['host_cpu']} "
             f"(driver {results['machine']['driver']}, torch {results['machine']['torch']})"]
    lines += [f"  {s['notebook']:<24} {s['status']:<8} {s['seconds'] or 0:7.1f} s" for s in results["notebooks"]["stages"]]
    bench = results["benchmark"]
    lines.append(f"  {'bench_gpu_mfu':<24} {'ok' if bench['report'] else 'failed':<8} {bench['seconds']:7.1f} s")
    for arm in (bench["report"] or {}).get("failed_arms", []):
        lines.append(f"  arm {arm['arm']} failed: {arm['error'][:200]}")
    for arm in (bench["report"] or {}).get("arms", []):
        share = f"{100 * arm['mfu_bf16_peak']:.1f}%" if arm.get("mfu_bf16_peak") else "n/a (no known peak)"
        lines.append(f"  MFU {arm['arm']:<22} {share:>8}  ({arm['samples_per_s']:.0f} samples/s at batch {arm['batch_size']})")
    budget = results["budget_seconds"]
    lines.append(f"total {results['total_seconds']:.0f} s" + (f" of a {budget} s budget: " + (
        "within" if results["within_budget"] else "OVER") if budget else " (a rehearsal: no time budget)"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the check; the results (as written, plus ``path``: where)."""
    from nbutils.core.io import write_json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: the check; cpu: the rehearsal at smoke sizes")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "runs")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the results file goes (default: benchmarks/results on CUDA, the run directory on CPU)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a profile parameter, as in `nbutils run -p` (e.g. data_dir=...)")
    parser.add_argument("--bench-arg", action="append", default=[], help="extra argument for bench_gpu_mfu.py")
    args = parser.parse_args(argv)

    import torch

    from nbutils.pipeline.runner import load_profile, parse_override, resolve_paths

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"gpu-check: torch {torch.__version__} sees no CUDA GPU; "
                         "`make gpu-check DEVICE=cpu` rehearses the check on the CPU")
    overrides = dict(parse_override(p) for p in args.param)
    started = time.perf_counter()
    notebooks = run_notebooks(args.device, args.runs_dir, overrides)
    left = BUDGET_S - (time.perf_counter() - started)
    vocab = {**(rehearsal_overrides() if args.device == "cpu" else load_profile("gpu-check")), **overrides}
    bench_args = ["--vocab-dir", str(resolve_paths({"demo_vocab_dir": vocab["demo_vocab_dir"]})["demo_vocab_dir"]),
                  *args.bench_arg]  # the notebooks' vocabulary
    bench = run_benchmark(args.device, max(left, BENCH_MIN_S) if args.device == "cuda" else 1800, bench_args)
    total = time.perf_counter() - started
    results = {"check": "gpu-check", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_facts(args.device), "notebooks": notebooks, "benchmark": bench,
               # the budget is the GPU's; a rehearsal on a (shared) CPU has none
               "total_seconds": total, "budget_seconds": BUDGET_S if args.device == "cuda" else None,
               "within_budget": total <= BUDGET_S if args.device == "cuda" else None,
               "ok": notebooks["status"] == "ok" and bench["report"] is not None}
    card = re.sub(r"[^A-Za-z0-9]+", "-", results["machine"]["card"] or "cpu").strip("-").lower()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = args.results_dir or (REPO / "benchmarks" / "results" if args.device == "cuda"
                                  else Path(notebooks["run_dir"] or args.runs_dir))
    path = write_json(folder / f"gpu_check_{card}_{stamp}.json", results)
    print(summary(results), f"wrote {path}", sep="\n", flush=True)
    return {**results, "path": path}


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
