"""CPU thread policy for torch: results that do not change with the load, and no collapse on a busy CPU.

PyTorch's CPU kernels run on OpenMP threads (GNU libgomp in the pip Linux builds), by default one
per core. Between parallel regions a waiting libgomp thread spins (~300,000 rounds) before it
sleeps. Quiet, that spin keeps the next region's start cheap; when another process wants a core,
the spinning thread burns the very core its partner needs (``benchmarks/bench_threads.py``,
docs/cpu-threads.md: on 2 cores two threads train the demo BERT ~1.5x faster than one when
quiet, and up to ~50x slower beside busy processes; the gentler libgomp waits, GOMP_SPINCOUNT and
OMP_WAIT_POLICY=PASSIVE, cost more quiet speed than they save). No fixed count is best both
ways, so the policy (``NBUTILS_THREAD_POLICY``) is:

- ``adaptive`` (the default): torch's pool gets every usable CPU, and during training
  ``nbutils.runtime.governor.ThreadGovernor`` (one Trainer callback, ``nbutils.runtime.governor_callback``)
  picks the active count from the step times: all while that is fastest, fewer while other
  processes compete. A different thread count used to split some sums differently (LayerNorm's
  weight gradient, softmax's backward, small fp32 matrix products), and over thousands of steps
  those last bits grew into different models (two demo runs, quiet and busy, 0.99 points of test
  accuracy apart); every CPU training now runs thread-invariant numerics
  (``nbutils.runtime.invariant``), so the count the governor picks no longer changes any bit of
  the result where this CPU's kernels allow it: ``nbutils.runtime.thread_check`` compares the
  bits at each count as training runs, and where they differ the run holds one count (all usable
  CPUs but one) from then on. Either way the same machine gives bit-identical results quiet or
  busy, without the collapse;
- ``fixed``: the usable CPUs minus one (at least one), for the whole process: one core stays free
  for whatever else runs (on 2 cores one thread, ~1.2-1.5x slower than two when quiet);
- ``off``: torch's default count (all CPUs), fixed.

``OMP_NUM_THREADS`` (exported by the user) or a notebook's ``torch_threads`` parameter pins the
count instead. OpenMP reads ``OMP_NUM_THREADS`` once, when torch loads, so the policy must be in
the environment before ``import torch``. Importing nbutils changes nothing; the entry points apply
the policy visibly through :func:`nbutils.runtime.process.configure_process`: the CLI (and so the
``torchrun`` workers, ``python -m nbutils.cli train``), the runner (its papermill kernels inherit
the environment) and the first code cell of every notebook. A process where nobody applied it keeps
torch's default count, without the governor. This module never imports torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

from nbutils.core.errors import NbutilsError
from nbutils.runtime.invariant import numerics_environment

SWITCH = "NBUTILS_THREAD_POLICY"  # adaptive (default) | fixed | off
# Set next to OMP_NUM_THREADS when the policy (not the user) chose it, so child processes
# (kernels, torchrun workers) can tell the two apart.
MARKER = "NBUTILS_POLICY_THREADS"
OFF_VALUES = ("off", "0", "false", "no")
MODES = ("adaptive", "fixed")
MEASURED = "benchmarks/bench_threads.py; docs/cpu-threads.md"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def policy_mode(environ: MutableMapping[str, str] | None = None) -> str:
    """``adaptive``, ``fixed`` or ``off``, from NBUTILS_THREAD_POLICY (unset: adaptive)."""
    raw = (os.environ if environ is None else environ).get(SWITCH, "").strip().lower()
    if raw in OFF_VALUES:
        return "off"
    if raw in ("", *MODES):
        return raw or "adaptive"
    raise NbutilsError(f"{SWITCH}={raw!r} is not a thread policy",
                       fix=f"set {SWITCH} to adaptive (the default: all CPUs while that is fastest, fewer "
                           "while other processes compete), fixed (all CPUs but one) or off (torch's default)")


def policy_threads(cpus: int | None = None, mode: str = "adaptive") -> int:
    """The size of torch's thread pool under the policy: ``fixed``, every usable CPU but one;
    ``adaptive``, every usable CPU (the governor uses fewer when that is faster)."""
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus if mode == "adaptive" else cpus - 1)


def policy_environment(environ: MutableMapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """The variables the policy adds to ``environ`` (none where the user decided already)."""
    environ = os.environ if environ is None else environ
    mode = policy_mode(environ)
    if mode == "off" or environ.get("OMP_NUM_THREADS", "").strip():
        return {}
    count = str(policy_threads(cpus, mode))
    return {"OMP_NUM_THREADS": count, MARKER: count}


@dataclass
class ThreadPolicy:
    """How many CPU threads torch uses in this process, who decided, and why."""

    threads: int | None  # the pool's size (the most the governor uses); None: torch's default (policy off)
    source: str  # "policy", "OMP_NUM_THREADS" (the user's), "torch_threads", "off" or "not applied"
    cpus: int  # usable CPUs
    applied_before_torch: bool  # False: torch loaded first, so OpenMP kept its own count
    set_here: dict[str, str] = field(default_factory=dict)  # variables this process added
    mode: str = "adaptive"  # NBUTILS_THREAD_POLICY: adaptive | fixed | off

    @property
    def adaptive(self) -> bool:
        """Whether training adapts the count (the governor): the adaptive policy's pool, more than one."""
        return self.source == "policy" and self.mode == "adaptive" and (self.threads or 0) > 1

    @property
    def check_counts(self) -> tuple[int, ...]:
        """The counts whose bits training compares (nbutils.runtime.thread_check)."""
        from nbutils.runtime.thread_check import check_counts

        return check_counts(self.threads or 1)

    @property
    def reason(self) -> str:
        pinned = "; pinned (results are bit-identical at any count: nbutils.runtime.invariant)"
        if self.source == "policy" and self.mode == "fixed" and not self.applied_before_torch:
            return ("torch was imported before nbutils, so OpenMP kept its own thread count; "
                    "call nbutils.runtime.configure_process() before anything imports torch (or export OMP_NUM_THREADS)")
        if self.source == "policy" and self.mode == "fixed" and self.cpus > 1:
            return (f"{SWITCH}=fixed: one of {self.cpus} CPUs left free, so another busy process cannot "
                    f"collapse training ({SWITCH}=adaptive, the default, is faster when quiet; {MEASURED})")
        if self.source == "policy" and not self.adaptive:
            return "one usable CPU: one thread"
        return {
            "policy": (f"{SWITCH}=adaptive: training uses {self.threads} threads while that is fastest, "
                       f"fewer while other processes compete for the CPUs ({MEASURED}); thread-invariant "
                       f"numerics (nbutils.runtime.invariant), checked on this CPU as training runs (the first "
                       f"batch and each new matrix-product shape at {' and '.join(map(str, self.check_counts))} "
                       f"threads): where the bits agree, results are bit-identical quiet or busy; where one "
                       f"differs, training holds {max(1, (self.threads or 1) - 1)} thread(s) from then on, and "
                       f"reproduces at that count (the end of training says which case it was, and why)"),
            "OMP_NUM_THREADS": "OMP_NUM_THREADS from the environment" + pinned,
            "torch_threads": "the torch_threads parameter" + pinned,
            "off": f"{SWITCH}=off: torch's default thread count, fixed",
            "not applied": ("the thread policy was not applied in this process (the CLI, the runner and "
                            "each notebook's first cell apply it with nbutils.runtime.configure_process()): "
                            "torch's default thread count, fixed"),
        }[self.source]

    def describe(self, torch_threads: int | None = None) -> str:
        """The line printed under the device line: ``CPU threads: adaptive 1-2 of 2 -- why``."""
        count = torch_threads if torch_threads is not None else self.threads or "torch default"
        if self.adaptive:
            count = f"adaptive 1-{self.threads} (now {count})"
        return f"CPU threads: {count} of {self.cpus} -- {self.reason}"

    @property
    def policy(self) -> str:
        return "adaptive" if self.adaptive else "fixed"

    def as_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "policy": self.policy, "reason": self.reason}
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
    if policy_mode(environ) == "off" and not environ.get("OMP_NUM_THREADS"):
        source = "off"
    elif added or (threads is not None and environ.get(MARKER) == environ.get("OMP_NUM_THREADS")):
        source = "policy"  # chosen here, or inherited from a parent process's policy
    else:
        source = "OMP_NUM_THREADS"
    return ThreadPolicy(threads=threads, source=source, cpus=usable_cpus(),
                        applied_before_torch=not torch_loaded, set_here=dict(added), mode=policy_mode(environ))


