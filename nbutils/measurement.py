"""Measuring training: wall and step time, samples/s, and peak memory, as Trainer callbacks.

Two clocks for two questions. :class:`ThroughputClock` answers "how fast did this fine-tuning
run go": samples/s over the whole ``train()`` wall time and over the optimizer steps alone
(``finetune/metrics.json``). :class:`StepClock` answers "what does this freezing strategy cost":
the optimizer steps' time and their peak memory growth, measured per step
(``freezing/results.csv``). Both synchronise CUDA before reading the clock, so they time the
GPU's work, not its queueing.

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


class ThroughputClock(TrainerCallback):
    """Real samples/s of this process's training (a resumed run counts only what it trained):
    over the whole ``train()`` wall time (evaluations and checkpoints included: what the user
    waits for) and over the optimizer steps alone (what :class:`StepClock` times)."""

    start_step, start_time, end_time, steps, samples, step_seconds, _step_start = 0, 0.0, 0.0, 0, 0, 0.0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start_step, self.start_time, self.step_seconds = state.global_step, time.perf_counter(), 0.0

    def _now(self, args) -> float:
        _synchronize(args.device.type == "cuda")
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = self._now(args)

    def on_step_end(self, args, state, control, **kwargs):
        self.step_seconds += self._now(args) - self._step_start

    def on_train_end(self, args, state, control, **kwargs):
        self.end_time = time.perf_counter()
        self.steps = state.global_step - self.start_step
        self.samples = self.steps * args.train_batch_size * args.gradient_accumulation_steps * args.world_size


class StepClock(TrainerCallback):
    """Training time and peak memory of the optimizer steps alone, as a Trainer callback.

    Time: the sum of ``on_step_begin`` -> ``on_step_end`` (forward, backward, optimizer update);
    evaluation, checkpoint saving and batch loading are left out, so strategies are compared on
    the work that freezing changes. Memory: the largest growth, over the steps, above what was in
    use when training began (weights, data and libraries excluded): gradients, optimizer state
    and activations; evaluation and checkpoint saving are outside the steps again. On CUDA from
    ``max_memory_allocated``; on Linux CPUs from the kernel's peak resident set (``VmHWM``),
    reset at every step through ``/proc/self/clear_refs``, with freed memory handed back to the
    OS first (see :func:`release_free_memory`). Elsewhere the CPU peak is NaN ("not measured")
    rather than a number that is not this run's.
    """

    def __init__(self):
        self.seconds = 0.0
        self.step_seconds: list[float] = []
        self.samples = 0
        self.peak_mb = float("nan")
        self.memory_kind = "not measured"
        self._t0 = 0.0
        self._base = float("nan")

    def on_train_begin(self, args, state, control, **kwargs):
        self.seconds, self.step_seconds, self._start_epoch = 0.0, [], state.epoch or 0.0
        loader = kwargs.get("train_dataloader")
        self._n_train = len(loader.dataset) if loader is not None else 0
        self._cuda = args.device.type == "cuda"
        try:  # Linux /proc (or CUDA) or nothing: no guessing from a lifetime peak
            self._base = memory_now_mb(self._cuda, release=True)
            reset_peak(self._cuda)
        except OSError:
            self._base = float("nan")
        measured = self._base == self._base
        self.peak_mb = 0.0 if measured else float("nan")
        self.memory_kind = (
            "not measured" if not measured
            else "cuda allocated, growth during training steps" if self._cuda
            else "cpu rss, growth during training steps"
        )

    def on_step_begin(self, args, state, control, **kwargs):
        if self._base == self._base:
            reset_peak(self._cuda)
        self._sync()
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.step_seconds.append(time.perf_counter() - self._t0)
        self.seconds += self.step_seconds[-1]
        if self._base == self._base:
            self.peak_mb = max(self.peak_mb, memory_peak_mb(self._cuda) - self._base)

    def _sync(self):
        _synchronize(self._cuda)

    def on_save(self, args, state, control, **kwargs):
        if not self._cuda:  # evaluation and saving just freed memory: don't let it linger
            release_free_memory()

    def on_train_end(self, args, state, control, **kwargs):
        self.samples = round(((state.epoch or 0.0) - self._start_epoch) * self._n_train)


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
    import ctypes
    import ctypes.util
    import gc

    gc.collect()  # the previous run's model and optimizer may sit in reference cycles
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name)
        if hasattr(libc, "malloc_trim"):  # glibc only
            libc.malloc_trim(0)


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
