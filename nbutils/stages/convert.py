"""The conversion stage (notebook 01): the run's model folder ``convert/model/`` from a checkpoint.

``Conversion.open(globals())`` reads the notebook's parameters; each later cell is one call:
:meth:`~Conversion.prepare_source` (the demo's random BERT, exported to Google's layout, or the
user's checkpoint as given), :meth:`~Conversion.convert`, :meth:`~Conversion.show_variables`,
:meth:`~Conversion.verify` (writes ``convert/conversion_report.json``) and
:meth:`~Conversion.fill_mask_check`. Whether the source is the demo, and whether the conversion
mapped TensorFlow variables or copied a Hugging Face folder, is decided here, not in the notebook.
The conversion itself is :mod:`nbutils.checkpoints.convert`. The methods return nothing, so a
cell shows only what its section shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import display

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.core.run_contract import CONVERSION_REPORT
from nbutils.stages.parameters import require

PARAMETERS = ("run_dir", "headless", "overwrite", "checkpoint_source", "demo_vocab_dir", "data_dir",
              "data_format", "data_on_bad_rows", "data_text_column", "data_label_column", "demo_hidden_size",
              "demo_num_layers", "demo_num_heads", "demo_intermediate_size", "demo_max_position", "seed")
MASKED_LM_CLASSES = ("BertForPreTraining", "BertForMaskedLM")


class Conversion:
    """One conversion into a run directory, opened from notebook 01's parameters."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = params
        self.paths = RunPaths(params["run_dir"])
        self.overwrite = bool(params["overwrite"])
        self.demo = params["checkpoint_source"] == ""  # no checkpoint given: a random small BERT
        self.source: str | Path | None = None  # what convert() reads (set by prepare_source)
        self.model_dir: Path | None = None  # convert/model once converted
        self.report: dict | None = None  # conversion_report.json's content once converted
        self.verification: dict | None = None  # set by verify()
        self._dataset = None  # the demo's dataset, read once when it is needed

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> Conversion:
        """The stage for notebook 01's parameters (its ``globals()``): makes ``convert/``, says
        when a re-run replaces it, and turns progress bars off headless."""
        require(params, PARAMETERS, "01_convert_checkpoint")
        stage = cls(params)
        if stage.overwrite and stage.paths.converted_model.exists():
            print(f"re-run: {stage.paths.convert} is replaced (overwrite = True)")
        stage.paths.convert.mkdir(parents=True, exist_ok=True)
        if params["headless"]:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        return stage

    def _dataset_train(self):
        from nbutils.data.dataset import load_dataset

        if self._dataset is None:
            p = self.params
            self._dataset = load_dataset(p["data_dir"], p["data_format"], on_bad_rows=p["data_on_bad_rows"],
                                         text_column=p["data_text_column"], label_column=p["data_label_column"])
        return self._dataset

    def prepare_source(self) -> None:
        """The demo: a random BERT of the real vocabulary (else of one built from the train texts),
        exported to Google's layout, file sizes listed. Otherwise ``checkpoint_source`` as given."""
        if not self.demo:
            self.source = self.params["checkpoint_source"]
            print("source:", self.source)
            return
        from nbutils.checkpoints.convert import export
        from nbutils.checkpoints.random_bert import make_random_bert

        p = self.params
        vocab_file = self._demo_vocab()
        random_bert = make_random_bert(
            vocab_file, self.paths.convert / "demo_random_bert", hidden_size=p["demo_hidden_size"],
            num_layers=p["demo_num_layers"], num_heads=p["demo_num_heads"],
            intermediate_size=p["demo_intermediate_size"], max_position_embeddings=self._demo_positions(vocab_file),
            seed=p["seed"], overwrite=self.overwrite,
        )
        self.source = export(random_bert, self.paths.convert / "google_checkpoint", overwrite=self.overwrite)
        print("random BERT (demo) exported to Google's layout:")
        for f in sorted(Path(self.source).iterdir()):
            print(f"  {f.name:40s} {f.stat().st_size / 1e6:8.2f} MB")

    def _demo_vocab(self) -> Path:
        from nbutils.text.vocab import build_char_vocab, read_vocab

        vocab_dir = self.params["demo_vocab_dir"]
        vocab_file = Path(vocab_dir) / "vocab.txt"
        if vocab_file.is_file():
            print(f"vocabulary: {vocab_file} ({len(read_vocab(vocab_file)):,} tokens)")
            return vocab_file
        texts = self._dataset_train().texts("train")
        vocab_file = build_char_vocab(texts, self.paths.convert / "demo_vocab.txt")
        print(f"no vocab.txt in {vocab_dir}: built a character vocabulary of "
              f"{len(read_vocab(vocab_file)):,} tokens from {len(texts):,} training texts")
        return vocab_file

    def _demo_positions(self, vocab_file: Path) -> int:
        """``demo_max_position``, or with 0 as many positions as the train texts need (notebook
        02's max_length rule)."""
        positions = self.params["demo_max_position"]
        if not positions:
            from nbutils.training.length_fit import needed_positions

            positions = needed_positions(self._dataset_train().text_column("train"), vocab_file)
            print(f"demo BERT: {positions} positions, what 99% of the train texts need (demo_max_position = 0)")
        return positions

    def convert(self) -> None:
        """Convert the source into ``convert/model/`` (or copy a Hugging Face folder); print what
        was done (``report``: the conversion report)."""
        from nbutils.checkpoints.convert import resolve_model_source

        if self.source is None:
            raise NbutilsError("no source to convert yet", fix="run the source cell (stage.prepare_source) first")
        self.model_dir = resolve_model_source(self.source, self.paths.converted_model, overwrite=self.overwrite)
        self.report = report = json.loads((self.model_dir / CONVERSION_REPORT).read_text(encoding="utf-8"))
        print(f"{report['source_kind']} -> {self.model_dir}")
        print(f"model class: {report['model_class']}, {report['tensor_count']} tensors, "
              f"{report['bytes'] / 1e6:.1f} MB")
        if report["mapped"]:
            print(f"CRC32C verified: {report['crc32c_verified']} tensors; skipped (training state/ignored): "
                  f"{len(report['skipped'])}; initialised fresh: {len(report['initialized_fresh'])}")

    def _converted(self) -> dict:
        if self.report is None:
            raise NbutilsError("nothing converted yet", fix="run the Convert cell (stage.convert) first")
        return self.report

    def show_variables(self) -> None:
        """Every TensorFlow variable and the Hugging Face parameter it became (all rows)."""
        from nbutils.checkpoints.convert import variable_table

        report = self._converted()
        if not report["mapped"]:
            print("No conversion was needed: the source is already a Hugging Face folder.")
            return
        table = variable_table(report)
        with pd.option_context("display.max_rows", None, "display.max_colwidth", 80):  # all of it: the record
            display(table)
        print(table["mapped_to"].str.startswith("skipped").value_counts()
              .rename({False: "mapped", True: "skipped"}).to_string())

    def verify(self) -> None:
        """Load the folder back with transformers and compare each parameter with the checkpoint
        (a copied Hugging Face folder: config, weights and tokenizer checked); write
        ``convert/conversion_report.json``. A failed verification raises."""
        from nbutils.checkpoints.convert import verify_conversion
        from nbutils.core.io import write_json

        report = self._converted()
        if report["mapped"]:
            verification = verify_conversion(self.model_dir)
            display(pd.Series({k: v for k, v in verification.items()}, name="verification").to_frame())
            if not verification["ok"]:
                raise RuntimeError(f"conversion verification failed: {verification}")
        else:
            from nbutils.checkpoints.model_folder import check_model_dir

            check_model_dir(self.model_dir)
            verification = {"ok": True, "checked": "config, weights and tokenizer present; vocab sizes agree"}
            print(verification)
        write_json(self.paths.file("conversion"), {**report, "verification": verification})
        self.verification = verification
        print("report:", self.paths.file("conversion"))

    def fill_mask_check(self, sentence: str) -> None:
        """The top five fillers of ``[MASK]`` in ``sentence`` (models with a masked-LM head); the
        demo says its weights are random."""
        from nbutils.pretraining.fill_mask import masked_lm_top_k

        report = self._converted()
        if report["model_class"] not in MASKED_LM_CLASSES:
            print(f"{report['model_class']} has no masked-LM head: no fill-in check.")
            return
        top = masked_lm_top_k(self.model_dir, sentence, k=5)[0]
        display(pd.DataFrame(top, columns=["token", "probability"]).rename_axis(f"top-5 for {sentence}"))
        if self.demo:
            print("These weights are RANDOM (demo profile): the predictions above are noise, not a result. "
                  "Notebook 03 pre-trains this model on the training texts; a real checkpoint predicts 首.")