_applied: ThreadPolicy | None = None


def apply_thread_policy(environ: MutableMapping[str, str] | None = None) -> ThreadPolicy:
    """Put the policy into the environment (before torch loads) and return what it did.

    The entry points call it (:func:`nbutils.runtime.process.configure_process`); later calls return
    the first call's record (what OpenMP read).
    Child processes (papermill kernels, torchrun workers) inherit the variables.
    """
    global _applied
    if environ is None and _applied is not None:
        return _applied
    target = os.environ if environ is None else environ
    added = policy_environment(target)
    # MKL's reproducible mode: the same bits for any thread count (nbutils.runtime.invariant)
    numerics = numerics_environment(target)
    # torch in this process only matters for this process's environment; a mapping given
    # describes a process yet to start
    torch_loaded = environ is None and "torch" in sys.modules
    target.update({**added, **numerics})
    policy = _policy_for(target, added, torch_loaded)
    policy.set_here.update(numerics)
    if environ is None:
        _applied = policy
    return policy


def current_policy() -> ThreadPolicy:
    """The policy this process runs under: the one applied here, one inherited from the process that
    started this one (a runner's kernel, a torchrun worker), or "not applied" (torch's default count,
    no governor). Never changes the environment."""
    if _applied is not None:
        return _applied
    policy = _policy_for(os.environ, {}, "torch" in sys.modules)
    if policy.source == "OMP_NUM_THREADS" and policy.threads is None:
        policy.source = "not applied"
    return policy


