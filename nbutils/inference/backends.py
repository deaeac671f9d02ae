"""Which engine runs a classifier's forward pass, and ``auto``: the fastest exact-enough one, measured.

Backends (``nbutils predict --backend``, ``Predictor(backend=)``, ``predict_file(backend=)``):

    torch-fp32   PyTorch, fp32 weights: the reference every other backend is checked against
    torch-bf16   PyTorch, the fp32 weights with matrix products in bf16 (autocast, the precision
                 fine-tuning evaluates in there): CPUs that multiply bf16 natively (AVX512-BF16,
                 AMX) and CUDA GPUs with bf16; elsewhere it would be emulated and slow, so it is refused
    onnx         ONNX Runtime on the CPU, fp32 graph (``nbutils export-onnx``)
    onnx-int8    ONNX Runtime on the CPU, int8 weights (``nbutils export-onnx``)
    auto         (default) one of the above, chosen by a probe on the first batch of texts

``auto`` decides once per model, machine and kind of text, by measurement rather than by a table
of CPUs: on the user's first batch (at most ``PROBE_TEXTS`` texts) every candidate runs once on
one text, then in rotating order ``PROBE_ROUNDS`` times or more, and its labels are compared with
torch-fp32's on the same texts; all of it within about ``PROBE_SECONDS`` (:func:`probe_size`: a
slow model is timed once, on the texts that fit). A candidate whose labels agree on less than
``AGREEMENT_BAR`` of the probe texts, counted or estimated (:func:`estimated_agreement`: each
text's shrinking of the top-two logit gap against every text's gap, which sees a 1% flip rate
that 64 texts would often not show), is excluded; of the others the fastest wins (its labels
checked again on more of the first batch when the timed probe used fewer texts, as many as
another budget allows: :func:`verify_size`, :func:`verify`), and a non-reference backend must
beat torch-fp32 by ``MIN_GAIN`` (timing noise on a shared machine should not trade exactness for
nothing). The ONNX candidates need an export: the model folder itself when it is one, else the
export that ``nbutils export-onnx MODEL`` (no OUT) wrote into the cache, and onnx-int8 also a
passed label check at export (:func:`nbutils.inference.onnx_files.why_not_offered`); without one they are skipped (and
the decision says so) rather than exported on the spot, which takes minutes for a bert-base.

The decision is kept in ``<cache>/backend.json`` (``$NBUTILS_CACHE_DIR``, else
``$XDG_CACHE_HOME/nbutils``, else ``~/.cache/nbutils``; written atomically), keyed by the
model's content hash, the CPU model and its bf16/int8 instruction flags, the device, the thread
count, the library versions, the candidates available and the length class of the texts
(titles and 512-token articles favour different engines). A cached decision costs nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbutils.core.errors import NbutilsError

BACKENDS = ("auto", "torch-fp32", "torch-bf16", "onnx", "onnx-int8")
ALIASES = {"torch": "torch-fp32", "fp32": "torch-fp32", "bf16": "torch-bf16"}
REFERENCE = "torch-fp32"
ONNX_BACKENDS = ("onnx", "onnx-int8")
AGREEMENT_BAR = 0.995  # share of the probe texts whose label must equal torch-fp32's
MIN_GAIN = 1.05  # a backend other than torch-fp32 must be this much faster on the probe
PROBE_TEXTS = 64  # at most this many of the first texts are timed (the first batch)
PROBE_SECONDS = 5.0  # the timed rounds of all candidates together aim to stay within this
PROBE_ROUNDS = 3  # each candidate's best of at least this many timed runs counts
PROBE_MAX_ROUNDS = 15  # ... and of more while they fit in the budget
MIN_TIMED_TEXTS = 8  # fewer texts fit in the budget (a slow model, long texts): one timed round instead
CACHE_FILE = "backend.json"
# Token counts (median of the probe texts, after truncation) that separate length classes.
LENGTH_CLASSES = ((64, "short"), (256, "medium"))
_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def normalize(backend: str | None) -> str:
    """The canonical backend name (``torch`` is ``torch-fp32``); an unknown name is an error."""
    name = str(backend or "auto").strip().lower()
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise NbutilsError(f"unknown backend {backend!r}",
                           fix=f"use one of {', '.join(BACKENDS)} (--backend / backend=)")
    return name


def cache_dir() -> Path:
    if os.environ.get("NBUTILS_CACHE_DIR"):
        return Path(os.environ["NBUTILS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "nbutils"


def model_hash(model_dir: Path) -> str:
    """A content hash of a model folder: config.json and the weights or graph files, hashed in
    full (sha256 reads a 400 MB bert-base in well under a second; remembered per file version
    within a process), so a copied folder keeps its hash and any re-trained weight changes it."""
    digest = hashlib.sha256()
    names = ("config.json", "model.safetensors", "pytorch_model.bin", "model.onnx", "model.int8.onnx")
    for name in names:
        path = model_dir / name
        if path.is_file():
            stat = path.stat()
            digest.update(f"{name}:{_file_hash(str(path.resolve()), stat.st_size, stat.st_mtime_ns)}".encode())
    return digest.hexdigest()[:20]


@functools.lru_cache(maxsize=64)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def cpu_model() -> str:
    """The CPU's model name and the instruction-set flags that decide bf16/int8 speed."""
    from nbutils.runtime.machine import cpu_info

    name, flags = cpu_info()
    return " ".join([name, *[f for f in _CPU_FLAGS if f in flags]])


