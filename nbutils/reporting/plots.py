"""Figures (seaborn/matplotlib) and small interactive views for the notebooks.

Each figure helper takes plain tables and returns a matplotlib ``Figure``; the notebook shows
it inline and ``save_figure`` writes it as a PNG under ``RunPaths.figure(stage, name)`` so the
report can embed it. Sections are per notebook; add new helpers in a section of their own.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from nbutils.core.io import atomic_file

# Fonts that can draw Chinese class names and n-grams, in order of preference.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
)


# --- shared ---------------------------------------------------------------------------------


def cjk_font() -> str | None:
    """The first installed font (of ``CJK_FONTS``) that can draw Chinese, or None.

    The Noto Sans CJK font that nbutils installs (``nbutils.reporting.fonts``) is registered first, so
    this is None only where that package is missing and no CJK system font exists."""
    from matplotlib import font_manager

    from nbutils.reporting.fonts import register_bundled_cjk_font

    register_bundled_cjk_font()
    installed = {font.name for font in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def use_cjk_font() -> str | None:
    """Put an installed CJK font in front of matplotlib's sans-serif list and return its name.

    Without one (None), Chinese text would render as boxes: matplotlib's per-glyph warnings are
    silenced and ``plot_labels`` swaps Chinese class names for ``class <id>``.
    """
    name = cjk_font()
    if name is None:
        warnings.filterwarnings(
            "ignore", message="Glyph .* missing from font", category=UserWarning
        )
        return None
    matplotlib.rcParams["font.sans-serif"] = [name, *matplotlib.rcParams["font.sans-serif"]]
    matplotlib.rcParams["axes.unicode_minus"] = False
    return name


def plot_labels(names: Sequence[str]) -> list[str]:
    """Class names as figures can draw them: unchanged if ASCII or a CJK font is installed,
    else ``class 0``, ``class 1``, ... (the notebook's tables keep the real names)."""
    if all(name.isascii() for name in names) or cjk_font() is not None:
        return list(names)
    return [f"class {i}" for i in range(len(names))]


def figure_alt(fig: plt.Figure) -> str:
    """Words for a figure's alt text, from its titles and axis labels (no file path)."""
    parts = []
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text():
        parts.append(suptitle.get_text())
    for ax in fig.axes:
        axes = " against ".join(t for t in (ax.get_ylabel(), ax.get_xlabel()) if t)
        title = ax.get_title()
        if title or axes:
            parts.append(f"{title}{' (' + axes + ')' if title and axes else axes}")
    return "; ".join(dict.fromkeys(parts)) or "figure"


def save_figure(fig: plt.Figure, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (never a half-written image), its alt text
    (:func:`figure_alt`) in the PNG's ``Description`` field for whoever shows it later."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                    metadata={"Description": figure_alt(fig)})
    return Path(path)


def saved_alt(path: str | Path) -> str:
    """The alt text :func:`save_figure` stored in a PNG, else words from its file name."""
    from PIL import Image as PILImage

    with PILImage.open(path) as image:
        text = image.info.get("Description")
    return text or Path(path).stem.replace("_", " ")


def show_png(path: str | Path, alt: str | None = None) -> None:
    """Show a saved PNG in the notebook with alt text (report.html carries it to the ``<img>``)."""
    from IPython.display import Image, display

    display(Image(filename=str(path)), metadata={"image/png": {"alt": alt or saved_alt(path)}})


def show_figure(fig: plt.Figure, path: str | Path) -> None:
    """Save ``fig`` as a PNG at ``path`` (e.g. ``RunPaths.figure(stage, name)``, where the report
    finds it), show it in the notebook with its alt text, and close it (no second copy when the
    cell ends). Returns None, so a cell ending with it shows no path."""
    from IPython.display import display

    alt = figure_alt(fig)
    save_figure(fig, path)
    display(fig, metadata={"image/png": {"alt": alt}})
    plt.close(fig)


# --- 02 explore data ------------------------------------------------------------------------


def class_balance_bars(counts: pd.DataFrame) -> plt.Figure:
    """Bars of texts per class (rows of ``counts``), one colour per split (its columns)."""
    import seaborn as sns

    splits = [c for c in counts.columns if c != "total"]
    long = (
        counts[splits]
        .rename_axis("class")
        .reset_index()
        .melt(id_vars="class", var_name="split", value_name="texts")
    )
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(counts) + 2), 4))
    sns.barplot(data=long, x="class", y="texts", hue="split", ax=ax)
    ax.set(title="Texts per class and split", xlabel="", ylabel="texts")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1, 1))
    _rotate_labels(ax)
    fig.tight_layout()
    return fig


