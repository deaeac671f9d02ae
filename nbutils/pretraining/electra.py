"""ELECTRA-style pre-training (replaced-token detection) of a BERT folder on in-domain text.

Clark et al. (2020): instead of predicting the ~15% masked tokens (masked LM), a small
generator fills the masks with plausible tokens and the model being trained, the
*discriminator*, says for **every** token whether it is original or replaced. The loss covers
all positions, not 15% of them, which made ELECTRA-Small far more sample-efficient than a
masked-LM BERT of the same size. That is the situation of the demo: a small BERT from random
weights and a few thousand steps.

How it is built here, on the pieces ``nbutils.pretraining.mlm`` already has (tokenize once, the stock
``DataCollatorForLanguageModeling`` for the masks, the step budget with Trainer's linear
warmup and decay, the held-out slice of train texts):

- the discriminator is the BERT in ``model_dir`` itself (a ``BertModel``) plus a small
  per-token head (dense, GELU, dense -> 1 logit), as in ELECTRA;
- the generator is a shallower BERT (``generator_layers``, ``generator_intermediate_size``)
  that shares the discriminator's embeddings (token, position, type) and ties its output
  vocabulary to them, as ELECTRA does; its masked-LM head runs on masked positions only;
- masked positions are filled with a *sample* from the generator (no gradient through the
  sample); a position where the sample equals the original counts as original;
- loss = generator MLM loss + ``discriminator_weight`` x replaced-token BCE over all non-pad
  tokens (ELECTRA's weight is 50).

The saved folder is a ``BertForPreTraining`` whose encoder is the discriminator;
``AutoModelForSequenceClassification`` loads it for fine-tuning. Its masked-LM head is the
untouched one from ``model_dir`` (the discriminator never learns to fill masks), so masked-LM
probes on it mean nothing; ``metrics.json`` says so (``"masked_lm_head": "not trained"``).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.core.run_contract import HISTORY, LOSS_FIGURE, METRICS, MODEL
from nbutils.pretraining.mlm import (
    PretrainConfig,
    PretrainResult,
    check_pretraining_inputs,
    continue_pretraining,
    copy_loss_figure,
    history_frame,
    masking_tokenizer,
    pretraining_arguments,
    run_settings,
    split_heldout,
    tokenize_texts,
    training_numbers,
)


@dataclass
class ElectraConfig(PretrainConfig):
    """``PretrainConfig`` plus the generator's size and the discriminator's loss weight."""

    generator_layers: int = 1  # ELECTRA: a generator 1/4-1/2 the discriminator's size works best
    generator_intermediate_size: int = 0  # 0: half the discriminator's
    discriminator_weight: float = 50.0  # ELECTRA's lambda: the per-token BCE is much smaller than the MLM loss

    def __post_init__(self):
        super().__post_init__()
        if self.whole_word_masking:
            raise NbutilsError("ELECTRA pre-training here masks single tokens; whole-word masking is not supported",
                               fix="set mlm_whole_word_masking to false, or use mlm_recipe='mlm'")
        if int(self.generator_layers) < 1:
            raise NbutilsError(f"generator_layers must be at least 1, got {self.generator_layers}")
        if not self.discriminator_weight > 0:
            raise NbutilsError(f"discriminator_weight must be positive, got {self.discriminator_weight}")


def _electra_class():
    """Built lazily so importing this module does not import torch."""
    import torch
    from torch import nn
    from transformers.models.bert.modeling_bert import BertModel, BertOnlyMLMHead

    class ElectraPretrainingModel(nn.Module):
        """Generator + discriminator around a BERT encoder; ``forward`` returns the joint loss."""

        def __init__(self, discriminator: BertModel, generator_config, discriminator_weight: float):
            super().__init__()
            self.config = discriminator.config  # Trainer reads a few fields from it
            self.discriminator = discriminator
            hidden = discriminator.config.hidden_size
            self.rtd_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
            self.generator = BertModel(generator_config, add_pooling_layer=False)
            self.generator.embeddings = discriminator.embeddings  # shared, as in ELECTRA
            self.generator_head = BertOnlyMLMHead(generator_config)
            self.generator_head.predictions.decoder.weight = discriminator.embeddings.word_embeddings.weight
            self.discriminator_weight = discriminator_weight
            self.last_parts: dict[str, float] = {}

        def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
            selected = labels != -100
            gen_hidden = self.generator(input_ids, attention_mask=attention_mask, return_dict=True)[0]
            gen_logits = self.generator_head(gen_hidden[selected])
            gen_loss = nn.functional.cross_entropy(gen_logits.float(), labels[selected]) if selected.any() \
                else gen_hidden.sum() * 0.0
            with torch.no_grad():
                original = torch.where(selected, labels, input_ids)
                corrupted = input_ids.clone()
                # A batch may select no token at all (the 2-text last batch of an epoch can):
                # Categorical refuses empty logits, and there is nothing to replace anyway.
                if selected.any():
                    corrupted[selected] = torch.distributions.Categorical(logits=gen_logits.float()).sample()
                replaced = (corrupted != original).float()
            hidden = self.discriminator(corrupted, attention_mask=attention_mask, return_dict=True)[0]
            disc_logits = self.rtd_head(hidden).squeeze(-1).float()
            keep = attention_mask.bool() if attention_mask is not None else torch.ones_like(replaced, dtype=torch.bool)
            disc_loss = nn.functional.binary_cross_entropy_with_logits(disc_logits[keep], replaced[keep])
            loss = gen_loss + self.discriminator_weight * disc_loss
            predicted = disc_logits > 0
            return {"loss": loss, "gen_loss": gen_loss.detach(), "disc_loss": disc_loss.detach(),
                    "gen_correct": (gen_logits.argmax(-1) == labels[selected]).sum(), "gen_total": selected.sum(),
                    "disc_correct": (predicted == replaced.bool())[keep].sum(), "disc_total": keep.sum(),
                    "replaced_found": (predicted & replaced.bool())[keep].sum(), "replaced": replaced[keep].sum()}

    return ElectraPretrainingModel


def build_electra(model_dir: str | Path, config: ElectraConfig, attn_implementation: str = "sdpa"):
    """The joint model: discriminator = the BERT in ``model_dir``, a fresh generator sharing its embeddings."""
    import torch
    from transformers import BertConfig, BertModel

    dropout = {} if config.dropout is None else {"hidden_dropout_prob": config.dropout,
                                                 "attention_probs_dropout_prob": config.dropout}
    discriminator = BertModel.from_pretrained(str(model_dir), attn_implementation=attn_implementation, **dropout)
    discriminator.pooler.requires_grad_(False)  # kept for fine-tuning, unused here
    d = discriminator.config
    gen_config = BertConfig(**{**d.to_dict(), "num_hidden_layers": int(config.generator_layers),
                               "intermediate_size": int(config.generator_intermediate_size or d.intermediate_size // 2)})
    gen_config._attn_implementation = attn_implementation
    torch.manual_seed(config.seed)
    return _electra_class()(discriminator, gen_config, float(config.discriminator_weight))


def heldout_scores(model, features: list[dict], collator, *, batch_size: int = 128, device: str = "cpu",
                   seed: int = 0) -> dict[str, float]:
    """Generator masked-token accuracy and discriminator replaced-token accuracy/recall on held-out texts."""
    import torch

    if not features:
        return {}
    was_training = model.training
    model.eval()
    model.to(device)
    torch.manual_seed(seed)  # the generator samples: the same replacements before and after
    sums = {"gen_correct": 0, "gen_total": 0, "disc_correct": 0, "disc_total": 0, "replaced_found": 0, "replaced": 0}
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = {k: v.to(device) for k, v in collator(features[start:start + batch_size]).items()}
            out = model(**batch)
            for key in sums:
                sums[key] += float(out[key])
    model.train(was_training)
    return {"masked_token_accuracy": sums["gen_correct"] / max(sums["gen_total"], 1),
            "replaced_token_accuracy": sums["disc_correct"] / max(sums["disc_total"], 1),
            "replaced_token_recall": sums["replaced_found"] / max(sums["replaced"], 1)}


def electra_pretraining(texts: Sequence[str], model_dir: str | Path, out_dir: str | Path,
                        config: ElectraConfig | None = None, *, figure_path: str | Path | None = None,
                        overwrite: bool = False) -> PretrainResult:
    """ELECTRA pre-training of the BERT in ``model_dir`` on ``texts`` (train split only); write ``out_dir``.

    Same contract as ``nbutils.pretraining.mlm.continue_pretraining``: ``out_dir`` appears complete or
    not at all, with ``model/``, ``history.csv``, ``metrics.json`` and ``loss.png``.
    """
    from transformers import BertForPreTraining, DataCollatorForLanguageModeling, set_seed

    from nbutils.core.io import atomic_dir, write_json
    from nbutils.runtime.device import choose_device
    from nbutils.training.assembly import assemble_trainer, prepare_for_training
    from nbutils.training.live import LiveCurves
    from nbutils.training.tensorboard_logs import log_dir

    config = config or ElectraConfig()
    texts, model_dir, out_dir = check_pretraining_inputs(texts, model_dir, out_dir, config, overwrite=overwrite)
    set_seed(config.seed)
    choice = choose_device(config.device, config.precision, task="pretrain")
    tokenizer = masking_tokenizer(model_dir)
    model = build_electra(model_dir, config, attn_implementation=choice.attn_implementation)
    prepare_for_training(model, choice.device, invariant_numerics=config.invariant_numerics)

    train_texts, heldout_texts = split_heldout(texts, config.heldout_size, config.seed)
    train_features = tokenize_texts(train_texts, tokenizer, max_length=config.max_length)
    heldout_features = tokenize_texts(heldout_texts, tokenizer, max_length=config.max_length)

    def collator(seed):
        # Every selected position becomes [MASK]: the generator, not the collator, picks replacements.
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability,
                                               mask_replace_prob=1.0, random_replace_prob=0.0, seed=seed)

    def score():
        return heldout_scores(model, heldout_features, collator(config.seed + 1), device=choice.device,
                              batch_size=max(config.batch_size, 64), seed=config.seed + 1)

    before = score()
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        curves = LiveCurves(tmp / LOSS_FIGURE, headless=config.headless,
                            title=f"ELECTRA pre-training ({model.config.num_hidden_layers} layers, "
                                  f"hidden {model.config.hidden_size})", metrics=())
        trainer = assemble_trainer(model, pretraining_arguments(tmp, config, choice), curves=curves,
                                   tensorboard_dir=log_dir(out_dir), tensorboard_task="electra",
                                   headless=config.headless,
                                   govern_threads=config.invariant_numerics, train_dataset=train_features,
                                   processing_class=tokenizer, data_collator=collator(config.seed))
        runtime = float(trainer.train().metrics["train_runtime"])
        after = score()

        # The fine-tuning folder: the source checkpoint (its pooler and heads) with the
        # discriminator's encoder and embeddings.
        saved = BertForPreTraining.from_pretrained(str(model_dir))
        saved.bert.load_state_dict(model.discriminator.state_dict())
        model_out = tmp / MODEL
        saved.save_pretrained(str(model_out), safe_serialization=True)
        tokenizer.save_pretrained(str(model_out))
        shutil.rmtree(tmp / "trainer", ignore_errors=True)

        history = history_frame(trainer.state.log_history)
        history.to_csv(tmp / HISTORY, index=False)
        metrics = _electra_metrics(trainer, model, model_dir, history, config, choice, runtime, before, after,
                                   texts=(len(train_texts), len(heldout_texts)))
        write_json(tmp / METRICS, metrics)
    return PretrainResult(model_dir=out_dir / MODEL, out_dir=out_dir, metrics=metrics, history=history,
                          figure=copy_loss_figure(out_dir, figure_path))





RECIPES = ("mlm", "electra")


def pretraining_recipe(name: str):
    """``(ConfigClass, function)`` for notebook 03's ``mlm_recipe``: masked LM or ELECTRA."""
    if name == "electra":
        return ElectraConfig, electra_pretraining
    if name == "mlm":
        return PretrainConfig, continue_pretraining
    raise NbutilsError(f"unknown pre-training recipe {name!r}", fix=f"set mlm_recipe to one of {', '.join(RECIPES)}")


