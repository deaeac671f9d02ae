"""Measuring training: wall and step time, samples/s, and peak memory, as one Trainer callback.

:class:`TrainingClock` times a ``train()`` call two ways: its whole wall time (evaluations and
checkpoints included: what the user waits for; ``finetune/metrics.json``'s samples/s) and the
optimizer steps alone, ``on_step_begin`` -> ``on_step_end`` (forward, backward, update: the work
that a freezing strategy changes; ``freezing/results.csv``). With ``measure_memory`` it also
records the steps' peak memory growth. It synchronises CUDA before reading the clock, so it
times the GPU's work, not its queueing.

Peak memory: on CUDA from ``max_memory_allocated``; on Linux CPUs from the kernel's peak
resident set (``VmHWM`` in ``/proc/self/status``), which :func:`reset_peak` resets through
``/proc/self/clear_refs``; :func:`process_peak_memory_mb` is the whole process's lifetime peak
(``ru_maxrss``) where a per-step reset is not needed.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback


def _synchronize(cuda: bool) -> None:
    if cuda:  # kernels run asynchronously: wait for them
        import torch

        torch.cuda.synchronize()


class TrainingClock(TrainerCallback):
    """What this process's ``train()`` took (a resumed run counts only what it trained).

    Time: ``start_time``/``end_time`` around the whole call, and ``step_durations`` (their sum
    ``step_seconds``) of the optimizer steps alone, batch loading, evaluation and checkpoint
    saving left out. Work: ``steps``; ``samples`` = steps x the effective batch (a partial last
    batch counts in full), and ``examples_seen`` = epochs trained x training examples.

    Memory (``measure_memory=True``): the largest growth, over the steps, above what was in use
    when training began (weights, data and libraries excluded): gradients, optimizer state and
    activations. On CUDA from ``max_memory_allocated``; on Linux CPUs from the kernel's peak
    resident set (``VmHWM``), reset at every step through ``/proc/self/clear_refs``, with freed
    memory handed back to the OS first (see :func:`release_free_memory`). Elsewhere the peak is
    NaN ("not measured") rather than a number that is not this run's.
    """

    def __init__(self, *, measure_memory: bool = False):
        self.measure_memory = measure_memory
        self.start_step, self.steps, self.samples, self.examples_seen = 0, 0, 0, 0
        self.start_time = self.end_time = 0.0
        self.step_durations: list[float] = []
        self.peak_mb = float("nan")
        self.memory_kind = "not measured"
        self._cuda = False
        self._start_epoch, self._n_train = 0.0, 0
        self._step_start = 0.0
        self._base = float("nan")  # memory in use when training began; NaN: not measured

    @property
    def step_seconds(self) -> float:
        """Time in the optimizer steps alone."""
        return sum(self.step_durations)

    def on_train_begin(self, args, state, control, **kwargs):
        self._cuda = args.device.type == "cuda"
        self.start_step, self.start_time, self.step_durations = state.global_step, time.perf_counter(), []
        self._start_epoch = state.epoch or 0.0
        loader = kwargs.get("train_dataloader")
        self._n_train = len(loader.dataset) if loader is not None else 0
        if self.measure_memory:
            self._begin_memory()

    def _begin_memory(self) -> None:
        try:  # Linux /proc (or CUDA) or nothing: no guessing from a lifetime peak
            self._base = memory_now_mb(self._cuda, release=True)
            reset_peak(self._cuda)
        except OSError:
            self._base = float("nan")
        measured = self._measuring()
        self.peak_mb = 0.0 if measured else float("nan")
        self.memory_kind = (
            "not measured" if not measured
            else "cuda allocated, growth during training steps" if self._cuda
            else "cpu rss, growth during training steps"
        )

    def _measuring(self) -> bool:
        return self._base == self._base  # not NaN

    def _now(self) -> float:
        _synchronize(self._cuda)
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._measuring():
            reset_peak(self._cuda)
        self._step_start = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_durations.append(self._now() - self._step_start)
        if self._measuring():
            self.peak_mb = max(self.peak_mb, memory_peak_mb(self._cuda) - self._base)

    def on_save(self, args, state, control, **kwargs):
        if self._measuring() and not self._cuda:  # evaluation and saving just freed memory: don't let it linger
            release_free_memory()

    def on_train_end(self, args, state, control, **kwargs):
        self.end_time = time.perf_counter()
        self.steps = state.global_step - self.start_step
        self.samples = self.steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        self.examples_seen = round(((state.epoch or 0.0) - self._start_epoch) * self._n_train)


def proc_status_kb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    raise OSError(f"{key} not in /proc/self/status")


def release_free_memory() -> None:
    """Hand memory freed by earlier runs back to the OS, so this run's growth is its own.

    Without this, glibc keeps freed blocks resident and a later run reuses them without growing
    the RSS: the first run would be billed for every later one's memory.
    """
    import gc

    from nbutils.runtime.memory import trim_heap

    gc.collect()  # the previous run's model and optimizer may sit in reference cycles
    trim_heap()


def memory_now_mb(cuda: bool, *, release: bool = False) -> float:
    """Memory in use now (MiB), after handing freed memory back with ``release``."""
    if cuda:
        import torch

        return torch.cuda.memory_allocated() / 2**20
    if release:
        release_free_memory()
    return proc_status_kb("VmRSS") / 1024


def reset_peak(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")  # "5": reset the peak RSS (VmHWM) to the current RSS


def memory_peak_mb(cuda: bool) -> float:
    if cuda:
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return proc_status_kb("VmHWM") / 1024


def process_peak_memory_mb(device: str) -> float:
    """The process's lifetime peak (MiB): CUDA memory allocated, else the resident set."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    # ru_maxrss is KiB on Linux: the process's peak resident memory (model, data and all)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