def cooccurrence_heatmap(cooccurrence: pd.DataFrame) -> plt.Figure:
    """Texts per label pair (``explore.label_cooccurrence``; the diagonal: texts per label),
    coloured by the share of the row label's texts that also carry the column label."""
    import seaborn as sns

    counts = cooccurrence.astype(float)
    diagonal = pd.Series(np.diag(counts.to_numpy()), index=counts.index)
    shares = counts.div(diagonal.where(diagonal > 0), axis=0).fillna(0)
    n = len(counts)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.62 * n), max(4.0, 0.9 + 0.55 * n)))
    sns.heatmap(shares, ax=ax, cmap="Purples", vmin=0, vmax=1, square=True, annot=counts if n <= 15 else False,
                fmt=".0f", annot_kws={"size": 8}, cbar_kws={"label": "share of the row label's texts"})
    ax.set(xlabel="also carries", ylabel="label", title="label co-occurrence (texts; diagonal: per label)")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig


def length_histograms(
    lengths: pd.DataFrame, *, max_length: int, special_tokens: int = 2
) -> plt.Figure:
    """Histograms of ``chars`` and ``tokens`` per text, the token budget of ``max_length`` marked."""
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.histplot(lengths["chars"], ax=axes[0], discrete=lengths["chars"].max() <= 100)
    axes[0].set(title="Length in characters", xlabel="characters", ylabel="texts")
    sns.histplot(lengths["tokens"], ax=axes[1], discrete=lengths["tokens"].max() <= 100, color="C1")
    budget = max_length - special_tokens
    axes[1].axvline(budget, color="C3", linestyle="--")
    axes[1].annotate(
        f"max_length {max_length}\n(- [CLS], [SEP])",
        xy=(budget, 0.95),
        xycoords=("data", "axes fraction"),
        ha="right",
        va="top",
        color="C3",
        fontsize=9,
    )
    axes[1].set(
        title="Length in WordPiece tokens", xlabel="tokens (without [CLS], [SEP])", ylabel="texts"
    )
    fig.tight_layout()
    return fig


def lengths_by_class(lengths: pd.DataFrame, order: Sequence[str]) -> plt.Figure:
    """Violins of ``chars`` and of ``tokens`` for each ``class`` (a column of class names)."""
    import seaborn as sns

    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.8 * len(order) + 2), 7), sharex=True)
    for ax, column, colour in zip(axes, ("chars", "tokens"), ("C0", "C1"), strict=True):
        sns.violinplot(
            data=lengths,
            x="class",
            y=column,
            order=list(order),
            cut=0,
            inner="quartile",
            color=colour,
            ax=ax,
        )
        ax.set(title=f"Length in {column} per class", xlabel="", ylabel=column)
    _rotate_labels(axes[-1])
    fig.tight_layout()
    return fig


def _rotate_labels(ax) -> None:
    ax.tick_params(axis="x", labelrotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")


def fit_share_curve(
    token_lengths: Sequence[int],
    *,
    max_lengths: Sequence[int],
    recommended: int,
    special_tokens: int = 2,
) -> plt.Figure:
    """Share of texts that fit, as a function of max_length (special tokens counted)."""
    import numpy as np
    import seaborn as sns

    needed = np.asarray(token_lengths) + special_tokens
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    sns.ecdfplot(x=needed, ax=ax)
    for m in max_lengths:
        share = float(np.mean(needed <= m))
        ax.plot([m], [share], "o", color="C0")
        ax.annotate(
            f"{m}: {share:.1%}", (m, share), textcoords="offset points", xytext=(4, -12), fontsize=8
        )
    ax.axvline(recommended, color="C3", linestyle="--", label=f"recommended {recommended}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(max_lengths), [str(m) for m in max_lengths])
    ax.set_ylim(0, 1.05)
    ax.set(
        title="Share of texts that fit",
        xlabel="max_length (tokens incl. [CLS], [SEP])",
        ylabel="share of texts",
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def sample_browser(
    frame: pd.DataFrame, label_names: Sequence[str], *, page_size: int = 10, max_chars: int = 200
):
    """An ipywidgets browser: pick a class and a split, page through its texts."""
    import ipywidgets as widgets
    from IPython.display import display

    from nbutils.data.statistics import page_of, shorten

    label = widgets.Dropdown(
        options=[(name, i) for i, name in enumerate(label_names)], description="class"
    )
    splits = list(dict.fromkeys(frame["split"]))
    split = widgets.Dropdown(options=splits, value=splits[0], description="split")
    page = widgets.BoundedIntText(value=0, min=0, max=0, description="page")
    info = widgets.Label()
    output = widgets.Output()

    def rows() -> pd.DataFrame:
        return frame[(frame["label"] == label.value) & (frame["split"] == split.value)]

    def refresh(*_):
        pool = rows()
        page.max = max((len(pool) - 1) // page_size, 0)
        info.value = f"{len(pool)} texts, {page.max + 1} pages"
        shown = page_of(pool, min(page.value, page.max), page_size)
        output.clear_output(wait=True)
        with output:
            display(shown.assign(text=shown["text"].map(lambda t: shorten(t, max_chars)))[["text"]])

    def reset_page(*_):
        page.value = 0
        refresh()

    label.observe(reset_page, names="value")
    split.observe(reset_page, names="value")
    page.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox([label, split, page, info]), output])


# --- 06 report (owned by the report notebook; helpers take the run's tables) ----------------


def confusion_heatmap(confusion, *, normalize: bool = True):
    """Heatmap of a confusion matrix (rows: true class); normalised per true class by default.

    ``confusion`` is a labelled DataFrame (``nbutils.training.metrics.confusion_frame``). Normalised
    cells show recall per row, which stays readable when classes differ in size; the raw
    counts are annotated when the matrix is small enough to read them.
    """
    import seaborn as sns

    counts = confusion.astype(float)
    values = counts.div(counts.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0) if normalize else counts
    n = len(values)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.62 * n), max(4.0, 0.9 + 0.55 * n)))
    sns.heatmap(values, ax=ax, cmap="Blues", vmin=0, vmax=1 if normalize else None, square=True,
                annot=n <= 15, fmt=".2f" if normalize else ".0f", annot_kws={"size": 8},
                cbar_kws={"label": "share of the true class" if normalize else "examples"})
    ax.set(xlabel="predicted", ylabel="true",
           title="confusion matrix (row-normalised)" if normalize else "confusion matrix")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.tick_params(axis="y", labelrotation=0)
    fig.tight_layout()
    return fig


