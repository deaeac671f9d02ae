"""Adaptive CPU thread count during training: all cores while that is fastest, fewer when not.

Why: PyTorch's OpenMP threads spin while they wait for each other. On a quiet 2-core CPU two
threads train the demo BERT ~1.5x faster than one; beside another busy process the spinning
thread burns the core its partner needs and two threads become slower than one (up to ~50x
under heavy load; ``benchmarks/bench_threads.py``, docs/cpu-threads.md). No fixed count is
best on both, so ``ThreadGovernor`` watches the step times and moves between counts:

- it starts at all usable CPUs and hill-climbs by one thread (on 2 cores: between 2 and 1);
- it keeps the median of the last ``window`` step times at the current count (per unit of work,
  e.g. per token, so batches of different lengths compare), and from time to time *probes* a
  neighbouring count for ``probe_steps`` steps; it moves when the probe's median is more than
  ``min_gain`` faster, and aborts a probe at once when one probe step is ``abort_ratio`` times
  slower than the current median (under heavy load one 2-thread step can take 2 s);
- a lost probe doubles the wait before the next probe of that count (capped at
  ``max_interval`` steps), and never comes sooner than the lost time allows within
  ``probe_budget`` (2% of training time by default), so probing costs little when quiet;
- a window whose median is ``slowdown`` times the settled one (load arrived) probes fewer
  threads at once;
- a probe that starts within the first ``early_steps`` steps must be ``early_gain`` faster: the
  first steps of a process run slow at every count (allocator, caches; on a quiet 2-core CPU
  the first ~30 two-thread steps of the demo BERT took 30-33 ms against 25-28 ms later, one
  thread 29 ms), and with 5% a quiet run moved to one thread at step 12 and stayed there.
  Contention still moves at once: one busy process makes two threads 3x slower, not 1.1x.

**Results used to depend on the load in their last bits** when the governor ran (before
``nbutils.runtime.invariant``, which every CPU training now uses): a different thread
count split sums differently, and two runs were bit-identical only with a pinned count. With the
thread-invariant numerics they are bit-identical under the governor too, where this machine's
kernels allow it: ``nbutils.runtime.thread_check`` compares the bits at each count while training
runs, and where they differ :meth:`ThreadGovernor.hold` fixes the count from then on.
``OMP_NUM_THREADS`` or a notebook's ``torch_threads`` (``nbutils.runtime.threads``) still pin the count
and switch the governor off.

Pure Python, no torch: ``observe`` gets a step's seconds and returns the count for the next
step; ``nbutils.runtime.governor_callback`` applies it with ``torch.set_num_threads`` around Trainer's
steps. The clock is injectable, so the decisions are unit-tested with made-up step times.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any

MAX_LISTED = 100  # switches / probes kept in the record (the counts are always complete)


class ThreadGovernor:
    """Decides the thread count for each training step from the times of the steps before."""

    def __init__(self, max_threads: int, *, start: int | None = None, min_threads: int = 1,
                 window: int = 6, settle_steps: int = 2, probe_steps: int = 3, min_gain: float = 0.05,
                 abort_ratio: float = 1.5, slowdown: float = 1.25, first_interval: int = 50,
                 max_interval: int = 2000, probe_budget: float = 0.02, early_steps: int = 30,
                 early_gain: float = 0.25, clock: Callable[[], float] = time.perf_counter):
        if not 1 <= min_threads <= max_threads:
            raise ValueError(f"need 1 <= min_threads <= max_threads, got {min_threads}, {max_threads}")
        self.min_threads, self.max_threads = min_threads, max_threads
        self.home = max_threads if start is None else min(max(start, min_threads), max_threads)
        self.threads = self.home  # the count for the next step (home, or a probe's)
        self.window_size, self.settle_steps, self.probe_steps = window, settle_steps, probe_steps
        self.min_gain, self.abort_ratio, self.slowdown = min_gain, abort_ratio, slowdown
        self.first_interval, self.max_interval, self.probe_budget = first_interval, max_interval, probe_budget
        self.early_steps, self.early_gain = early_steps, early_gain
        self.clock = clock
        self.step = 0  # steps observed
        self._skip = settle_steps  # first steps (allocator, kernel choice) and the first after a move
        self._window: deque[tuple[float, float]] = deque(maxlen=window)  # (seconds per work, seconds)
        self._fresh = 0  # home steps since the last window check
        self._settled: float | None = None  # window median when the home count was last confirmed
        self._interval = {n: first_interval for n in self._candidates()}
        self._due = {n: 0 for n in self._candidates()}  # step at which a probe of n may start
        self._probe: dict[str, Any] | None = None
        self._started: float | None = None
        self.steps_at: dict[int, int] = {}
        self.switches: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []
        self.switch_count = self.probe_count = self.probe_step_count = 0
        self.held_from: int | None = None  # the step from which :meth:`hold` fixed the count

    def hold(self, threads: int) -> int:
        """From the next step on, stay at ``threads`` (no more probes or moves): the bits differ
        between counts on this machine (``nbutils.runtime.thread_check``). Returns the count."""
        if self.held_from is None:
            self.held_from = self.step + 1
            self.home = self.threads = min(max(threads, self.min_threads), self.max_threads)
            self._probe = None
        return self.threads

    # -- timing with the injected clock (what the Trainer callback uses) --
    def step_begin(self) -> None:
        self._started = self.clock()

    def step_end(self, work: float = 1.0, exclude: float = 0.0) -> int:
        """End the step begun with ``step_begin`` (less ``exclude`` seconds spent on other work);
        returns the count for the next step."""
        if self._started is None:
            return self.threads
        seconds, self._started = max(0.0, self.clock() - self._started - exclude), None
        return self.observe(seconds, work)

    # -- the decisions --
    def _candidates(self) -> list[int]:
        return [n for n in (self.home - 1, self.home + 1) if self.min_threads <= n <= self.max_threads]

    def observe(self, seconds: float, work: float = 1.0) -> int:
        """Record one step run at ``self.threads`` that took ``seconds`` for ``work`` units
        (tokens, or 1); returns the thread count for the next step."""
        self.step += 1
        self.steps_at[self.threads] = self.steps_at.get(self.threads, 0) + 1
        per = seconds / work if work > 0 else seconds
        if self.held_from is not None:
            return self.threads
        if self._probe is not None:
            self._probe_step(per, seconds)
        elif self._skip > 0:
            self._skip -= 1
        else:
            self._home_step(per, seconds)
        return self.threads

    def _median(self) -> float:
        return statistics.median(p for p, _ in self._window)

    def _home_step(self, per: float, seconds: float) -> None:
        self._window.append((per, seconds))
        self._fresh += 1
        if len(self._window) < self.window_size:
            return
        current = self._median()
        if self._settled is None:
            self._settled = current
        elif self._fresh >= self.window_size:
            self._fresh = 0
            if current > self.slowdown * self._settled and self.home - 1 >= self.min_threads:
                # load arrived: fewer threads may now be faster; look at once
                self._due[self.home - 1] = self.step
                self._interval[self.home - 1] = self.first_interval
                self._settled = current
        due = [n for n in self._candidates() if self._due[n] <= self.step]
        if due:
            target = min(due, key=lambda n: (self._due[n], n))  # the longest-waiting; fewer threads first
            self._probe = {"threads": target, "times": [], "seconds": [], "step": self.step + 1}
            self.threads = target

    def _probe_step(self, per: float, seconds: float) -> None:
        probe = self._probe
        probe["times"].append(per)
        probe["seconds"].append(seconds)
        self.probe_step_count += 1
        current = self._median()
        aborted = per > self.abort_ratio * current
        if not aborted and len(probe["times"]) < self.probe_steps:
            return
        probe_median = statistics.median(probe["times"])
        gain = self.early_gain if probe["step"] <= self.early_steps else self.min_gain
        won = not aborted and probe_median < (1 - gain) * current
        self.probe_count += 1
        self._keep(self.probes, {"step": probe["step"], "threads": probe["threads"], "from": self.home,
                                 "steps": len(probe["times"]), "won": won, "aborted": aborted,
                                 "probe_ratio": round(probe_median / current, 3)})
        self._probe = None
        if won:
            old = self.home
            self._keep(self.switches, {"step": self.step + 1, "from": old, "to": probe["threads"],
                                       "ratio": round(probe_median / current, 3)})
            self.switch_count += 1
            self.home = self.threads = probe["threads"]
            self._window.clear()
            self._window.extend(zip(probe["times"], probe["seconds"], strict=True))
            self._fresh = 0
            self._settled = probe_median
            # every neighbour of the new count gets a fresh schedule, the old count included
            self._interval = {n: self.first_interval for n in self._candidates()}
            self._due = {n: self.step + self.first_interval for n in self._candidates()}
            return
        # lost: back home; wait twice as long, and long enough that this probe's lost time
        # stays within probe_budget of the training time until the next one
        target = probe["threads"]
        self.threads = self.home
        self._skip = 1
        step_seconds = statistics.median(s for _, s in self._window)
        lost = sum(probe["seconds"]) - len(probe["seconds"]) * step_seconds
        budget_steps = lost / (self.probe_budget * step_seconds) if step_seconds > 0 else 0
        self._interval[target] = int(max(min(2 * self._interval[target], self.max_interval), budget_steps))
        self._due[target] = self.step + self._interval[target]
        self._settled = current

    def _keep(self, items: list, item: dict) -> None:
        if len(items) < MAX_LISTED:
            items.append(item)

    # -- what happened --
    def record(self) -> dict[str, Any]:
        """The schedule, for metrics.json: steps at each count, switches and probes."""
        return {
            "policy": "adaptive",
            "candidates": list(range(self.min_threads, self.max_threads + 1)),
            "final_threads": self.home,
            "steps": self.step,
            "steps_at": {str(k): v for k, v in sorted(self.steps_at.items())},
            "switch_count": self.switch_count,
            "switches": self.switches,
            "probe_count": self.probe_count,
            "probe_steps": self.probe_step_count,
            "probes": self.probes,
            "held_from_step": self.held_from,
        }

    def summary(self) -> str:
        """One line for the end of training."""
        at = ", ".join(f"{v:,} at {k}" for k, v in sorted(self.steps_at.items(), reverse=True))
        moves = "; ".join(f"step {s['step']:,}: {s['from']}->{s['to']}" for s in self.switches[:5])
        more = "" if self.switch_count <= 5 else f" (+{self.switch_count - 5} more)"
        held = f"; held at {self.home} from step {self.held_from:,}" if self.held_from is not None else ""
        return (f"CPU threads (adaptive{held}): {self.step:,} steps: {at or 'none'}; {self.switch_count} switch"
                f"{'' if self.switch_count == 1 else 'es'}{' (' + moves + more + ')' if moves else ''}; "
                f"{self.probe_count} probe{'' if self.probe_count == 1 else 's'} ({self.probe_step_count} steps)")
