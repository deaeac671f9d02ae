"""Everything this project changes process-wide, applied in one visible call by each entry point.

These settings act on the whole process (some on the processes it starts too), so nothing applies
them on import; :func:`configure_process` does, and says what it did:

- the CPU thread policy (:mod:`nbutils.runtime.threads`): ``OMP_NUM_THREADS`` before torch loads,
  and MKL's reproducible mode (``MKL_CBWR``, :mod:`nbutils.runtime.invariant`);
- for long inputs (``max_length`` >= ``LONG_INPUTS`` tokens), torch's transparent huge pages
  (``THP_MEM_ALLOC_ENABLE``, read once when torch loads) and glibc's mmap threshold for large
  blocks (:mod:`nbutils.runtime.memory`; measured in ``benchmarks/bench_heap.py``);
- at exit, no final garbage-collection passes over the loaded libraries
  (:mod:`nbutils.runtime.quick_exit`: a kernel with transformers loaded shuts down in 0.2 s
  instead of 2.4 s; ``benchmarks/bench_exit.py``).

Callers: the ``nbutils`` CLI (before the command imports torch), the runner (its kernels inherit the
environment) and the first code cell of every notebook.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbutils.runtime.memory import LONG_INPUTS, huge_pages_for_long_inputs, large_blocks_via_mmap
from nbutils.runtime.quick_exit import skip_final_collection
from nbutils.runtime.threads import ThreadPolicy, apply_thread_policy, use_torch_threads


@dataclass
class ProcessSettings:
    """What :func:`configure_process` applied."""

    threads: ThreadPolicy
    huge_pages: bool  # THP_MEM_ALLOC_ENABLE=1 set by this call
    large_blocks_mmap: bool  # glibc serves large blocks from their own mappings from now on
    max_length: int
    quick_exit: bool  # no final garbage-collection passes at exit (nbutils.runtime.quick_exit)

    def describe(self) -> str:
        numerics = ", ".join(f"{k}={v}" for k, v in self.threads.set_here.items() if k != "OMP_NUM_THREADS")
        long_inputs = (f"long inputs ({self.max_length} tokens): huge pages {'on' if self.huge_pages else 'as set'}, "
                       f"large blocks via mmap {'on' if self.large_blocks_mmap else 'unavailable'}"
                       if self.max_length >= LONG_INPUTS else
                       f"allocator unchanged (max_length {self.max_length} < {LONG_INPUTS})")
        exit_line = "exit without the final garbage collection (gc.freeze at exit)" if self.quick_exit else ""
        return "; ".join(filter(None, [self.threads.describe(), numerics and f"set {numerics}", long_inputs,
                                       exit_line]))


def configure_process(*, torch_threads: int = 0, max_length: int = 0, quick_exit: bool = True,
                      quiet: bool = False) -> ProcessSettings:
    """Apply the thread policy (``torch_threads`` > 0 pins the count), for ``max_length`` of
    ``LONG_INPUTS`` tokens or more the allocator settings, and unless ``quick_exit`` is False an exit
    without the final garbage collection; print one line saying so unless ``quiet``.
    Call it before anything imports torch (the thread count and huge pages are read when torch loads)."""
    policy = apply_thread_policy()
    if torch_threads:
        policy = use_torch_threads(torch_threads)
    long_inputs = max_length >= LONG_INPUTS
    settings = ProcessSettings(threads=policy, huge_pages=huge_pages_for_long_inputs(max_length),
                               large_blocks_mmap=large_blocks_via_mmap() if long_inputs else False,
                               max_length=max_length, quick_exit=quick_exit)
    if quick_exit:
        skip_final_collection()
    if not quiet:
        print(settings.describe())
    return settings