def per_class_f1_bars(table):
    """F1 per class for the model, and for the baseline when ``table`` has ``baseline_f1``."""
    classes = table.drop(index=[i for i in table.index if str(i).endswith(" avg")], errors="ignore")
    columns = {"f1": "fine-tuned BERT"}
    if "baseline_f1" in classes.columns:
        columns["baseline_f1"] = "TF-IDF baseline"
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(classes)), 3.6))
    classes[list(columns)].rename(columns=columns).plot.bar(ax=ax, width=0.8)
    ax.set(ylabel="test F1", xlabel="", ylim=(0, 1.18), title="per-class F1 on the test split")
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right", rotation_mode="anchor")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", ncol=2)
    fig.tight_layout()
    return fig


def loss_curve(history, *, title: str = "masked-LM loss"):
    """Training loss (and any ``eval_loss``) against the step, e.g. for pre-training."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for col, label in (("loss", "train loss"), ("eval_loss", "held-out loss")):
        if col in history.columns:
            points = history[["step", col]].dropna()
            if len(points):
                ax.plot(points["step"], points[col], marker="." if col == "eval_loss" else None,
                        label=label)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    if ax.has_data():
        ax.legend()
    fig.tight_layout()
    return fig


# --- layer freezing (freezing/results.csv, freezing/history.csv) -------------------------------


def _strategy_scatter(results, x: str, xlabel: str, metric: str, log_x: bool, ax=None):
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    # one point per strategy and seed; marker and colour name the strategy (full, llrd and the
    # control share their x, so text labels would overprint each other)
    sns.scatterplot(data=results, x=x, y=metric, hue="strategy", style="strategy", s=80, ax=ax, alpha=0.8)
    if log_x:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel=metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return ax.figure


def accuracy_vs_params(results, metric: str = "test_accuracy", ax=None):
    """Test accuracy against trainable parameters (log scale), one point per strategy and seed."""
    fig = _strategy_scatter(results, "trainable_params", "trainable parameters (log scale)", metric, True, ax)
    fig.axes[0].set_title(f"{metric.replace('_', ' ')} vs what trains")
    fig.tight_layout()
    return fig


def accuracy_vs_time(results, metric: str = "test_accuracy", ax=None):
    """Test accuracy against training time: the trade-off a user actually chooses on."""
    fig = _strategy_scatter(results, "train_time_s", "training time, s (optimizer steps only)", metric, False, ax)
    fig.axes[0].set_title(f"{metric.replace('_', ' ')} vs training time")
    fig.tight_layout()
    return fig


def strategy_curves(history, metric: str = "eval_accuracy"):
    """Training loss and dev ``metric`` against the step, strategies overlaid (mean ± sd over seeds)."""
    import seaborn as sns

    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.2))
    several = history.groupby("strategy")["seed"].nunique().max() > 1
    # Small batches make the raw loss jump from batch to batch (the same jumps in every
    # strategy); a rolling mean over a tenth of the logged points shows the trend.
    losses = history.dropna(subset=["loss"]).copy()
    window = max(1, losses.groupby(["strategy", "seed"]).size().min() // 10)
    losses["loss"] = losses.groupby(["strategy", "seed"], sort=False)["loss"].transform(
        lambda x: x.rolling(window, min_periods=1).mean())
    loss_label = "training loss" + (f" (rolling mean of {window} logs)" if window > 1 else "")
    for ax, column, label, frame in (
        (ax_loss, "loss", loss_label, losses),
        (ax_dev, metric, f"dev {metric.removeprefix('eval_').replace('_', ' ')}", history),
    ):
        points = frame.dropna(subset=[column])
        sns.lineplot(
            data=points, x="step", y=column, hue="strategy", errorbar="sd" if several else None,
            marker="o" if column != "loss" else None, ax=ax,
        )
        ax.set(ylabel=label, title=label)
        ax.grid(alpha=0.3)
    if ax_loss.get_legend():
        ax_loss.get_legend().remove()  # one legend for both panels
    ax_dev.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig
