"""Where large memory comes from: ``trim_heap``, ``large_blocks_via_mmap``, ``huge_pages_for_torch``.

glibc's malloc keeps freed blocks in its heaps for reuse and returns pages to the OS only from
the top of a heap. Work that allocates and frees a large, differently shaped working set over and
over (a chunk of tokenized articles in the fast tokenizer, its id lists, torch activations)
fragments the heaps, so the resident memory creeps up chunk after chunk although nothing is kept:
predicting 16,000 long articles in chunks of ~250k characters went from 595 to 807 MB peak RSS
without a trim after each chunk and stayed at 660 MB with one (same labels). Neither
``MALLOC_ARENA_MAX=1`` (774 MB) nor ``TOKENIZERS_PARALLELISM=false`` (709 MB) stopped the creep:
it is fragmentation, not per-thread arenas. ``malloc_trim(0)`` releases the free pages of every
heap, also those in the middle, and takes milliseconds. Elsewhere (macOS, Windows, musl) it is a
no-op.

Training is the same story inside every step: a step at max_length 512 allocates and frees
~750 MB of activations (attention probabilities of 32 x 512 x 512 per head and layer, their
dropout masks, their gradients). glibc serves a block from its own ``mmap`` (returned to the OS
at ``free``) only above a threshold that starts at 128 KiB and is raised to the size of each such
block freed, up to 32 MiB; after the first step most activations are therefore carved from the
heap, whose free fragments stay resident and grow step after step. ``large_blocks_via_mmap``
fixes the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also stops the raising), so every block
of 4 MiB or more is mapped on its own and unmapped when torch frees it. The numbers do not change,
only where their memory comes from (a 4-step loop gave bit-identical losses with and without).
Five steps of the benchmark's fine-tuning on 50k articles at max_length 512 peaked at 1,519 MB
without it and 1,306 MB with it; ``benchmarks/bench_scale.py`` and docs/scaling.md
have the measured peaks and the time per step it costs (fresh pages are faulted in every step).

That cost is page faults, 4 KiB at a time, and huge pages remove most of it: torch advises the
kernel to back tensors of 2 MiB or more with transparent huge pages (``madvise(MADV_HUGEPAGE)``) when
``THP_MEM_ALLOC_ENABLE=1`` is in the environment before its first allocation
(``huge_pages_for_torch``; a value the user set is kept). ``benchmarks/bench_heap.py`` measures
the four combinations in one run: at 512 tokens huge pages take the mapping's time cost away. On
titles they did not pay where it counts: with the fused AdamW that training uses, a demo step
(bf16) was 0.89x at one thread and 48 tokens but 1.05-1.17x at two threads and 24 tokens (medians
of 8-12 fresh processes), and a real 400-step fine-tune showed no difference (docs/scaling.md, "Huge pages
only for long inputs"); there the only tensors of 2 MiB are the embedding matrix, its
gradient and its optimizer state. So both switches are for
long inputs only (``max_length`` >= ``LONG_INPUTS``), applied with the thread policy by
:func:`nbutils.runtime.process.configure_process`, which every entry point calls with its length
before torch loads: ``nbutils run`` for its kernels (``longest_max_length``: the profile's and
overrides' ``*max_length`` values), the ``nbutils`` commands given ``--max-length``
(``nbutils.cli``) and each notebook's first code cell. Huge pages cannot be switched on once torch
has allocated: in JupyterLab, restart the kernel after raising ``max_length`` to a long input.
"""

from __future__ import annotations

import functools

THP_VARIABLE = "THP_MEM_ALLOC_ENABLE"  # read once by torch (c10's CPU allocator) at its first allocation
M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number (malloc.h)
MMAP_THRESHOLD_BYTES = 4 << 20  # blocks this large or larger get their own mapping
LONG_INPUTS = 256  # max_length from which large blocks get their own mapping and huge pages pay


@functools.cache
def _glibc(function: str):
    """A glibc function by name, or None (not Linux, no C library found, or not glibc: musl has
    neither ``malloc_trim`` nor ``mallopt``'s parameters)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), function) if name else None
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Return the malloc heaps' free pages to the OS; False where there is no ``malloc_trim``."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def large_blocks_via_mmap(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """From now on, in this whole process, serve every block of ``threshold`` bytes or more from
    its own ``mmap``, handed back to the OS when freed (see the module's docstring); False where
    the C library cannot. Blocks already in the heap stay there; calling it again is harmless."""
    mallopt = _glibc("mallopt")
    return bool(mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold) == 1)


def huge_pages_for_torch(environ=None) -> bool:
    """Put ``THP_MEM_ALLOC_ENABLE=1`` into ``environ`` (default: this process's environment) unless
    it is set already; True when this call set it. Effective for torch loaded afterwards, in this
    process and in the processes it starts (runner kernels, DDP workers); Linux only."""
    import os
    import sys

    environ = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or THP_VARIABLE in environ:
        return False
    environ[THP_VARIABLE] = "1"
    return True


def longest_max_length(values) -> int:
    """The largest integer ``*max_length`` value of a profile's parameters (0 when none)."""
    lengths = [v for k, v in values.items() if k.endswith("max_length") and isinstance(v, int)
               and not isinstance(v, bool)]
    return max(lengths, default=0)


def max_length_argument(argv) -> int:
    """The value of ``--max-length N`` / ``--max-length=N`` in a command line (0 when absent or bad)."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--max-length=") else (
            argv[i + 1] if arg == "--max-length" and i + 1 < len(argv) else None)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 0  # the command's own parser reports it
    return 0


def huge_pages_for_long_inputs(max_length: int, environ=None) -> bool:
    """``huge_pages_for_torch`` when ``max_length`` >= ``LONG_INPUTS`` (module doc); True when set."""
    return max_length >= LONG_INPUTS and huge_pages_for_torch(environ)
