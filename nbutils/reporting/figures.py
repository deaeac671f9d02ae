"""The README's pictures, redrawn from a run's files: ``make figures RUN=runs/<run>``.

Each figure is drawn again from the run's tables (not copied from the notebooks' PNGs), small
and at one size, with the run's name in a corner so a reader knows where it came from:

    figures/training_curves.png       finetune/history.csv: loss and dev scores per step
    figures/confusion_matrix.png      finetune/metrics.json: test confusion matrix, row-normalised
    figures/freezing_comparison.png   freezing/results.csv: test accuracy vs trainable parameters
    figures/pretraining_loss.png      pretrain/history.csv: masked-LM loss (when the run pre-trained)

``figures/jupyterlab.png``, the same run's notebook 04 as JupyterLab shows it, is taken by
``make figures`` with ``python tests/jupyterlab_driver.py screenshot`` (a browser is a test
tool, not a dependency of this package). Class names are the ones the run's data uses, exactly
as a user's own run draws them (Chinese names with the bundled CJK font,
``nbutils.reporting.fonts``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import REPO_ROOT, RunPaths

MAX_BYTES = 200_000  # README images stay small: the repository carries every version


def _stamp(fig, run_name: str) -> None:
    fig.text(0.995, 0.005, f"run {run_name}", ha="right", va="bottom", fontsize=7, color="0.45")


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    from nbutils.core.io import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pil_kwargs={"optimize": True})
    plt.close(fig)
    if path.stat().st_size > MAX_BYTES:
        raise NbutilsError(f"{path} is {path.stat().st_size:,} bytes (more than {MAX_BYTES:,})",
                           fix="lower --dpi")
    return path


def make_figures(run_dir: str | Path, out_dir: str | Path = REPO_ROOT / "figures", *, dpi: int = 80) -> list[Path]:
    """Draw the README figures of ``run_dir`` into ``out_dir``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from nbutils.reporting import plots
    from nbutils.training.live import draw_curves
    from nbutils.training.metrics import confusion_frame

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    metrics_path = RunPaths(run_dir).file("finetune_metrics")
    if not metrics_path.is_file():
        raise NbutilsError(f"{run_dir}: no finetune/metrics.json", fix="pass a finished run: make figures RUN=runs/<run>")
    plots.use_cjk_font()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    written = []

    history = pd.read_csv(RunPaths(run_dir).file("finetune_history"))
    test = metrics["test"]
    fig = draw_curves(history, title=f"fine-tuning: test accuracy {test['accuracy']:.2%}, macro-F1 {test['macro_f1']:.2%}")
    fig.set_size_inches(9, 3.2)
    fig.tight_layout()
    _stamp(fig, name)
    written.append(_save(fig, out_dir / "training_curves.png", dpi))

    confusion = confusion_frame(test)
    labels = plots.plot_labels(list(confusion.index))
    fig = plots.confusion_heatmap(confusion.set_axis(labels, axis=0).set_axis(labels, axis=1))
    fig.axes[0].set_title(f"test confusion matrix (row-normalised), {test['n']:,} titles")
    _stamp(fig, name)
    written.append(_save(fig, out_dir / "confusion_matrix.png", dpi))

    results_path = RunPaths(run_dir).file("freezing_results")
    if results_path.is_file():
        fig = plots.accuracy_vs_params(pd.read_csv(results_path))
        fig.set_size_inches(7, 3.6)
        fig.tight_layout()
        _stamp(fig, name)
        written.append(_save(fig, out_dir / "freezing_comparison.png", dpi))

    pretrain_history = RunPaths(run_dir).file("pretrain_history")
    if pretrain_history.is_file():
        fig = plots.loss_curve(pd.read_csv(pretrain_history), title="masked-LM pre-training loss")
        _stamp(fig, name)
        written.append(_save(fig, out_dir / "pretraining_loss.png", dpi))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbutils figures", description="Redraw the README figures from a run.")
    parser.add_argument("run", help="a finished run directory, e.g. runs/<timestamp>-demo")
    parser.add_argument("--out", default=str(REPO_ROOT / "figures"), help="folder for the PNGs (default: figures/)")
    parser.add_argument("--dpi", type=int, default=80, help="resolution of the PNGs (default: 80, keeps each < 200 KB)")
    args = parser.parse_args(argv)
    for path in make_figures(args.run, args.out, dpi=args.dpi):
        print(f"wrote {path} ({path.stat().st_size / 1000:.0f} kB)")
    return 0
