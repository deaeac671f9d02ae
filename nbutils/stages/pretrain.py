"""The pre-training stage (notebook 03): domain-adaptive masked-LM (or ELECTRA) pre-training on the
training split, and what it learned.

``Pretraining.open(globals())`` reads the notebook's parameters; each later cell is one call:
:meth:`~Pretraining.load_texts` (the train split only: dev and test texts never reach
pre-training), :meth:`~Pretraining.train`, :meth:`~Pretraining.show_scores`,
:meth:`~Pretraining.show_fill_mask`. With ``mlm_enabled = False`` the stage says so once and every
later call does nothing, so notebooks 04 and 05 fine-tune the converted model. Which recipe
(``mlm_recipe``) decides the scores shown and whether the fill-in probe makes sense is decided
here; the training itself is :mod:`nbutils.pretraining`. The methods return nothing, so a cell
shows only what its section shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from IPython.display import Image, display

from nbutils.core.errors import NbutilsError
from nbutils.core.paths import RunPaths
from nbutils.stages.parameters import require

PARAMETERS = ("run_dir", "headless", "overwrite", "data_dir", "data_format", "data_on_bad_rows",
              "data_text_column", "data_label_column", "device", "precision", "mlm_enabled", "mlm_recipe",
              "mlm_heldout_size")


class Pretraining:
    """One pre-training stage of a run directory, opened from notebook 03's parameters."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = params
        self.paths = RunPaths(params["run_dir"])
        self.enabled = bool(params["mlm_enabled"])
        self.recipe = params["mlm_recipe"]  # mlm | electra
        self.train_texts: list[str] | None = None  # the train split's texts (set by load_texts)
        self.result = None  # what the recipe's function returned (set by train)

    @classmethod
    def open(cls, params: Mapping[str, Any]) -> Pretraining:
        """The stage for notebook 03's parameters (its ``globals()``): quiets transformers' load
        messages, says whether the stage runs, from which model, on which device."""
        from transformers.utils import logging as hf_logging

        from nbutils.runtime.device import choose_device

        require(params, PARAMETERS, "03_pretrain_mlm")
        stage = cls(params)
        # Loading a BERT for MLM lists the heads it does not use (NSP, pooler) at every load; known, so quiet.
        hf_logging.set_verbosity_error()
        if params["headless"]:
            hf_logging.disable_progress_bar()
        if not stage.enabled:
            print("masked-LM pre-training is switched off (mlm_enabled = False): nothing is written, and "
                  f"notebooks 04 and 05 fine-tune the converted model {stage.paths.converted_model}")
            return stage
        print("pre-training", stage.paths.converted_model)
        if params["overwrite"] and stage.paths.pretrain.exists():
            print(f"re-run: {stage.paths.pretrain} is replaced when this pre-training ends (overwrite = True)")
        print(choose_device(params["device"], params["precision"], task="pretrain").describe())
        return stage

    def load_texts(self) -> None:
        """The training split's texts (``train_texts``), the only ones pre-training sees."""
        if not self.enabled:
            return
        from nbutils.data.dataset import load_dataset

        p = self.params
        ds = load_dataset(p["data_dir"], format=p["data_format"], on_bad_rows=p["data_on_bad_rows"],
                          text_column=p["data_text_column"], label_column=p["data_label_column"])
        self.train_texts = ds.texts("train")
        print(f"{len(self.train_texts):,} training texts; {p['mlm_heldout_size']:,} of them held out for "
              f"masked-token accuracy, the rest pre-trained on")

    def train(self, *, overwrite: bool) -> None:
        """Pre-train with the recipe's function (masked LM, or ELECTRA's replaced-token detection)
        on the train texts; print the steps and speed, show the loss curve (``result``: what the
        function returned)."""
        if not self.enabled:
            return
        from nbutils.pretraining.electra import pretraining_recipe

        if self.train_texts is None:
            raise NbutilsError("no training texts yet", fix="run the texts cell (stage.load_texts) first")
        Config, pretrain = pretraining_recipe(self.recipe)
        config = Config.from_params(self.params)  # the mlm_* (and electra_*) parameters, seed, device, precision
        self.result = pretrain(self.train_texts, self.paths.converted_model, self.paths.pretrain, config,
                               figure_path=self.paths.figure("pretrain", "loss"),
                               overwrite=overwrite)
        m = self.result.metrics
        print(f"{m['steps']} steps in {m['train_runtime_s']:.0f} s, "
              f"{m['epochs']:.2f} epochs, {m['tokens_per_s']:,.0f} tokens/s")
        display(Image(filename=str(self.result.figure)))

    def _trained(self):
        if self.result is None:
            raise NbutilsError("nothing pre-trained yet", fix="run the Pre-train cell (stage.train) first")
        return self.result

    def show_scores(self) -> None:
        """Held-out scores before and after (:func:`scores_table`), then the last logged steps."""
        if not self.enabled:
            return
        result = self._trained()
        display(scores_table(result.metrics, self.recipe).round(4))
        display(result.history.tail(5))

    def show_fill_mask(self, probes: Sequence[str], k: int = 5) -> None:
        """The top ``k`` guesses for each ``[MASK]`` of each probe, before and after (masked LM
        only: ELECTRA's saved masked-LM head is untrained)."""
        if not self.enabled:
            return
        if self.recipe == "electra":
            print("ELECTRA trains a detector, not a mask filler: the saved masked-LM head is untrained, so no probe")
            return
        display(pd.DataFrame(fill_mask_rows(probes, self.paths.converted_model, self._trained().model_dir, k=k)))


def scores_table(metrics: Mapping[str, Any], recipe: str) -> pd.DataFrame:
    """Before/after held-out scores: ELECTRA's discriminator and generator accuracies (same masks
    and samples before and after), or masked-token accuracy and masked-LM loss."""
    if recipe == "electra":
        return pd.DataFrame(
            {"before": [metrics["replaced_token_accuracy_before"], metrics["masked_token_accuracy_before"]],
             "after": [metrics["replaced_token_accuracy"], metrics["masked_token_accuracy"]]},
            index=["replaced-token detection accuracy (discriminator)", "masked-token accuracy (generator)"],
        )
    return pd.DataFrame(
        {"before": [metrics["masked_token_accuracy_before"], metrics["heldout_mlm_loss_before"]],
         "after": [metrics["masked_token_accuracy"], metrics["heldout_mlm_loss"]]},
        index=["masked-token accuracy", "masked-LM loss"],
    )


def fill_mask_rows(probes: Sequence[str], before: str | Path, after: str | Path, *, k: int = 5) -> list[dict]:
    """One row per probe and model (``before``, then ``after``): the first mask's top ``k``."""
    from nbutils.pretraining.fill_mask import masked_lm_top_k

    rows = []
    for text in probes:
        for name, folder in (("before", before), ("after", after)):
            guesses = masked_lm_top_k(folder, text, k=k)[0]
            rows.append({"text": text, "model": name, f"top {k}": "  ".join(f"{tok} {p:.2f}" for tok, p in guesses)})
    return rows
