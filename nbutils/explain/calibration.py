"""How far the model's confidence can be trusted: expected calibration error (ECE), reliability
diagrams, and temperature scaling.

Fine-tuning (``nbutils.training.finetune``) fits one temperature ``T`` on the dev split (Guo et al.
2017: the lowest dev log-loss of ``softmax(logits / T)``), saves it as ``model/calibration.json``
and records ECE and log-loss before and after on dev and test in ``metrics.json["calibration"]``
(with the reliability bins). ``nbutils predict``, the ONNX backends (``nbutils export-onnx``
copies the file) and the notebook's prediction box divide the logits by ``T``: the label never
changes, the confidence does. The arithmetic lives in ``nbutils.training.metrics`` (fine-tuning, one
layer down, computes it in ``nbutils.training.metrics``); this module draws and tabulates it for notebook 04 and the report.
"""

from __future__ import annotations

from nbutils.core.errors import NbutilsError
from nbutils.training.metrics import (
    expected_calibration_error,
    reliability_bins,
    temperature_scaling,
)

SPLITS = ("dev", "test")


def _checked(calibration: dict | None) -> dict:
    if not calibration:
        raise NbutilsError("this run's metrics.json has no calibration (it was fine-tuned before "
                           "temperature scaling existed)",
                           fix="fine-tune again (notebook 04 or `nbutils train`) to fit and record it")
    if "skipped" in calibration:
        raise NbutilsError(f"no calibration in this run: {calibration['skipped']}")
    return calibration


def calibration_table(calibration: dict | None):
    """One row per split: examples, ECE and log-loss before and after the dev-fitted temperature."""
    import pandas as pd

    calibration = _checked(calibration)
    rows = [{"split": split, "examples": calibration[split]["examples"],
             "temperature": calibration["temperature"],
             **{k: calibration[split][k] for k in ("ece_before", "ece_after", "nll_before", "nll_after")}}
            for split in SPLITS if split in calibration]
    return pd.DataFrame(rows).set_index("split")


def calibration_line(calibration: dict | None) -> str:
    """One sentence for the report and the notebook: T, and the test ECE before and after."""
    calibration = _checked(calibration)
    test = calibration["test"]
    softer = "softens" if calibration["temperature"] > 1 else "sharpens"
    return (f"Temperature scaling fitted on the dev split (T = {calibration['temperature']:.2f}, "
            f"which {softer} the probabilities) takes the test expected calibration error from "
            f"{test['ece_before']:.2%} to {test['ece_after']:.2%} ({calibration['n_bins']} confidence "
            f"bins, {test['examples']:,} test examples); the predicted labels are unchanged.")


def _panel(ax, bins_before: list[dict], bins_after: list[dict], title: str) -> None:
    width = bins_before[0]["high"] - bins_before[0]["low"]
    for bins, label, colour, shift in ((bins_before, "before", "#bbbbbb", -0.22),
                                       (bins_after, "after (temperature)", "#3274a1", 0.22)):
        shown = [b for b in bins if b["count"]]
        ax.bar([b["low"] + width * (0.5 + shift) for b in shown], [b["accuracy"] for b in shown],
               width=width * 0.44, color=colour, label=f"accuracy, {label}")
        ax.plot([b["confidence"] for b in shown], [b["accuracy"] for b in shown], "o", ms=3, color=colour)
    ax.plot([0, 1], [0, 1], "--", color="black", lw=1, label="perfectly calibrated")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (highest probability)", ylabel="accuracy",
           title=title)
    ax.legend(loc="upper left", fontsize=8)


def reliability_diagram(calibration: dict | None):
    """Reliability diagrams of dev and test (bars: accuracy per confidence bin, before and after
    the temperature; the diagonal is perfect calibration), ECE in each title."""
    import matplotlib.pyplot as plt

    calibration = _checked(calibration)
    splits = [s for s in SPLITS if s in calibration]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        entry = calibration[split]
        _panel(ax, entry["bins_before"], entry["bins_after"],
               f"{split}: ECE {entry['ece_before']:.1%} -> {entry['ece_after']:.1%} "
               f"(T = {calibration['temperature']:.2f})")
    fig.tight_layout()
    return fig


__all__ = ["calibration_line", "calibration_table", "expected_calibration_error",
           "reliability_bins", "reliability_diagram", "temperature_scaling"]
