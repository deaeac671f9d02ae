"""Run All, twice in a row, of every notebook in order 01..06 with its defaults, in a fresh clone,
in JupyterLab in headless Chromium: what a researcher does after `git clone`, `make data`,
`jupyter lab notebooks/`.

    python benchmarks/check_jupyterlab_run_all.py            # clones this repository's HEAD
    nice -n -20 python benchmarks/check_jupyterlab_run_all.py --keep /tmp/runall

Steps: `git clone` of the repository (its committed HEAD) into a temporary folder; `make data`
there (files from the local mirror: $NBUTILS_DATA_MIRROR, else this checkout's data/raw and
../shared); a JupyterLab on 127.0.0.1 serving the clone, with PYTHONPATH pointing at the clone's
nbutils; then in Chromium, for pass 1 and pass 2, each notebook is opened (its own browser tab; a
notebook's kernel lives on between passes, as when a person keeps the tab open) and run with
Run > Run All Cells, with the parameters it is committed with. A pass fails at the first notebook
that shows a traceback or does not finish. Prints the wall time per notebook and pass (from the
click on Run All Cells to the last cell's prompt), the kernel start, and what pass 2 said about
the first pass's results (replaced, resumed, reused). The defaults are the demo experiment:
expect some 10-25 minutes for both passes on a 2-core CPU.

Exit status 0 only when both passes of all six notebooks ended without an error.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
import jupyterlab_driver as jl  # noqa: E402

# What pass 2 printed about pass 1's results: the notebooks' re-run decision in their own words.
RERUN_WORDS = re.compile(r"replac|reus|resum|overwrit|starting over|already|exists", re.IGNORECASE)


def _load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _clone(repo: Path, dest: Path) -> str:
    subprocess.run(["git", "clone", "--quiet", str(repo), str(dest)], check=True)
    return subprocess.run(["git", "-C", str(dest), "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


def _make_data(clone: Path) -> None:
    mirrors = os.environ.get("NBUTILS_DATA_MIRROR") or ":".join(
        str(p) for p in (REPO_ROOT / "data" / "raw", REPO_ROOT.parent / "shared" / "data",
                         REPO_ROOT.parent / "shared" / "models") if p.is_dir())
    env = {**os.environ, "NBUTILS_DATA_MIRROR": mirrors, "PYTHONPATH": str(clone)}
    subprocess.run(["make", "--no-print-directory", "data"], cwd=clone, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def _run_notebook(context, lab, name: str, timeout_s: float) -> dict:
    page = context.new_page()
    page.set_default_timeout(120_000)
    try:
        start = time.monotonic()
        jl.open_notebook(page, lab, f"notebooks/{name}", workspace=Path(name).stem)
        opened = time.monotonic() - start
        before = jl.prompts(page)[-1]
        start = time.monotonic()
        jl.run_all(page)
        jl.wait_until_done(page, previous_last_prompt=before, timeout_s=timeout_s)
        seconds = time.monotonic() - start
        shown = jl.outputs(page)
        said = sorted({line.strip()[:160] for text in shown for line in text.splitlines()
                       if RERUN_WORDS.search(line)})
        return {"notebook": name, "open_s": opened, "run_all_s": seconds, "errors": jl.errors(page),
                "said": said}
    finally:
        page.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="repository to clone (its committed HEAD)")
    ap.add_argument("--keep", type=Path, default=None,
                    help="clone into this (new) folder and keep it; default: a temporary folder, removed")
    ap.add_argument("--passes", type=int, default=2, help="Run All passes over 01..06")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one notebook's Run All may take")
    args = ap.parse_args(argv)
    problem = jl.missing_browser()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="runall-")) if args.keep is None else args.keep
    clone = work / "clone"
    print(f"{time.strftime('%H:%M:%S')} {_load()}; cloning {args.repo} into {clone}", flush=True)
    commit = _clone(args.repo, clone)
    _make_data(clone)
    notebooks = sorted(p.name for p in (clone / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    # A person's shell: no OMP_NUM_THREADS (the notebooks' thread policy decides), the clone's nbutils.
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(clone)
    results, ok = [], True
    lab = jl.start_jupyterlab(clone, work / "jupyter", env=env)
    try:
        with sync_playwright() as p:
            context = jl.launch_chromium(p, work / "chromium-profile")
            try:
                for n in range(1, args.passes + 1):
                    for name in notebooks:
                        row = _run_notebook(context, lab, name, args.timeout)
                        row["pass"] = n
                        results.append(row)
                        status = "ERROR" if row["errors"] else "ok"
                        print(f"{time.strftime('%H:%M:%S')} pass {n} {name:<28} {row['run_all_s']:7.1f} s "
                              f"(kernel/page {row['open_s']:.1f} s) {status}; {_load()}", flush=True)
                        if row["errors"]:
                            print("\n\n".join(row["errors"]), flush=True)
                            ok = False
                            break
                    if not ok:
                        break
            finally:
                context.close()
    finally:
        lab.stop()

    print(f"\nfresh clone of {commit}; {_load()} at the end")
    print(f"| notebook | {' | '.join(f'pass {n} Run All' for n in range(1, args.passes + 1))} |")
    print(f"|---|{'---:|' * args.passes}")
    for name in notebooks:
        cells = [f"{r['run_all_s']:.0f} s" + (" (error)" if r["errors"] else "")
                 for r in results if r["notebook"] == name]
        print(f"| {name} | {' | '.join(cells + ['not run'] * (args.passes - len(cells)))} |")
    totals = [sum(r["run_all_s"] for r in results if r["pass"] == n) for n in range(1, args.passes + 1)]
    print(f"| total | {' | '.join(f'{t:.0f} s' for t in totals)} |")
    print("\nWhat pass 2 said about pass 1's results:")
    for r in results:
        if r["pass"] == 2:
            print(f"  {r['notebook']}: " + (" / ".join(r["said"]) or "(nothing about earlier results)"))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print("all passes ended without an error" if ok else "FAILED: see the error above")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
