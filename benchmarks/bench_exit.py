"""How long a process takes to exit, with and without the quick exit (nbutils.runtime.quick_exit).

Two ways of ending the same work, in turn, ``--reps`` times each:

- ``kernel``: papermill runs a one-cell notebook (``configure_process(quick_exit=...)``, then
  ``from transformers import Trainer``, as notebooks 03-05 load it) and shuts its kernel down;
  the time from the cell's end to the notebook's end is the shutdown, which ``nbutils run`` and
  the tests wait for after every notebook;
- ``process``: ``python -c`` with the same imports; the time from the script's last line to the
  process's end.

It prints the median of each arm, and the ratio off/on.

    python benchmarks/bench_exit.py              # 5 reps, ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = "from nbutils.runtime import configure_process\nconfigure_process(quiet=True, quick_exit={on})\n" \
       "from transformers import Trainer\n"


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def kernel_shutdown(on: bool, folder: Path) -> float:
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WORK.format(on=on))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source, executed = folder / "in.ipynb", folder / "out.ipynb"
    nbformat.write(nb, source)
    papermill.execute_notebook(str(source), str(executed), progress_bar=False, log_output=False, cwd=str(REPO))
    done = json.loads(executed.read_text(encoding="utf-8"))
    return _seconds(done["metadata"]["papermill"]["end_time"]) - _seconds(
        done["cells"][-1]["metadata"]["papermill"]["end_time"])


def process_exit(on: bool, folder: Path) -> float:
    stamp = folder / "last_line"
    script = WORK.format(on=on) + f"import time; open({str(stamp)!r}, 'w').write(repr(time.time()))\n"
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True)
    ended = time.time()
    return ended - float(stamp.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from nbutils.runtime.machine import cpu_name

    print(f"{cpu_name()}, {os.cpu_count()} CPUs; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    times: dict[tuple[str, bool], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for arm, measure in (("kernel", kernel_shutdown), ("process", process_exit)):
                for on in ((True, False) if rep % 2 == 0 else (False, True)):  # alternate which goes first
                    times.setdefault((arm, on), []).append(measure(on, Path(tmp)))
    for arm in ("kernel", "process"):
        on, off = (statistics.median(times[(arm, flag)]) for flag in (True, False))
        print(f"{arm:8s} exit: quick {on:5.2f} s, full collection {off:5.2f} s (median of {args.reps}); "
              f"off/on = {off / on:4.1f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
