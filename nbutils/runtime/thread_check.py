"""Whether this CPU's kernels give the same bits at every thread count the governor may use:
checked on the machine during training, not assumed from another one.

Why: ``nbutils.runtime.invariant`` makes CPU training independent of the thread count where the
kernels allow it, and the thread governor then moves the count with the load. What the kernels
allow differs between CPUs: on an Intel Xeon with AMX, oneDNN splits the summed dimension of some
bf16 weight-gradient products between threads (e.g. ``[512, rows] x [rows, 128]`` for rows from
1,088 to 1,280 in one sweep), which an AMD EPYC with AVX512-BF16, measured first, never did
(``benchmarks/check_invariance_isa.py`` tries the selectable code paths; docs/reproducibility.md).

So while the governor runs, a :class:`ThreadCheck` is active and compares, at each thread count it
may use, before the count can move:

- the real model on the first training batch: loss and every gradient (LayerNorm, softmax,
  embeddings, attention and everything else of that forward and backward);
- every matrix product at each new shape, dtype and precision the run meets (``linear`` and the
  attention products of ``nbutils.runtime.invariant``): its output and, while training, the
  gradients of its inputs, on random data of those shapes, through the very same function. fp32
  ``nn.Linear`` products are left out where MKL runs in its strict reproducible mode (Intel's
  documented guarantee for any thread count, switched on and confirmed by
  ``mkl_strict_reproducible``), as are the small ones it runs on one MKL thread anyway: those
  shapes vary with every masked-LM batch, and checking each would cost more than it could find.

Where every check agrees, the governor follows the load. Where one differs, training holds one
count (``hold``: all usable CPUs but one, as ``NBUTILS_THREAD_POLICY=fixed``) from then on, and
says which product or tensor differed. Every step before ran only shapes that gave the same bits
at every count, so the whole run is bit for bit the run at that count, and reproduces there
(``OMP_NUM_THREADS=<count>``). The check's cost is recorded (``seconds``) next to training's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

SEED = 20251  # the random inputs of product checks (a private generator: the run's RNG is untouched)
MAX_LISTED = 20  # shapes kept in the record


def check_counts(max_threads: int) -> tuple[int, ...]:
    """The thread counts compared: every count up to 4, else 1, half, all but one and all."""
    if max_threads <= 4:
        return tuple(range(1, max_threads + 1))
    return tuple(sorted({1, max_threads // 2, max_threads - 1, max_threads}))


def _describe(tensors) -> str:
    return " x ".join("-" if t is None else f"{list(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in tensors)


class ThreadCheck:
    """Compares results at each of ``counts`` threads; holds ``hold`` threads once one differs."""

    def __init__(self, counts: Sequence[int], hold: int, *, trust_mkl_fp32: bool = True,
                 clock: Callable[[], float] = time.perf_counter):
        self.counts = tuple(sorted(set(counts)))
        self.hold = hold
        self.trust_mkl_fp32 = trust_mkl_fp32  # fp32 nn.Linear products: MKL's strict mode covers them
        self.clock = clock
        self.seen: set = set()
        self.shapes: list[str] = []  # the products checked (first MAX_LISTED)
        self.products = 0
        self.batches = 0
        self.seconds = 0.0
        self.differs: dict[str, Any] | None = None  # the first difference found
        self._busy = False
        self._generator = None

    @property
    def held(self) -> bool:
        return self.differs is not None

    @property
    def busy(self) -> bool:
        """Inside a check (its own forward passes run)."""
        return self._busy

    @property
    def active(self) -> bool:
        """Whether checks still run: not inside one, and nothing held yet."""
        return not self._busy and self.differs is None and len(self.counts) > 1

    # -- the checks --
    def product(self, name: str, fn: Callable, *tensors, inputs: Sequence[str] = (), fp32_linear: bool = False) -> None:
        """Check ``fn(*tensors)`` (a matrix product) at each count, once per shape (module doc);
        ``inputs`` names the tensors (for the record)."""
        if not self.active:
            return
        import torch

        if fp32_linear and self.trust_mkl_fp32 and not torch.is_autocast_enabled("cpu"):
            return
        grad = torch.is_grad_enabled()
        autocast = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        key = (name, grad, autocast, tuple(None if t is None else (tuple(t.shape), t.stride(), t.dtype, t.requires_grad)
                                           for t in tensors))
        if key in self.seen:
            return
        self.seen.add(key)
        with self._checking():
            data = [None if t is None else self._random(t).requires_grad_(grad and t.requires_grad) for t in tensors]
            grad_output = None
            first = None
            for count in self.counts:
                torch.set_num_threads(count)
                leaves = [None if t is None else t.detach().clone().requires_grad_(t.requires_grad) for t in data]
                out = fn(*leaves)
                results = [out.detach()]
                wanted = [t for t in leaves if t is not None and t.requires_grad]
                if grad and out.requires_grad and wanted:
                    grad_output = self._random(out) if grad_output is None else grad_output
                    results += torch.autograd.grad(out, wanted, grad_output, allow_unused=True)
                if first is None:
                    first = results
                    continue
                labels = list(inputs) + [f"input {i}" for i in range(len(inputs), len(leaves))]
                names = ["output"] + [f"gradient of {labels[i]}" for i, t in enumerate(leaves)
                                      if t is not None and t.requires_grad]
                differ = [n for n, a, b in zip(names, first, results, strict=False) if not _same(a, b)]
                if differ:
                    what = f"{name} {_describe(tensors)}" + (f" under {str(autocast).replace('torch.', '')} autocast"
                                                             if autocast else "")
                    self._found(what, differ, count)
                    return
            self.products += 1
            if len(self.shapes) < MAX_LISTED:
                self.shapes.append(f"{name} {_describe(tensors)}")

    def batch(self, model, args: tuple, kwargs: dict) -> None:
        """Check the real ``model`` on this batch (forward and backward) at each count: loss and
        every parameter's gradient; once (the first training batch). The run's random state is
        the same before and after."""
        if not self.active:
            return
        import torch

        if not torch.is_grad_enabled() or self.batches:
            return
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with self._checking(), torch.random.fork_rng(devices=[]):
            state = torch.get_rng_state()
            first = None
            for count in self.counts:
                torch.set_num_threads(count)
                torch.set_rng_state(state)  # the same dropout masks at each count
                loss = _scalar(model(*args, **kwargs))
                grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
                results = {"loss": loss.detach(), **{n: g for (n, _), g in zip(params, grads, strict=True)}}
                if first is None:
                    first = results
                    continue
                differ = [n for n in first if not _same(first[n], results[n])]
                if differ:
                    shapes = {k: list(v.shape) for k, v in kwargs.items() if hasattr(v, "shape")}
                    self._found(f"the model's forward and backward on a training batch {shapes}", differ, count)
                    return
            self.batches += 1

    # -- helpers --
    def _random(self, like):
        import torch

        if self._generator is None:
            self._generator = torch.Generator().manual_seed(SEED)
        if like.dtype.is_floating_point:
            return torch.randn(like.shape, generator=self._generator).to(like.dtype)
        return torch.randint(0, 2, like.shape, generator=self._generator).to(like.dtype)

    def _checking(self):
        check = self

        class _Checking:
            def __enter__(self):
                import torch

                check._busy, check._threads, check._start = True, torch.get_num_threads(), check.clock()

            def __exit__(self, *exc):
                import torch

                check._busy = False
                check.seconds += check.clock() - check._start
                torch.set_num_threads(check.hold if check.held else check._threads)

        return _Checking()

    def _found(self, what: str, tensors: list[str], count: int) -> None:
        self.differs = {"what": what, "tensors": tensors[:6], "threads": [self.counts[0], count]}

    # -- what happened --
    @property
    def case(self) -> str:
        return "held" if self.held else "invariant"

    def reason(self) -> str:
        counts = " and ".join(str(c) for c in self.counts)
        if self.held:
            d = self.differs
            return (f"{d['what']} gave different bits at {d['threads'][0]} and {d['threads'][1]} threads "
                    f"({', '.join(d['tensors'])}): held at {self.hold} thread{'' if self.hold == 1 else 's'} "
                    f"from then on, so the run is bit for bit the run at {self.hold}")
        trust = ("; fp32 nn.Linear products: MKL's strict reproducible mode" if self.trust_mkl_fp32 else "")
        return (f"same bits at {counts} threads for the first batch's forward and backward and "
                f"{self.products} matrix-product shapes{trust}: the count followed the load")

    def record(self) -> dict[str, Any]:
        """For metrics.json (``threads.bits``)."""
        return {"case": self.case, "reason": self.reason(), "counts": list(self.counts), "hold": self.hold,
                "differs": self.differs, "batches_checked": self.batches, "products_checked": self.products,
                "products": self.shapes, "fp32_linear_trusted_to_mkl": self.trust_mkl_fp32,
                "seconds": round(self.seconds, 3)}


def _scalar(out):
    """The loss of a model's output (a ModelOutput, dict, tuple or tensor), else its first tensor's sum."""
    import torch

    if isinstance(out, dict):  # ModelOutput is one
        loss, values = out.get("loss"), list(out.values())
    elif isinstance(out, (tuple, list)):
        loss, values = None, list(out)
    else:
        loss, values = getattr(out, "loss", None), [out]
    if loss is not None:
        return loss
    return next(v for v in values if torch.is_tensor(v)).float().sum()


def _same(a, b) -> bool:
    import torch

    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


_active: ThreadCheck | None = None


def active() -> ThreadCheck | None:
    """The check of the training now running (None: no governor, nothing to check)."""
    return _active


def activate(check: ThreadCheck | None) -> None:
    global _active
    _active = check