__all__ = ["RECIPES", "ElectraConfig", "build_electra", "electra_pretraining", "heldout_scores", "pretraining_recipe"]


def _electra_metrics(trainer, model, model_dir, history, config, choice, runtime, before, after, *, texts) -> dict:
    from nbutils.runtime.governor_callback import thread_schedule

    train_texts, heldout_texts = texts
    metrics = {
        "recipe": "electra",
        "masked_token_accuracy": after.get("masked_token_accuracy"),  # the generator's
        "masked_token_accuracy_before": before.get("masked_token_accuracy"),
        "replaced_token_accuracy": after.get("replaced_token_accuracy"),
        "replaced_token_accuracy_before": before.get("replaced_token_accuracy"),
        "replaced_token_recall": after.get("replaced_token_recall"),
        "masked_lm_head": "not trained (the discriminator detects replaced tokens; it does not fill masks)",
        "heldout_texts": heldout_texts,
        "train_texts": train_texts,
        **training_numbers(trainer, history, config, runtime),
        "model": {"source": str(model_dir), "hidden_size": model.config.hidden_size,
                  "num_layers": model.config.num_hidden_layers,
                  "generator_layers": int(config.generator_layers),
                  "parameters": sum(p.numel() for p in model.discriminator.parameters())},
        **run_settings(config, choice),
        "threads": thread_schedule(trainer),
    }
    return metrics
