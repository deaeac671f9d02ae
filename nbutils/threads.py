"""CPU thread policy for torch: one core left free, so a busy machine does not collapse a run.

PyTorch's CPU kernels run on OpenMP threads (GNU libgomp in the pip Linux builds), by default one
per core. Between parallel regions a waiting libgomp thread spins (~300,000 rounds) before it
sleeps. Quiet, that spin keeps the next region's start cheap; when another process wants a core,
the spinning thread burns the very core its partner needs. ``benchmarks/bench_threads.py``
timed a training step of the demo BERT on a 2-core CPU, quiet and beside one busy process of its
own, in one run (README, "CPU threads"): two threads 32.7 ms quiet and 1,954 ms contended; one
thread 38.8 and 40.9 ms. The gentler waits cost more quiet speed and still collapse or nearly so
(GOMP_SPINCOUNT=10000: 37.5 / 169.9 ms; 3,000: 44.9 / 85.9; 1,000: 55.7 / 55.8;
OMP_WAIT_POLICY=PASSIVE: 80.1 / 46.7). So the policy is:

- threads = the CPUs this process may use, minus one (at least one): one core is left for
  whatever else runs (a notebook server, a browser, another job), so one other busy process
  no longer meets a spinning thread; on 2 cores that is one thread, quiet ~1.2x slower than two
  threads, beside a busy process ~48x faster;
- the count is fixed per machine, never adapted to the load: a different thread count changes how
  sums are split, and so the last bits of the numbers. The same count on the same machine gives
  the same numbers, quiet or busy;
- ``OMP_NUM_THREADS`` (exported by the user) or a notebook's ``torch_threads`` parameter
  overrides it; ``NBUTILS_THREAD_POLICY=off`` leaves torch's default.

OpenMP reads ``OMP_NUM_THREADS`` once, when torch loads, so the policy must be in the
environment before ``import torch``; ``import nbutils`` puts it there (``nbutils/__init__.py``),
and every way torch runs here imports nbutils first: the CLI, the runner (its papermill kernels
inherit the environment), the notebooks in JupyterLab (their imports load nbutils before
anything that loads torch; tests/test_threads.py checks each) and the ``torchrun`` workers
(``python -m nbutils.launch``, which inherit it too). This module never imports torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nbutils.errors import NbutilsError

SWITCH = "NBUTILS_THREAD_POLICY"  # "off": leave torch's default thread count
# Set next to OMP_NUM_THREADS when the policy (not the user) chose it, so child processes
# (kernels, torchrun workers) can tell the two apart.
MARKER = "NBUTILS_POLICY_THREADS"
OFF_VALUES = ("off", "0", "false", "no")
MEASURED = ("2 cores, demo BERT training step: 1 thread 38.8 ms quiet / 40.9 ms beside a busy "
            "process; 2 threads 32.7 / 1,954 ms (benchmarks/bench_threads.py)")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def policy_threads(cpus: int | None = None) -> int:
    """The policy's fixed thread count: all usable CPUs but one, at least one."""
    return max(1, (usable_cpus() if cpus is None else cpus) - 1)


