"""The exploration stage (notebook 02): each section computes its part of ``explore/stats.json``,
shows its tables and figures, and :meth:`Exploration.save` writes the file.

The statistics themselves are plain functions in ``nbutils.data.statistics`` (and ``Dataset.quality()``);
this module only decides what goes into the stats file, under which key
(:data:`nbutils.core.run_contract.EXPLORE_STATS_KEYS`), and what the notebook shows beside it, so the
notebook is prose and one call per section. Later stages read the file back with
:func:`recommended_max_length`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import display

from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json
from nbutils.core.paths import RunPaths
from nbutils.core.run_contract import EXPLORE_STATS_KEYS
from nbutils.data import statistics as explore
from nbutils.reporting import plots

STAGE = "explore"


class Exploration:
    """One dataset being explored; ``stats`` fills up section by section."""

    def __init__(self, run_dir: str | Path, dataset, tokenizer, tokenizer_source, *,
                 sample_size: int, seed: int):
        self.paths = RunPaths(run_dir)
        self.ds = dataset
        self.tokenizer = tokenizer
        self.tokenizer_source = tokenizer_source
        self.sample_size = sample_size  # texts per split for token statistics (0: every text)
        self.seed = seed
        self.names = dataset.label_names
        self.figure_names = plots.plot_labels(self.names)  # "class <id>" where no font draws the names
        self.stats: dict[str, Any] = {"dataset": {"source": str(dataset.source), "format": dataset.format,
                                                  "label_names": self.names,
                                                  "multi_label": dataset.multi_label,
                                                  "skipped_rows": len(dataset.skipped)}}
        self.figures: dict[str, str] = {}
        self.sample = None  # the stratified sample the token statistics use (set by lengths())
        self.lengths_frame = None  # one row per sampled text: chars, tokens, unk, class
        self.label_issues = None  # the likely label errors (set by label_errors())

    @classmethod
    def open(cls, run_dir: str | Path, data_dir: str | Path, data_format: str = "auto", *,
             text_column: str = "text", label_column: str = "label", on_bad_rows: str = "raise",
             label_delimiter: str = "", vocab_dir: str | Path | None = None, sample_size: int = 5000,
             seed: int = 42) -> Exploration:
        """Read the dataset and the tokenizer to count with; say what was read."""
        from nbutils.data.dataset import load_dataset

        paths = RunPaths(run_dir)
        paths.explore.mkdir(parents=True, exist_ok=True)
        plots.use_cjk_font()
        ds = load_dataset(data_dir, data_format, text_column=text_column, label_column=label_column,
                          on_bad_rows=on_bad_rows, label_delimiter=label_delimiter)
        tokenizer, source = explore.counting_tokenizer(vocab_dir, paths.converted_model)
        study = cls(run_dir, ds, tokenizer, source, sample_size=sample_size, seed=seed)
        if study.figure_names != study.names:
            print("No CJK font installed (e.g. fonts-noto-cjk): figures label classes by id:",
                  dict(zip(study.figure_names, study.names, strict=True)))
        print(ds)
        print("tokenizer:", source, f"({len(tokenizer):,} tokens)")
        return study

    def _show(self, fig, name: str) -> None:
        """Save the figure where the report finds it, note it for stats.json, show it."""
        saved = self.paths.figure(STAGE, name)
        plots.show_figure(fig, saved)
        self.figures[name] = saved.relative_to(self.paths.root).as_posix()

    def class_balance(self) -> None:
        counts = self.ds.class_counts()
        counts["total"] = counts.sum(axis=1)
        sizes = self.ds.sizes()
        splits = [s for s, n in sizes.items() if n]
        self.stats["split_sizes"] = sizes
        self.stats["class_balance"] = {s: counts[s].to_dict() for s in splits}
        self.stats["imbalance_ratio"] = {s: explore.imbalance_ratio(counts[s]) for s in splits}
        display(pd.concat([counts, counts.sum().rename("all classes").to_frame().T]))
        print("largest / smallest class:",
              {s: round(r, 2) if r else r for s, r in self.stats["imbalance_ratio"].items()})
        self._show(plots.class_balance_bars(counts[splits].set_axis(self.figure_names)), "class_balance")

    def labels_per_text(self, top_pairs: int = 10) -> None:
        """Multi-label data: labels per text (cardinality), label pairs on one text (co-occurrence
        heatmap). One label per text: says so and records ``None``."""
        if not self.ds.multi_label:
            self.stats["multi_label"] = None
            print("one label per text (single-label); a label column with several labels per text "
                  "(a JSON list, or a label delimiter) makes this section count them")
            return
        per_split = {s: explore.label_cardinality(self.ds.label_matrix(s))
                     for s, n in self.ds.sizes().items() if n}
        cooccurrence = explore.label_cooccurrence(self.ds.label_matrix("train"), self.names)
        self.stats["multi_label"] = {
            "cardinality": per_split,
            "cooccurrence_train": cooccurrence.to_numpy().tolist(),
            "top_pairs_train": explore.top_label_pairs(cooccurrence, top_pairs),
            "stratified_by": "each text's rarest label",
        }
        display(pd.DataFrame(per_split).T)
        pairs = self.stats["multi_label"]["top_pairs_train"]
        if pairs:
            display(pd.DataFrame([{"labels": " + ".join(p["labels"]), "texts": p["texts"]} for p in pairs]))
        self._show(plots.cooccurrence_heatmap(cooccurrence.set_axis(self.figure_names, axis=0)
                                              .set_axis(self.figure_names, axis=1)), "label_cooccurrence")

    def lengths(self, coverage: float) -> None:
        """Character and token lengths on the sample; the recommended ``max_length``."""
        ds, stats = self.ds, self.stats
        sample = ds.subsample(self.sample_size, seed=self.seed) if self.sample_size else ds
        print(f"token statistics on {len(sample):,} of {len(ds):,} texts"
              + (" (a stratified sample; explore_sample_size=0 measures all)" if len(sample) < len(ds) else ""))
        lengths = explore.add_length_columns(sample.frame, self.tokenizer)
        lengths["class"] = [self.names[i] for i in lengths["label"]]
        train = lengths[lengths["split"] == "train"]
        self.sample, self.lengths_frame = sample, lengths

        recommended = explore.recommend_max_length(train["tokens"], coverage=coverage)
        stats["length_sample"] = {"explore_sample_size": self.sample_size, "texts": len(lengths),
                                  "of_texts": len(ds)}
        stats["char_lengths_all_texts"] = explore.char_length_percentiles(ds)  # every text, streamed
        stats["lengths"] = {
            unit: {"by_split": explore.percentiles_by(lengths, unit, "split"),
                   "by_class": explore.percentiles_by(lengths, unit, "class")}
            for unit in ("chars", "tokens")
        }
        by_split = lengths.groupby("split", sort=False)
        stats["fit_shares"] = {s: explore.fit_shares(g["tokens"]) for s, g in by_split}
        stats["recommended_max_length"] = recommended
        stats["recommended_max_length_rule"] = explore.recommendation_rule(coverage=coverage)
        stats["recommended_fit_share"] = {s: explore.fit_shares(g["tokens"], (recommended,))[recommended]
                                          for s, g in by_split}

        display(pd.DataFrame({f"{unit} ({s})": v for unit in ("chars", "tokens")
                              for s, v in stats["lengths"][unit]["by_split"].items()}).round(1))
        display(pd.DataFrame(stats["fit_shares"]).rename_axis("max_length").style.format("{:.2%}"))
        print(f"recommended max_length: {recommended} ({stats['recommended_max_length_rule']})")
        if stats["recommended_fit_share"]["train"] < coverage:
            print(f"Only {stats['recommended_fit_share']['train']:.1%} of train texts fit in {recommended} "
                  "tokens: the rest will be truncated (consider head+tail truncation or splitting long texts).")
        self._show(plots.length_histograms(train, max_length=recommended), "lengths")
        self._show(plots.fit_share_curve(train["tokens"], max_lengths=explore.MAX_LENGTH_CANDIDATES,
                                         recommended=recommended), "fit_shares")
        by_id = lengths.assign(**{"class": [self.figure_names[i] for i in lengths["label"]]})
        self._show(plots.lengths_by_class(by_id, order=self.figure_names), "lengths_by_class")
        display(pd.DataFrame(stats["lengths"]["tokens"]["by_class"]).T.round(1))

    def _measured(self) -> pd.DataFrame:
        if self.lengths_frame is None:
            raise NbutilsError("the token statistics need the sampled lengths first",
                               fix="call Exploration.lengths() before this section")
        return self.lengths_frame

    def tokenizer_coverage(self, max_examples: int) -> None:
        """[UNK] rates (overall, per class), the commonest unknown pieces, character widths."""
        lengths = self._measured()
        texts_with_unk = lengths.loc[lengths["unk"] > 0, "text"]
        coverage = explore.unk_rates(lengths, self.names)
        coverage["top_unknown"] = [{"piece": p, "count": c}
                                   for p, c in explore.unknown_pieces(texts_with_unk, self.tokenizer, top=20)]
        self.stats["tokenizer"] = {"source": str(self.tokenizer_source), "vocab_size": len(self.tokenizer),
                                   **coverage}
        self.stats["char_width"] = explore.char_width_shares(lengths["text"])

        print(f"[UNK] rate {coverage['unk_rate']:.3%} of tokens; "
              f"{coverage['texts_with_unk']:.2%} of texts have at least one [UNK]")
        display(pd.Series(coverage["unk_rate_by_class"], name="[UNK] rate").to_frame().style.format("{:.3%}"))
        display(pd.DataFrame(coverage["top_unknown"], columns=["piece", "count"]).head(max_examples * 2))
        display(pd.Series(self.stats["char_width"], name="share").to_frame().style.format("{:.2%}"))

    def quality(self, min_chars: int, max_examples: int) -> None:
        """Duplicates, leakage between splits, conflicting labels, short texts (every text)."""
        quality = self.ds.quality(max_examples=max_examples)
        quality["short_texts"] = explore.short_text_summary(self.ds, min_chars, self.names,
                                                            max_examples=max_examples)
        self.stats["quality"] = quality
        summary = {f"duplicates in {s}": d["count"] for s, d in quality["duplicates"].items()}
        summary.update({f"shared {pair}": n for pair, n in quality["leakage"]["pairs"].items()})
        summary["texts with conflicting labels"] = quality["conflicting_labels"]["count"]
        summary[f"shorter than {min_chars} characters"] = quality["short_texts"]["short"]
        summary["empty"] = quality["short_texts"]["empty"]
        display(pd.Series(summary, name="count").to_frame())
        for title, examples in [("duplicates (train)", quality["duplicates"]["train"]["examples"]),
                                ("shared between splits", quality["leakage"]["examples"]),
                                ("conflicting labels", quality["conflicting_labels"]["examples"]),
                                ("short texts", quality["short_texts"]["examples"])]:
            if examples:
                print(title)
                display(pd.DataFrame(examples))

    def characteristic_ngrams(self, top_k: int = 10) -> None:
        """The character uni- and bigrams most over-represented in each class (chi-squared)."""
        lengths = self._measured()
        characteristic = explore.characteristic_ngrams(lengths["text"].tolist(), lengths["label"].to_numpy(),
                                                       self.names, ngram_range=(1, 2), top_k=top_k)
        self.stats["characteristic_ngrams"] = {name: [{"ngram": g, "chi2": s} for g, s in top]
                                               for name, top in characteristic.items()}
        display(pd.DataFrame({name: [g for g, _ in top] + [""] * (top_k - len(top))
                              for name, top in characteristic.items()}).T)

    def examples(self, *, headless: bool, per_class: int) -> None:
        """Headless: a few seeded random training texts per class; interactively: a browser."""
        self._measured()
        if headless:
            display(explore.sample_table(self.sample.frame, self.names, per_class=per_class, seed=self.seed))
        else:
            display(plots.sample_browser(self.sample.frame, self.names))

    def label_errors(self, *, folds: int, show: int) -> None:
        """Likely label errors of the train split (confident learning on out-of-fold TF-IDF SVM
        scores, :mod:`nbutils.explain.label_errors`): all of them to ``explore/label_issues.csv``,
        the ``show`` most suspect here; ``folds`` 0 skips it (``label_issues``: the table, or None)."""
        from nbutils.explain.label_errors import show_label_errors

        self.label_issues = show_label_errors(self.ds, self.paths.explore / "label_issues.csv", folds=folds,
                                              show=show, seed=self.seed)

    def save(self) -> Path:
        """Write ``explore/stats.json`` (every section must have run: later stages rely on its keys)."""
        self.stats["figures"] = self.figures
        missing = [key for key in EXPLORE_STATS_KEYS if key not in self.stats]
        if missing:
            raise NbutilsError(f"explore/stats.json would lack {', '.join(missing)}",
                               fix="run every section of notebook 02 before saving")
        written = write_json(self.paths.file("explore_stats"), self.stats)
        print("wrote", written)
        return written


def recommended_max_length(run_dir: str | Path, default: int = 128) -> int:
    """``recommended_max_length`` from the run's ``explore/stats.json``, else ``default``; says which."""
    stats_file = RunPaths(run_dir).file("explore_stats")
    stats = json.loads(stats_file.read_text(encoding="utf-8")) if stats_file.exists() else {}
    max_length = int(stats.get("recommended_max_length") or default)
    print(f"max_length {max_length}", "(recommended by notebook 02)" if stats else "(default; notebook 02 did not run)")
    return max_length
