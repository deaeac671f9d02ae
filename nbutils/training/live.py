"""See training as it happens: live curves and a progress style that suits where you run.

- ``LiveCurves``: a Trainer callback that draws loss, dev accuracy and dev macro-F1 against the
  step. In JupyterLab one figure is updated in place (an IPython display handle); headless
  (papermill, scripts) nothing is drawn until the end, when the same figure is written as PNG.
  Its ``history`` is the Trainer's own log history as a table, so a resumed run keeps the
  rows logged before the interruption.
- Progress: tqdm bars (the notebook widget in JupyterLab) interactively; under papermill,
  ``QuietProgress`` prints a handful of plain lines instead of hundreds of bar redraws.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

# Columns of history.csv in the order the contract lists them; other logged keys follow.
HISTORY_COLUMNS = (
    "step", "epoch", "loss", "learning_rate", "eval_loss", "eval_accuracy", "eval_macro_f1",
)
# Keys that describe a whole run (the Trainer's final summary), not one step.
_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"}


def history_frame(log_history: Sequence[dict]):
    """One row per logged step (train and eval entries of the same step merged)."""
    import pandas as pd

    rows: dict[int, dict] = {}
    for entry in log_history:
        if "step" not in entry or _SUMMARY_KEYS & entry.keys():
            continue
        row = rows.setdefault(int(entry["step"]), {})
        row.update({k: v for k, v in entry.items() if not k.endswith(("_runtime", "_per_second"))})
    frame = pd.DataFrame(sorted(rows.values(), key=lambda r: r["step"]))
    for col in HISTORY_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype="float64")
    extra = [c for c in frame.columns if c not in HISTORY_COLUMNS]
    frame = frame[list(HISTORY_COLUMNS) + extra]
    return frame.astype({"step": "int64"})


def draw_curves(history, metrics: Sequence[str] = ("eval_accuracy", "eval_macro_f1"), title: str = "", fig=None):
    """Draw loss (left) and dev metrics (right) against the step onto ``fig`` (or a new one)."""
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(10, 3.6))
    fig.clf()
    ax_loss, ax_metric = fig.subplots(1, 2)
    for col, label in (("loss", "train loss"), ("eval_loss", "dev loss")):
        points = history[["step", col]].dropna() if col in history else history.iloc[:0]
        if len(points):
            ax_loss.plot(points["step"], points[col], marker="." if col == "eval_loss" else None, label=label)
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    for col in metrics:
        points = history[["step", col]].dropna() if col in history else history.iloc[:0]
        if len(points):
            ax_metric.plot(points["step"], points[col], marker="o", label=col.removeprefix("eval_").replace("_", " "))
    ax_metric.set(xlabel="step", ylabel="dev score", title="dev metrics")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveCurves(TrainerCallback):
    """Training curves: updated in place in JupyterLab, written as PNG at the end in any case."""

    def __init__(
        self,
        out_png: str | Path | None = None,
        headless: bool = True,
        title: str = "",
        metrics: Sequence[str] = ("eval_accuracy", "eval_macro_f1"),
        min_interval_s: float = 1.0,
    ):
        self.out_png = Path(out_png) if out_png else None
        self.headless = headless
        self.title = title
        self.metrics = tuple(metrics)
        self.min_interval_s = min_interval_s  # redraws cost ~0.1 s; don't let them slow training
        self._log_history: list[dict] = []
        self._fig = None
        self._handle = None
        self._last_draw = 0.0

    @property
    def history(self):
        return history_frame(self._log_history)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The Trainer's state.log_history survives checkpoint/resume; our own list would not.
        self._log_history = state.log_history
        if self.headless or not state.is_world_process_zero:
            return
        is_eval = bool(logs) and any(k.startswith("eval_") for k in logs)
        if is_eval or time.monotonic() - self._last_draw >= self.min_interval_s:
            self._redraw()

    def on_train_end(self, args, state, control, **kwargs):
        self._log_history = state.log_history
        if not state.is_world_process_zero:
            return
        if not self.headless:
            self._redraw()
        if self.out_png is not None:
            self.save(self.out_png)

    def save(self, path: str | Path) -> Path:
        """Write the current curves as PNG (atomically)."""
        import matplotlib.pyplot as plt

        from nbutils.core.io import atomic_file

        fig = draw_curves(self.history, self.metrics, self.title)
        path = Path(path)
        with atomic_file(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return path

    def _redraw(self):
        import matplotlib.pyplot as plt
        from IPython.display import display

        self._fig = draw_curves(self.history, self.metrics, self.title, fig=self._fig)
        if self._handle is None:
            self._handle = display(self._fig, display_id=True)
            plt.close(self._fig)  # keep the inline backend from showing a second copy
        else:
            self._handle.update(self._fig)
        self._last_draw = time.monotonic()


class QuietProgress(TrainerCallback):
    """A few plain progress lines for logs and papermill, e.g. ``step 120/900 (13%) loss 0.84, 42 s``."""

    def __init__(self, lines: int = 10, print_fn=print):
        self.lines = max(1, lines)
        self.print = print_fn
        self._start = 0.0
        self._next = 0
        self._loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = time.monotonic()
        every = max(1, state.max_steps // self.lines)
        self._every = every
        self._next = (state.global_step // every + 1) * every
        if state.is_world_process_zero:
            resumed = f", resuming at step {state.global_step}" if state.global_step else ""
            self.print(f"training: {state.max_steps} steps{resumed}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])
        if logs and state.is_world_process_zero and any(k.startswith("eval_") for k in logs):
            scores = ", ".join(
                f"{k.removeprefix('eval_')} {v:.4f}" for k, v in logs.items()
                if k.startswith("eval_") and isinstance(v, float) and not k.endswith(("_runtime", "_per_second"))
            )
            self.print(f"  eval at step {state.global_step} (epoch {state.epoch:.2f}): {scores}")

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step < self._next and step != state.max_steps:
            return
        self._next = (step // self._every + 1) * self._every
        if state.is_world_process_zero:
            pct = 100 * step / max(1, state.max_steps)
            loss = f" loss {self._loss:.4f}" if self._loss is not None else ""
            self.print(f"step {step}/{state.max_steps} ({pct:.0f}%){loss}, {time.monotonic() - self._start:.0f} s")


def progress_kwargs(headless: bool) -> dict:
    """TrainingArguments for the progress style: no tqdm bars when headless."""
    return {"disable_tqdm": bool(headless)}


def use_progress_style(trainer, headless: bool, lines: int = 10) -> None:
    """Headless: swap the Trainer's bars / raw log printing for ``lines`` ``QuietProgress``
    lines (0: none, for a caller that prints one line per training itself)."""
    if headless:
        trainer.remove_callback(PrinterCallback)
        trainer.remove_callback(ProgressCallback)
        try:
            from transformers.utils.notebook import NotebookProgressCallback

            trainer.remove_callback(NotebookProgressCallback)
        except ImportError:
            pass
        if lines > 0:
            trainer.add_callback(QuietProgress(lines))