def policy_environment(environ: MutableMapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """The variables the policy adds to ``environ`` (none where the user decided already)."""
    environ = os.environ if environ is None else environ
    if environ.get(SWITCH, "").strip().lower() in OFF_VALUES:
        return {}
    if environ.get("OMP_NUM_THREADS", "").strip():
        return {}
    count = str(policy_threads(cpus))
    return {"OMP_NUM_THREADS": count, MARKER: count}


@dataclass
class ThreadPolicy:
    """How many CPU threads torch uses in this process, who decided, and why."""

    threads: int | None  # the fixed count; None: torch's default (policy switched off)
    source: str  # "policy", "OMP_NUM_THREADS" (the user's), "torch_threads" or "off"
    cpus: int  # usable CPUs
    applied_before_torch: bool  # False: torch loaded first, so OpenMP kept its own count
    set_here: dict[str, str] = field(default_factory=dict)  # variables this process added

    @property
    def reason(self) -> str:
        if not self.applied_before_torch and self.source == "policy":
            return ("torch was imported before nbutils, so OpenMP kept its own thread count; "
                    "import nbutils first (or export OMP_NUM_THREADS)")
        return {
            "policy": (f"one of {self.cpus} CPUs left free so that another busy process cannot "
                       f"collapse training; fixed, never adapted to load ({MEASURED})"),
            "OMP_NUM_THREADS": "OMP_NUM_THREADS from the environment",
            "torch_threads": "the torch_threads parameter",
            "off": f"{SWITCH}=off: torch's default thread count",
        }[self.source]

    def describe(self, torch_threads: int | None = None) -> str:
        """The line printed under the device line: ``CPU threads: 1 -- why``."""
        count = torch_threads if torch_threads is not None else self.threads or "torch default"
        return f"CPU threads: {count} of {self.cpus} -- {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "reason": self.reason}
        if "torch" in sys.modules:
            out["torch_threads"] = sys.modules["torch"].get_num_threads()
        return out


def _count(environ: MutableMapping[str, str]) -> int | None:
    raw = environ.get("OMP_NUM_THREADS", "").strip()
    try:
        value = int(raw.split(",")[0])
    except ValueError:
        return None  # unset or malformed: OpenMP ignores a malformed value, and so do we
    return value if value > 0 else None


def _policy_for(environ: MutableMapping[str, str], added: dict[str, str], torch_loaded: bool) -> ThreadPolicy:
    threads = _count(environ)
    if environ.get(SWITCH, "").strip().lower() in OFF_VALUES and not environ.get("OMP_NUM_THREADS"):
        source = "off"
    elif added or (threads is not None and environ.get(MARKER) == environ.get("OMP_NUM_THREADS")):
        source = "policy"  # chosen here, or inherited from a parent process's policy
    else:
        source = "OMP_NUM_THREADS"
    return ThreadPolicy(threads=threads, source=source, cpus=usable_cpus(),
                        applied_before_torch=not torch_loaded, set_here=dict(added))


_applied: ThreadPolicy | None = None


def apply_thread_policy(environ: MutableMapping[str, str] | None = None) -> ThreadPolicy:
    """Put the policy into the environment (before torch loads) and return what it did.

    ``import nbutils`` calls it; later calls return the first call's record (what OpenMP read).
    Child processes (papermill kernels, torchrun workers) inherit the variables.
    """
    global _applied
    if environ is None and _applied is not None:
        return _applied
    target = os.environ if environ is None else environ
    added = policy_environment(target)
    # torch in this process only matters for this process's environment; a mapping given
    # describes a process yet to start
    torch_loaded = environ is None and "torch" in sys.modules
    target.update(added)
    policy = _policy_for(target, added, torch_loaded)
    if environ is None:
        _applied = policy
    return policy


def current_policy() -> ThreadPolicy:
    """The policy this process runs under (applied on ``import nbutils``)."""
    return _applied if _applied is not None else apply_thread_policy()


def use_torch_threads(torch_threads: int = 0) -> ThreadPolicy:
    """Fix torch's CPU thread count to ``torch_threads`` (0: keep the policy's count).

    Before torch loads this goes through ``OMP_NUM_THREADS`` (child processes inherit it); after,
    through ``torch.set_num_threads`` as well.
    """
    if isinstance(torch_threads, bool) or not isinstance(torch_threads, int) or torch_threads < 0:
        raise NbutilsError(f"torch_threads must be a whole number >= 0, got {torch_threads!r}",
                           fix="set torch_threads to 0 (the thread policy's count) or a count like 1 or 2")
    policy = current_policy()
    if torch_threads == 0:
        return policy
    os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    os.environ.pop(MARKER, None)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_threads)
    policy.threads, policy.source = torch_threads, "torch_threads"
    return policy


def threads_per_process(nproc: int) -> dict[str, str]:
    """Environment for ``nproc`` worker processes sharing this machine (torchrun on CPUs): the
    policy's count split between them. A count the user chose is passed on unchanged."""
    policy = current_policy()
    if policy.source != "policy" or not policy.threads:
        return {}
    share = str(max(1, policy.threads // max(1, nproc)))
    return {"OMP_NUM_THREADS": share, MARKER: share}


def machine_load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none, e.g. Windows)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
