"""Does fine-tuning's ``max_length`` fit the data? Measured on the train texts, said where it bites.

A profile's ``max_length`` is chosen for the data it was written for (titles: 48 tokens). On other
data (reviews of a few hundred characters) it silently cuts most texts. Before training,
:func:`measure_length_fit` counts the tokens of (a seeded sample of) the train texts and returns
the share longer than ``max_length``, what the data needs (the exploration rule: the smallest
multiple of 8 that fits 99%) and, when more than :data:`WARN_SHARE` is cut, one line that says so
with the option to change at the user's entry point. Fine-tuning prints it and records the dict in
``metrics.json`` (``length_fit``); the report repeats the line. A ``max_length`` beyond the model's
position embeddings is an error naming both settings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nbutils.core.errors import NbutilsError, entry_point

WARN_SHARE = 0.05  # more train texts cut than this: say so
SAMPLE_TEXTS = 5000  # train texts measured (seeded sample); all of them when fewer
COVERAGE = 0.99  # share of train texts the needed max_length fits (as exploration recommends)

_MAX_LENGTH_OPTION = {"run": "-p finetune_max_length={n}", "notebook": "finetune_max_length = {n}",
                      "cli": "--max-length {n}", "python": "FinetuneConfig(max_length={n})"}
_POSITIONS_OPTION = {"run": "-p demo_max_position={n}", "notebook": "demo_max_position = {n} in notebook 01",
                     "cli": "a model with more positions", "python": "make_random_bert(max_position_embeddings={n})"}


def model_positions(model_dir: str | Path) -> int | None:
    """``max_position_embeddings`` from ``model_dir/config.json`` (read directly: no torch)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        return None
    value = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    return int(value) if value else None


def check_positions(max_length: int, positions: int | None) -> None:
    """A clear error when ``max_length`` is more than the model's position embeddings."""
    if positions is not None and max_length > positions:
        entry = entry_point()
        raise NbutilsError(
            f"max_length {max_length} is more than the model's {positions} position embeddings",
            fix=f"lower it ({_MAX_LENGTH_OPTION[entry].format(n=positions)}), or build the demo BERT with "
                f"more positions ({_POSITIONS_OPTION[entry].format(n=max_length)}); a pretrained BERT has 512")


def measure_length_fit(texts: Sequence[str], tokenizer, max_length: int, *, positions: int | None = None,
                       recommended: int | None = None, seed: int = 0) -> dict:
    """How many train texts ``max_length`` cuts. ``recommended``: exploration's recommendation
    (``explore/stats.json``), else the same rule applied to the measured sample."""
    from nbutils.data.statistics import count_tokens, recommend_max_length

    check_positions(max_length, positions)
    n = len(texts)
    rows = (np.sort(np.random.default_rng(seed).choice(n, size=SAMPLE_TEXTS, replace=False))
            if n > SAMPLE_TEXTS else np.arange(n))
    special = len(tokenizer("", add_special_tokens=True)["input_ids"])
    lengths = count_tokens((texts[int(i)] for i in rows), tokenizer).tokens + special
    if not len(lengths):
        raise NbutilsError("no train texts to measure max_length against")
    share = float((lengths > max_length).mean())
    needed = recommend_max_length(lengths - special, coverage=COVERAGE, special_tokens=special, limit=10**9)
    fit = {"max_length": max_length, "model_positions": positions, "texts_measured": int(len(lengths)),
           "truncated_share": share, "longest_tokens": int(lengths.max()),
           "needed_max_length": int(needed), "recommended_max_length": int(recommended or min(needed, 512)),
           "warning": None}
    if share > WARN_SHARE:
        fit["warning"] = length_warning(fit)
    return fit


def length_warning(fit: dict) -> str:
    """The one line: share cut, what exploration recommends, the option to change here."""
    entry = entry_point()
    recommended, positions = fit["recommended_max_length"], fit["model_positions"]
    line = (f"max_length {fit['max_length']} cuts {fit['truncated_share']:.1%} of the train texts "
            f"(of {fit['texts_measured']:,} measured; the longest has {fit['longest_tokens']:,} tokens); "
            f"exploration recommends {recommended}")
    if positions is not None and recommended > positions:
        return (line + f", more than the model's {positions} positions: build the demo BERT with "
                f"{_POSITIONS_OPTION[entry].format(n=recommended)} and set "
                f"{_MAX_LENGTH_OPTION[entry].format(n=recommended)}, or accept the cut")
    return line + f": set {_MAX_LENGTH_OPTION[entry].format(n=recommended)}, or accept the cut"


def needed_positions(texts: Sequence[str], vocab_file: str | Path, *, seed: int = 0) -> int:
    """Position embeddings a demo BERT needs for ``texts``: the max_length that fits 99% of them
    (exploration's rule, at most 512), counted with ``vocab_file``'s WordPiece tokenizer."""
    from nbutils.data.statistics import count_tokens, recommend_max_length
    from nbutils.text.vocab import build_tokenizer

    tokenizer = build_tokenizer(vocab_file)
    n = len(texts)
    rows = (np.sort(np.random.default_rng(seed).choice(n, size=SAMPLE_TEXTS, replace=False))
            if n > SAMPLE_TEXTS else np.arange(n))
    lengths = count_tokens((texts[int(i)] for i in rows), tokenizer).tokens
    return int(recommend_max_length(lengths, coverage=COVERAGE))


def explored_max_length(run_dir: str | Path) -> int | None:
    """``recommended_max_length`` from the run's ``explore/stats.json``; None without one."""
    from nbutils.core.paths import RunPaths

    stats = RunPaths(run_dir).file("explore_stats")
    if not stats.is_file():
        return None
    value = json.loads(stats.read_text(encoding="utf-8")).get("recommended_max_length")
    return int(value) if value else None


__all__ = ["WARN_SHARE", "check_positions", "explored_max_length", "length_warning", "measure_length_fit",
           "model_positions", "needed_positions"]
