"""What the layer-freezing comparison shows: mean and spread over seeds per strategy, and a few
sentences computed from the numbers (notebooks 05 and 06 show them)."""

from __future__ import annotations

import math

from nbutils.core.errors import NbutilsError
from nbutils.training.freezing import (
    CLASSIFIER_ONLY,
    FULL,
    LLRD,
    RANDOM_INIT_CONTROL,
    RESULT_COLUMNS,
)

SUMMARY_METRICS = (
    "test_accuracy", "test_macro_f1", "dev_accuracy", "dev_macro_f1", "train_time_s",
    "samples_per_second", "peak_memory_mb",
)


def summarise(results):
    """Mean and standard deviation over seeds, one row per strategy (in the order they ran).

    Columns: ``seeds``, ``trainable_params``, ``trainable_fraction`` and ``<metric>_mean`` /
    ``<metric>_std`` for test/dev accuracy and macro-F1, train time, samples/s and peak memory.
    The std is NaN with a single seed: one run says nothing about the spread.
    """
    import pandas as pd

    missing = [c for c in RESULT_COLUMNS if c not in results.columns]
    if missing:
        raise NbutilsError(f"results lack columns {missing}", fix="pass the frame run_comparison returned (results.csv)")
    grouped = results.groupby("strategy", sort=False)
    out = pd.DataFrame({
        "seeds": grouped["seed"].nunique(),
        "trainable_params": grouped["trainable_params"].first(),
        "trainable_fraction": grouped["trainable_params"].first() / grouped["total_params"].first(),
    })
    for metric in SUMMARY_METRICS:
        out[f"{metric}_mean"] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return out


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if std == std else "")


def describe_findings(results, reference: str = FULL, metric: str = "test_accuracy") -> str:
    """A few sentences (markdown bullets) that say what the numbers show, computed from them."""
    summary = summarise(results)
    mean, std = summary[f"{metric}_mean"], summary[f"{metric}_std"]
    what = metric.replace("_", " ")
    n_seeds = int(summary["seeds"].min())
    lines = []
    best = mean.idxmax()
    tied = [n for n in mean.index if mean[n] == mean[best]]
    runs = f"{len(summary)} strategies, {n_seeds if n_seeds == summary['seeds'].max() else f'{n_seeds}+'} seed(s) each"
    if len(tied) > 1:
        lines.append(f"{len(tied)} strategies tie for the highest mean {what}, {_pm(mean[best], std[best])} ({runs}).")
    else:
        lines.append(f"Highest mean {what}: **{best}** with {_pm(mean[best], std[best])} ({runs}).")
    if reference in summary.index:
        ref_mean, ref_time = mean[reference], summary.loc[reference, "train_time_s_mean"]

        def versus(name: str, other: str = reference) -> str:
            gap = 100 * (mean[name] - mean[other])
            if gap == 0:
                return f"ties {other}"
            spread = 100 * 2 * math.hypot(std[name], std[other])  # 2 sd of the difference
            if spread != spread:
                verdict = "one seed each, so the seed-to-seed spread is unknown"
            elif abs(gap) <= spread:
                verdict = f"within 2 sd of the seed-to-seed spread, {spread:.1f} points"
            else:
                verdict = f"beyond 2 sd of the seed-to-seed spread, {spread:.1f} points"
            return f"{'beats' if gap > 0 else 'trails'} {other} by {abs(gap):.1f} points ({verdict})"

        if CLASSIFIER_ONLY in summary.index:
            frac = summary.loc[CLASSIFIER_ONLY, "trainable_fraction"]
            lines.append(
                f"Training only the classifier ({100 * frac:.2g}% of the parameters, the feature-based way) "
                f"{versus(CLASSIFIER_ONLY)}: {_pm(mean[CLASSIFIER_ONLY], std[CLASSIFIER_ONLY])} vs "
                f"{_pm(ref_mean, std[reference])}."
            )
        frozen = [n for n in summary.index if n not in (reference, RANDOM_INIT_CONTROL, LLRD)]
        if frozen:
            fastest = summary.loc[frozen, "train_time_s_mean"].idxmin()
            t = summary.loc[fastest, "train_time_s_mean"]
            lines.append(
                f"Fastest freezing strategy to train: **{fastest}**, {t:.1f} s of training steps vs {ref_time:.1f} s for "
                f"{reference} ({t / ref_time:.0%} of its time); it {versus(fastest)}."
            )
            close = [n for n in frozen if mean[n] >= ref_mean - 0.01]
            if close:
                cheapest = min(close, key=lambda n: summary.loc[n, "train_time_s_mean"])
                lines.append(
                    f"Cheapest to train within 1 point of {reference}: **{cheapest}** "
                    f"({summary.loc[cheapest, 'train_time_s_mean']:.1f} s, "
                    f"{100 * summary.loc[cheapest, 'trainable_fraction']:.2g}% of the parameters trainable)."
                )
            else:
                lines.append(f"No freezing strategy came within 1 point of {reference}.")
        mem = summary["peak_memory_mb_mean"]
        if mem.notna().any() and frozen and mem[frozen].notna().any():
            low = mem[frozen].idxmin()
            kind = results["peak_memory_kind"].iloc[0] if "peak_memory_kind" in results else "peak memory"
            lines.append(
                f"Peak memory ({kind}): {mem[reference]:.0f} MB for {reference}, "
                f"{mem[low]:.0f} MB for {low}, the lowest."
            )
        if LLRD in summary.index:
            lines.append(
                f"Layer-wise LR decay (nothing frozen) {versus(LLRD)}: {_pm(mean[LLRD], std[LLRD])}."
            )
        if RANDOM_INIT_CONTROL in summary.index:
            lines.append(
                f"Control: {reference} fine-tuning of the same architecture from random weights, under the "
                f"same budget, reaches {_pm(mean[RANDOM_INIT_CONTROL], std[RANDOM_INIT_CONTROL])}; the starting "
                f"encoder {versus(reference, RANDOM_INIT_CONTROL).replace(RANDOM_INIT_CONTROL, 'random weights')}."
            )
    return "\n".join(f"- {line}" for line in lines)