def versions() -> dict[str, str]:
    import torch
    import transformers

    found = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import onnxruntime

        found["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return found


def length_class(lengths: list[int]) -> str:
    median = statistics.median(lengths) if lengths else 0
    return next((name for limit, name in LENGTH_CLASSES if median <= limit), "long")


def export_cache(model_dir: Path) -> Path:
    """Where ``nbutils export-onnx MODEL`` (no OUT) puts the export of ``model_dir``."""
    return cache_dir() / "onnx" / model_hash(model_dir)


def onnx_folder(model_dir: Path) -> Path | None:
    """The ONNX export that belongs to ``model_dir``: itself when it is one, else the cached
    export; None when there is none."""
    if (model_dir / "model.onnx").is_file():
        return model_dir
    cached = export_cache(model_dir)
    return cached if (cached / "model.onnx").is_file() else None


@dataclass
class Decision:
    """The backend a Predictor runs, and why (printed, stored beside the predictions)."""

    backend: str
    reason: str
    requested: str = "auto"
    cached: bool = False
    probe: dict[str, dict] = field(default_factory=dict)  # candidate -> texts_per_s, agreement, status
    key: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        return f"backend: {self.backend} ({self.reason})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decision_key(model_dir: Path, device: str, threads: int, candidates: list[str], lengths: list[int]) -> dict:
    return {"model": model_hash(model_dir), "cpu": cpu_model(), "device": device, "threads": threads,
            "versions": versions(), "candidates": sorted(candidates), "length": length_class(lengths)}


def _key_id(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def cached_decision(key: dict) -> Decision | None:
    path = cache_dir() / CACHE_FILE
    try:
        entry = json.loads(path.read_text(encoding="utf-8")).get(_key_id(key))
    except (OSError, ValueError, AttributeError):
        return None  # no cache yet, or a damaged one: probe again (and rewrite it)
    if not isinstance(entry, dict) or entry.get("backend") not in BACKENDS:
        return None
    return Decision(entry["backend"], entry.get("reason", ""), cached=True, probe=entry.get("probe", {}), key=key)


def store_decision(decision: Decision) -> Path:
    """Add ``decision`` to the cache file (read, update, atomic replace: a reader never sees a
    half-written file; of two writers at the same instant one entry may be lost, and re-probed)."""
    from nbutils.core.io import write_json

    path = cache_dir() / CACHE_FILE
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries[_key_id(decision.key)] = {"backend": decision.backend, "reason": decision.reason,
                                      "probe": decision.probe, "key": decision.key, "decided_at": time.time()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, entries)


def probe(candidates: dict[str, Callable], input_ids: list[list[int]], *,
          seconds: float = PROBE_SECONDS, max_texts: int = PROBE_TEXTS) -> dict[str, dict]:
    """Time ``candidates`` (name -> function from token id lists to a logits array; the first
    is the reference) on the first texts of ``input_ids`` and compare their labels with the
    reference's, all within about ``seconds`` (first calls included). Returns per candidate
    ``texts_per_s`` (best of the timed rounds), ``agreement`` and ``texts``; one that raises gets
    ``error`` instead."""
    import numpy as np

    names = list(candidates)
    rows = input_ids[:max_texts]
    results: dict[str, dict] = {}
    began = time.perf_counter()
    first: dict[str, float] = {}
    for name in names:
        start = time.perf_counter()
        try:
            candidates[name](rows[:1])  # first call: kernel selection, graph set-up (not counted)
        except Exception as err:  # a candidate that cannot run here is left out, with the reason
            results[name] = {"error": f"{type(err).__name__}: {str(err)[:160]}"}
            continue
        first[name] = time.perf_counter() - start
    alive = [n for n in names if n in first]
    if not alive:
        return results
    # what is left of ``seconds`` sizes the timed part from the first calls' times (pessimistic:
    # set-up included): a fast model gets every text and three rounds or more, a slow one fewer texts
    n, rounds = probe_size(seconds - (time.perf_counter() - began), sum(first.values()), len(rows))
    rows = rows[:n]
    times: dict[str, list[float]] = {n: [] for n in alive}
    logits: dict[str, Any] = {}
    r = 0
    while r < rounds or _another_round(began, seconds, r, sum(t[-1] for t in times.values())):
        for name in alive[r % len(alive):] + alive[: r % len(alive)]:  # rotating order: a burst
            t0 = time.perf_counter()                                        # of load hits them all
            logits[name] = np.asarray(candidates[name](rows), dtype=np.float64)
            times[name].append(time.perf_counter() - t0)
        r += 1
    reference = logits.get(names[0])
    for name in alive:
        results[name] = {"texts_per_s": round(len(rows) / min(times[name]), 2), "texts": len(rows)}
        if reference is not None:
            results[name]["agreement"] = float((logits[name].argmax(-1) == reference.argmax(-1)).mean())
            results[name]["estimated_agreement"] = estimated_agreement(reference, logits[name])
    return {name: results[name] for name in names}


def _another_round(began: float, seconds: float, done: int, last_round: float) -> bool:
    """More rounds while they fit in the budget (up to ``PROBE_MAX_ROUNDS``): a fast model's
    rounds take milliseconds, where the best of three is still noise."""
    return done < PROBE_MAX_ROUNDS and time.perf_counter() - began + last_round <= seconds


def probe_size(left: float, per_text: float, available: int) -> tuple[int, int]:
    """(texts, rounds) for the timed part of a probe, ``left`` seconds for it and ``per_text``
    seconds to run one text through every candidate: ``PROBE_ROUNDS`` rounds of as many texts as
    fit when that is at least ``MIN_TIMED_TEXTS``, else one round of fewer (at least one)."""
    per_text = max(per_text, 1e-9)
    n = int(max(left, 0.0) / (per_text * PROBE_ROUNDS))
    if n >= MIN_TIMED_TEXTS:
        return min(n, available), PROBE_ROUNDS
    return max(1, min(int(max(left, 0.0) / per_text), available)), 1


def verify_size(results: dict[str, dict], name: str, reference: str, seconds: float, available: int) -> int:
    """How many texts the untimed re-check of ``name`` against the reference may take within
    ``seconds`` (from their probe speeds), never fewer than the probe had."""
    per_text = 1.0 / results[reference]["texts_per_s"] + 1.0 / results[name]["texts_per_s"]
    return max(results[name]["texts"], min(available, int(seconds / per_text)))


def estimated_agreement(reference, candidate) -> float:
    """The share of texts whose label a candidate would keep, estimated from a small probe with
    more power than counting flips: a label flips where the candidate's change of the gap between
    the reference's top two logits shrinks by more than that gap. Every probe text's shrinking is
    paired with every probe text's gap (n x n pairs), so a 1% flip rate shows on 64 texts, where counting
    would see no flip at all half of the time."""
    import numpy as np

    order = np.argsort(-reference, axis=-1)
    top, second = order[:, 0:1], order[:, 1:2]
    take = np.take_along_axis
    gap = (take(reference, top, -1) - take(reference, second, -1))[:, 0]
    shrink = gap - (take(candidate, top, -1) - take(candidate, second, -1))[:, 0]
    return float(1.0 - (gap[:, None] < shrink[None, :]).mean())


def verify(results: dict[str, dict], name: str, candidates: dict[str, Callable], input_ids: list[list[int]],
           reference: str = REFERENCE, cache: dict | None = None) -> None:
    """Check ``name``'s labels against the reference's on all of ``input_ids`` (the whole first
    batch, untimed) when the timed probe used fewer texts, and record the agreement there: a
    slow model's probe may time only 8 texts, too few to see a 1.5% flip rate."""
    import numpy as np

    cache = {} if cache is None else cache
    key = (reference, len(input_ids))  # the reference's logits on these first texts, computed once
    if key not in cache:
        cache[key] = np.asarray(candidates[reference](input_ids), dtype=np.float64)
    ref = cache[key]
    got = np.asarray(candidates[name](input_ids), dtype=np.float64)
    results[name].update(agreement=float((got.argmax(-1) == ref.argmax(-1)).mean()),
                         estimated_agreement=estimated_agreement(ref, got), verified_on=len(input_ids))


def choose(results: dict[str, dict], reference: str = REFERENCE) -> tuple[str, str]:
    """The backend to run and why, from :func:`probe`'s results (the reference is the fallback)."""
    ref = results.get(reference, {})
    eligible = {n: r for n, r in results.items()
                if "texts_per_s" in r and (n == reference or _agreement(r) >= AGREEMENT_BAR)}
    if reference not in eligible:
        raise NbutilsError(f"the reference backend {reference} could not run: {ref.get('error', 'no result')}",
                           fix="predict with an explicit --backend (e.g. onnx for an export folder)")
    best = max(eligible, key=lambda n: eligible[n]["texts_per_s"])
    speed = eligible[best]["texts_per_s"] / ref["texts_per_s"]
    if best != reference and speed < MIN_GAIN:
        best, speed = reference, 1.0
    excluded = [f"{n} (labels agree {r['agreement']:.1%}, estimated {r.get('estimated_agreement', 1.0):.1%}; "
                f"bar {AGREEMENT_BAR:.1%})"
                for n, r in results.items() if "texts_per_s" in r and n not in eligible]
    failed = [f"{n} ({r['error']})" for n, r in results.items() if "error" in r]
    texts = ref["texts"]
    why = (f"fastest exact-enough on a probe of {texts} texts: {speed:.2f}x {reference}"
           if best != reference else
           f"on a probe of {texts} texts nothing agreeing with it was {MIN_GAIN:.2f}x faster")
    others = ", ".join(f"{n} {r['texts_per_s'] / ref['texts_per_s']:.2f}x" for n, r in eligible.items() if n != best)
    if others:
        why += f"; others {others}"
    if excluded:
        why += "; excluded " + ", ".join(excluded)
    if failed:
        why += "; failed " + ", ".join(failed)
    return best, why


def _agreement(result: dict) -> float:
    """The lower of the counted and the estimated agreement (:func:`estimated_agreement`)."""
    return min(result["agreement"], result.get("estimated_agreement", result["agreement"]))


def say(decision: Decision) -> None:
    """The decision, once, on stderr (stdout carries the predictions)."""
    print(decision.describe(), file=sys.stderr, flush=True)


def sidecar_path(output: str | Path) -> Path:
    """Where the decision is stored beside an output file: ``preds.csv`` -> ``preds.backend.json``."""
    output = Path(output)
    return output.with_name(output.stem + ".backend.json")