def governor_threads() -> int | None:
    """The most threads the training governor may use here, or None: no governor (the count is
    pinned by OMP_NUM_THREADS or torch_threads, the policy is off, or there is one CPU)."""
    policy = current_policy()
    return policy.threads if policy.adaptive else None


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


def thread_schedules(run_dir) -> dict[str, dict[str, Any]]:
    """For the manifest: the thread schedule of every training in a run directory, from the
    ``threads`` record of each ``metrics.json`` below it (``{"finetune": {...}, ...}``)."""
    import json
    from pathlib import Path

    keep = ("policy", "source", "final_threads", "steps", "steps_at", "switch_count", "probe_count")
    out: dict[str, dict[str, Any]] = {}
    root = Path(run_dir)
    for path in sorted(root.glob("**/metrics.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8")).get("threads")
        except (OSError, ValueError, AttributeError):
            continue  # not a training's metrics (or half-written by a crash): nothing to summarise
        if isinstance(record, dict):
            schedule = {k: record[k] for k in keep if k in record}
            if record.get("held_from_step") is not None:
                schedule["held_from_step"] = record["held_from_step"]
            if isinstance(record.get("bits"), dict):  # nbutils.runtime.thread_check: which case, and why
                schedule["bits"] = {k: record["bits"].get(k) for k in ("case", "reason", "seconds")}
            out[path.parent.relative_to(root).as_posix()] = schedule
    return out


def machine_load() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none, e.g. Windows)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None
