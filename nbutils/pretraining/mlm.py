"""Continued masked-LM pre-training of a BERT folder on in-domain text (domain adaptation).

Gururangan et al. (2020) "Don't Stop Pretraining" and Sun et al. (2019) show that a few more
MLM steps on the task's own unlabeled text help the classifier trained afterwards. In the demo
profile this is also how a small random BERT learns Chinese at all.

What it does, with the library wherever the library has it:
- ``DataCollatorForLanguageModeling``: dynamic padding, 15% of tokens selected, of which 80%
  become ``[MASK]``, 10% a random token, 10% stay. Whole-word masking is an option (below).
- ``Trainer`` with the shared device choice (``nbutils.runtime.device``) and progress / live curves
  (``nbutils.training.live``). The step budget alone decides how long it trains, with Trainer's linear
  warmup and decay over those steps: a wall-clock budget would turn a busy or slow machine into
  a less trained model (a demo run on a loaded CPU stopped after 177 of 3,000 steps).
- The texts are tokenized once up front; a slice of them is held out (never trained on) to
  measure masked-token accuracy before and after, with the same masks both times.

Speed: the MLM decoder projects every position onto the 21,128-token vocabulary, which costs
more than a whole small encoder. Only the ~15% masked positions carry a loss, so
``MaskedPositionsBertForMaskedLM`` gathers them before the prediction head (same loss, a
fraction of the work; ``benchmarks/bench_mlm.py`` measures it). The saved folder is a plain
``BertForMaskedLM`` that ``AutoModelForSequenceClassification`` loads.

Whole-word masking for Chinese: the collator finds words from token offsets (a new word starts
where a token does not touch the previous one). Chinese has no spaces, so a whole headline
would count as one word. A word segmenter (jieba) supplies the boundaries; each token's offsets
are shifted by its word's index, which opens a gap exactly where jieba puts a word boundary,
and the stock collator then masks whole words. Without jieba installed the option is an error
rather than a silent fallback to per-character masking.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbutils.checkpoints.weights import quiet_weight_files, weights_origin, write_weights_origin
from nbutils.core.config_flags import config_from_params
from nbutils.core.errors import NbutilsError
from nbutils.core.run_contract import HISTORY, LOSS_FIGURE, METRICS, MODEL

# "corpus": only tokens of the pre-training texts can be predicted (MaskedPositionsBertForMaskedLM)
OUTPUT_VOCABULARIES = ("corpus", "full")
HISTORY_COLUMNS = ("step", "epoch", "loss", "learning_rate", "grad_norm", "elapsed_s", "tokens_seen")


@dataclass
class PretrainConfig:
    """How long and how to pre-train: ``max_steps`` optimizer steps, whatever the clock says."""

    max_steps: int = 1000  # optimizer steps (the budget)
    batch_size: int = 32  # texts per optimizer step
    learning_rate: float = 5e-5  # 5e-5 continues a pretrained BERT; 5e-4..1e-3 for small ones from scratch
    warmup_ratio: float = 0.06  # share of the steps spent warming the learning rate up
    weight_decay: float = 0.01  # AdamW weight decay
    max_length: int = 64  # tokens per text incl. [CLS]/[SEP]; headlines need ~40
    mlm_probability: float = 0.15  # share of tokens selected for prediction (80% masked, 10% random, 10% kept)
    whole_word_masking: bool = False  # mask whole (jieba) words instead of single characters
    heldout_size: int = 500  # texts kept out of training to measure masked-token accuracy
    seed: int = 42  # seeds initialisation, data order, masks and the held-out split
    device: str = "auto"  # "auto", "cuda", "cpu" or "mps" (see nbutils.runtime.device)
    precision: str = "auto"  # "auto", "bf16", "fp16" or "fp32" (see nbutils.runtime.device)
    logging_steps: int = 10  # optimizer steps between loss log lines (and history.csv rows)
    headless: bool = True  # quiet progress lines instead of bars; figure only as PNG
    invariant_numerics: bool = True  # CPU: the same bits at any thread count (nbutils.runtime.invariant); off: stock kernels, one thread count held
    masked_only_head: bool = True  # run the vocabulary decoder on masked positions only
    # "corpus": only tokens that occur in the texts can be predicted, and training scores those alone
    # (MaskedPositionsBertForMaskedLM; ELECTRA's generator always scores all); "full": the stock head
    output_vocabulary: str = "corpus"
    dropout: float | None = None  # dropout while pre-training (None: the model's own); saved model keeps its own

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any):
        """The config of notebook 03's ``mlm_*`` (and, for ELECTRA, ``electra_*``) parameters and
        ``seed``, ``device``, ``precision``, ``headless``."""
        return config_from_params(cls, params, "mlm_", "electra_", **overrides)

    def __post_init__(self):
        if self.max_steps is None or int(self.max_steps) < 1:
            raise NbutilsError(f"max_steps must be at least 1, got {self.max_steps!r}",
                               fix="set mlm_max_steps to a positive step budget")
        self.max_steps = int(self.max_steps)
        if not 0 <= self.warmup_ratio < 1:
            raise NbutilsError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 < self.mlm_probability < 1:
            raise NbutilsError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.max_length < 3:
            raise NbutilsError(f"max_length must be at least 3 ([CLS] x [SEP]), got {self.max_length}")
        if self.heldout_size < 0:
            raise NbutilsError(f"heldout_size must be >= 0, got {self.heldout_size}")
        if self.output_vocabulary not in OUTPUT_VOCABULARIES:
            raise NbutilsError(f"output_vocabulary must be one of {', '.join(OUTPUT_VOCABULARIES)}, "
                               f"got {self.output_vocabulary!r}",
                               fix="set mlm_output_vocabulary to corpus (faster) or full (the stock head)")


@dataclass
class PretrainResult:
    """Where the adapted model went, and what the run measured."""

    model_dir: Path
    out_dir: Path
    metrics: dict[str, Any]
    history: Any = field(repr=False)  # pandas DataFrame, one row per logged step
    figure: Path | None = None


# --------------------------------------------------------------------------- the model
def _mlm_class():
    """The model class, imported here so that importing this module does not import torch."""
    from nbutils.pretraining.masked_positions import MaskedPositionsBertForMaskedLM

    return MaskedPositionsBertForMaskedLM


def load_mlm_model(model_dir: str | Path, *, masked_only_head: bool = True, attn_implementation: str = "sdpa",
                   dropout: float | None = None):
    """Load a BERT folder for MLM (from a BertForPreTraining checkpoint only the NSP head is left)."""
    overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    model = _mlm_class().from_pretrained(str(model_dir), attn_implementation=attn_implementation, **overrides)
    model.masked_only_head = masked_only_head
    return model


# --------------------------------------------------------------------------- the data
def _segment_words(texts: Sequence[str]) -> list[list[tuple[int, int]]]:
    """Character spans of jieba's words in each text (jieba: the common Chinese segmenter)."""
    try:
        import jieba
    except ImportError as err:
        raise NbutilsError(
            "whole-word masking for Chinese needs a word segmenter, and jieba is not installed",
            fix="pip install jieba, or set mlm_whole_word_masking to false (per-character masking)",
        ) from err
    import logging

    jieba.setLogLevel(logging.WARNING)
    spans = []
    for text in texts:
        spans.append([(start, end) for _, start, end in jieba.tokenize(text)])
    return spans


def _word_gapped_offsets(offsets, word_spans) -> list[list[int]]:
    """Shift each token's offsets by its word's index so that words, and only words, touch.

    The collator treats a token as the start of a new word when its start differs from the
    previous token's end; adding the word index opens a one-position gap at each boundary.
    Special tokens keep (0, 0); the collator never masks them.
    """
    starts = [s for s, _ in word_spans]
    out, word = [], 0
    for start, end in offsets:
        if start == end:
            out.append([0, 0])
            continue
        while word + 1 < len(starts) and starts[word + 1] <= start:
            word += 1
        out.append([start + word, end + word])
    return out


def tokenize_texts(texts: Sequence[str], tokenizer, *, max_length: int, whole_word_masking: bool = False) -> list[dict]:
    """Tokenize once, unpadded (the collator pads each batch to its own longest text)."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length,
                    return_special_tokens_mask=True, return_token_type_ids=False,
                    return_offsets_mapping=whole_word_masking)
    features = [{"input_ids": ids, "special_tokens_mask": special}
                for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)]
    if whole_word_masking:
        for feature, offsets, spans in zip(features, enc["offset_mapping"], _segment_words(texts), strict=True):
            feature["offset_mapping"] = _word_gapped_offsets(offsets, spans)
    return features


def make_collator(tokenizer, *, mlm_probability: float = 0.15, whole_word_masking: bool = False, seed: int | None = None):
    """The stock MLM collator; with whole-word masking it also pads the word offsets.

    ``tokenizer.pad`` pads input ids and masks but not offsets, so batches of different
    lengths would not stack; padding the offsets first is all the subclass adds.
    """
    from transformers import DataCollatorForLanguageModeling

    if not whole_word_masking:
        return DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)

    class _WholeWordCollator(DataCollatorForLanguageModeling):
        def torch_call(self, examples):
            width = max(len(e["input_ids"]) for e in examples)
            examples = [{**e, "offset_mapping": e["offset_mapping"] + [[0, 0]] * (width - len(e["input_ids"]))}
                        for e in examples]
            return super().torch_call(examples)

    import warnings

    with warnings.catch_warnings():
        # The collator turns 80/10/10 into 100% [MASK] for whole words and warns about it.
        warnings.simplefilter("ignore", UserWarning)
        return _WholeWordCollator(tokenizer, mlm_probability=mlm_probability, whole_word_mask=True, seed=seed)


def split_heldout(texts: Sequence[str], heldout_size: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) by a seeded shuffle; the held-out texts are never trained on."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(texts))
    heldout = [texts[i] for i in order[:heldout_size]]
    # by text, not by position: a headline that occurs twice must not be trained on through
    # its other copy, or the held-out accuracy would be optimistic
    held = set(heldout)
    train = [t for t in texts if t not in held]
    return train, heldout


# --------------------------------------------------------------------------- measuring
def masked_token_accuracy(model, features: list[dict], collator, *, batch_size: int = 128, device: str = "cpu") -> dict[str, float]:
    """Share of masked positions whose original token the model ranks first, and the MLM loss.

    ``collator`` should carry a fixed seed, so two calls (before and after training) score
    the very same masks. Works with either head (stock or masked-positions-only).
    """
    import torch

    if not features:
        return {"masked_token_accuracy": float("nan"), "mlm_loss": float("nan"), "masked_tokens": 0}
    was_training = model.training
    model.eval()
    model.to(device)
    correct = total = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = collator(features[start:start + batch_size])
            batch = {k: v.to(device) for k, v in batch.items()}
            labels = batch.pop("labels")
            selected = labels != -100
            out = model(**batch, labels=labels)
            logits = out.logits
            if logits.dim() == 3:  # stock head: every position was scored
                logits = logits[selected]
            n = int(selected.sum())
            correct += int((logits.argmax(-1) == labels[selected]).sum())
            loss_sum += float(out.loss) * n
            total += n
    model.train(was_training)
    return {"masked_token_accuracy": correct / max(total, 1), "mlm_loss": loss_sum / max(total, 1),
            "masked_tokens": total}


# --------------------------------------------------------------------------- the step
@quiet_weight_files()  # no "Loading weights" / "Writing model shards" bars around the training bar
def continue_pretraining(texts: Sequence[str], model_dir: str | Path, out_dir: str | Path,
                         config: PretrainConfig | None = None, *, figure_path: str | Path | None = None,
                         overwrite: bool = False) -> PretrainResult:
    """Continue MLM pre-training of the BERT in ``model_dir`` on ``texts``; write ``out_dir``.

    ``texts`` are the only text this function sees: pass the training split, never dev or
    test. ``config.heldout_size`` of them are set aside (seeded) to measure masked-token
    accuracy before and after. ``out_dir`` appears complete or not at all:
    ``model/`` (BertForMaskedLM + tokenizer), ``history.csv``, ``metrics.json``, ``loss.png``.
    ``figure_path`` also gets a copy of the loss curve (e.g. ``RunPaths.figure("pretrain", "loss")``).
    """
    config = config or PretrainConfig()
    texts, model_dir, out_dir = check_pretraining_inputs(texts, model_dir, out_dir, config, overwrite=overwrite)

    from transformers import set_seed

    from nbutils.core.io import atomic_dir, write_json
    from nbutils.runtime.device import choose_device
    from nbutils.training.assembly import assemble_trainer, prepare_for_training
    from nbutils.training.live import LiveCurves
    from nbutils.training.tensorboard_logs import log_dir

    set_seed(config.seed)
    choice = choose_device(config.device, config.precision, task="pretrain")
    tokenizer = masking_tokenizer(model_dir)
    model = load_mlm_model(model_dir, masked_only_head=config.masked_only_head,
                           attn_implementation=choice.attn_implementation, dropout=config.dropout)
    prepare_for_training(model, choice.device, invariant_numerics=config.invariant_numerics)
    # Fine-tuning later should see the model's own dropout, not the pre-training override.
    from transformers import AutoConfig

    own = AutoConfig.from_pretrained(str(model_dir))
    own_dropout = {k: getattr(own, k) for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")}

    train_texts, heldout_texts = split_heldout(texts, config.heldout_size, config.seed)
    tok_kwargs = {"max_length": config.max_length, "whole_word_masking": config.whole_word_masking}
    train_features = tokenize_texts(train_texts, tokenizer, **tok_kwargs)
    heldout_features = tokenize_texts(heldout_texts, tokenizer, **tok_kwargs)
    if config.output_vocabulary == "corpus":
        # every text passed (the held-out ones too: a held-out token is then never impossible)
        model.restrict_output_vocabulary(i for f in train_features + heldout_features for i in f["input_ids"])
    collator_kwargs = {"mlm_probability": config.mlm_probability, "whole_word_masking": config.whole_word_masking}

    def heldout_score():
        # A fresh collator with a fixed seed: before and after see identical masks.
        collator = make_collator(tokenizer, seed=config.seed + 1, **collator_kwargs)
        return masked_token_accuracy(model, heldout_features, collator, device=choice.device,
                                     batch_size=max(config.batch_size, 64))

    before = heldout_score()

    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        curves = LiveCurves(tmp / LOSS_FIGURE, headless=config.headless,
                            title=f"masked-LM pre-training ({model.config.num_hidden_layers} layers, "
                                  f"hidden {model.config.hidden_size})", metrics=())
        trainer = assemble_trainer(
            model, pretraining_arguments(tmp, config, choice), curves=curves,
            tensorboard_dir=log_dir(out_dir), tensorboard_task="mlm", headless=config.headless,
            govern_threads=config.invariant_numerics, train_dataset=train_features,
            processing_class=tokenizer,
            data_collator=make_collator(tokenizer, seed=config.seed, **collator_kwargs),
        )
        runtime = float(trainer.train().metrics["train_runtime"])
        after = heldout_score()
        _save_mlm_outputs(tmp, trainer, model, tokenizer, model_dir, own_dropout, before, after,
                          tensorboard_dir=log_dir(out_dir))
        history = history_frame(trainer.state.log_history)
        history.to_csv(tmp / HISTORY, index=False)
        metrics = _mlm_metrics(trainer, model, model_dir, history, config, choice, runtime, before, after,
                               texts=(len(train_texts), len(heldout_texts)))
        write_json(tmp / METRICS, metrics)
    return PretrainResult(model_dir=out_dir / MODEL, out_dir=out_dir, metrics=metrics,
                          history=history, figure=copy_loss_figure(out_dir, figure_path))


def _save_mlm_outputs(tmp: Path, trainer, model, tokenizer, model_dir, own_dropout: dict, before: dict,
                      after: dict, *, tensorboard_dir: Path) -> None:
    """The held-out scores as TensorBoard points and the pre-trained model folder."""
    from nbutils.training.tensorboard_logs import write_scalars

    steps = int(trainer.state.global_step)
    # held-out scores before (step 0) and after training, in the eval/ family beside mlm/loss
    for step, score in ((0, before), (steps, after)):
        write_scalars(tensorboard_dir, {"eval/mlm_loss": score["mlm_loss"],
                                        "eval/mlm_masked_token_accuracy": score["masked_token_accuracy"]}, step)

    model_out = tmp / MODEL
    model.save_pretrained(str(model_out), safe_serialization=True)
    # Saved weights are the stock BertForMaskedLM's; name that class so any tool reading
    # config.json (AutoModelForMaskedLM, pipelines) needs nothing from nbutils.
    model.config.architectures = ["BertForMaskedLM"]
    for key, value in own_dropout.items():
        setattr(model.config, key, value)
    model.config.save_pretrained(str(model_out))
    tokenizer.save_pretrained(str(model_out))
    start = weights_origin(model_dir)
    write_weights_origin(model_out, pretrained=True, how=(
        f"masked-LM pre-trained {steps} steps here (masked-token accuracy {before['masked_token_accuracy']:.1%} "
        f"-> {after['masked_token_accuracy']:.1%}) from {model_dir}"
        + (" (random weights before)" if start["pretrained"] is False else "")))
    shutil.rmtree(tmp / "trainer", ignore_errors=True)


def _mlm_metrics(trainer, model, model_dir, history, config, choice, runtime, before, after, *, texts) -> dict:
    from nbutils.runtime.governor_callback import thread_schedule

    train_texts, heldout_texts = texts
    metrics = {
        "masked_token_accuracy": after["masked_token_accuracy"],
        "masked_token_accuracy_before": before["masked_token_accuracy"],
        "heldout_mlm_loss": after["mlm_loss"],
        "heldout_mlm_loss_before": before["mlm_loss"],
        "heldout_texts": heldout_texts,
        "heldout_masked_tokens": after["masked_tokens"],
        "train_texts": train_texts,
        **training_numbers(trainer, history, config, runtime),
        "model": {"source": str(model_dir), "hidden_size": model.config.hidden_size,
                  "num_layers": model.config.num_hidden_layers, "num_heads": model.config.num_attention_heads,
                  "intermediate_size": model.config.intermediate_size, "vocab_size": model.config.vocab_size,
                  "trained_output_tokens": (model.config.vocab_size if model.output_token_ids is None
                                            else len(model.output_token_ids)),
                  "parameters": sum(p.numel() for p in model.parameters())},
        **run_settings(config, choice),
        "threads": thread_schedule(trainer),
    }
    return metrics


# --- what masked-LM and ELECTRA pre-training (nbutils.pretraining.electra) share ----------------------------


def check_pretraining_inputs(texts: Sequence[str], model_dir: str | Path, out_dir: str | Path,
                             config: PretrainConfig, *, overwrite: bool) -> tuple[list[str], Path, Path]:
    """The non-empty texts, and the two folders as paths; a clear error for too few texts, a
    model folder without config.json, or an existing ``out_dir`` without ``overwrite``."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) <= config.heldout_size:
        raise NbutilsError(
            f"pre-training got {len(texts)} non-empty texts, not more than heldout_size={config.heldout_size}",
            fix="pass the training split's texts, or lower mlm_heldout_size",
        )
    if not (model_dir / "config.json").is_file():
        raise NbutilsError(f"{model_dir} is not a model folder (no config.json)",
                           fix="run 01_convert_checkpoint first, or point model_dir at a Hugging Face BERT folder")
    if out_dir.exists() and not overwrite:
        raise NbutilsError(f"{out_dir} already exists; refusing to overwrite it",
                           fix="use a new run directory, or pass overwrite=True")
    return texts, model_dir, out_dir


def masking_tokenizer(model_dir: Path):
    """The model folder's tokenizer, which must have a [MASK] token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.mask_token is None:
        raise NbutilsError(f"the tokenizer in {model_dir} has no [MASK] token", fix="use a BERT tokenizer folder")
    return tokenizer


def pretraining_arguments(tmp: Path, config: PretrainConfig, choice):
    """Trainer settings of a pre-training run: ``config.max_steps`` steps, linear decay after
    warm-up, no evaluation or checkpoints (the caller scores the held-out texts itself)."""
    from transformers import TrainingArguments

    from nbutils.training.live import progress_kwargs

    return TrainingArguments(
        output_dir=str(tmp / "trainer"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=config.warmup_ratio,  # a float below 1: a share of max_steps (transformers 5)
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        # Similar lengths in a batch: less padding, same texts.
        train_sampling_strategy="group_by_length",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        **choice.training_args(),
        **progress_kwargs(config.headless),
    )


def training_numbers(trainer, history, config: PretrainConfig, runtime: float) -> dict[str, Any]:
    """metrics.json's budget and throughput entries of a finished pre-training."""
    steps = int(trainer.state.global_step)
    tokens_seen = int(trainer.state.num_input_tokens_seen or 0)
    return {
        "steps": steps,
        "max_steps": config.max_steps,
        "epochs": float(trainer.state.epoch or 0.0),
        "train_runtime_s": runtime,
        "train_loss_last": float(history["loss"].dropna().iloc[-1]) if history["loss"].notna().any() else None,
        "tokens_seen": tokens_seen,
        "tokens_per_s": tokens_seen / runtime if runtime > 0 else None,
        "texts_per_s": steps * config.batch_size / runtime if runtime > 0 else None,
    }


def run_settings(config: PretrainConfig, choice) -> dict[str, Any]:
    """metrics.json's record of how the run was set up: config, device, CPU threads at the end."""
    import torch

    return {"config": asdict(config), "device": choice.as_dict(), "torch_threads": torch.get_num_threads()}


def copy_loss_figure(out_dir: Path, figure_path: str | Path | None) -> Path | None:
    """A copy of ``out_dir``'s loss curve at ``figure_path`` (e.g. where the report finds it)."""
    if figure_path is None:
        return None
    from nbutils.core.io import atomic_file

    figure = Path(figure_path)
    with atomic_file(figure) as f:
        f.write_bytes((out_dir / LOSS_FIGURE).read_bytes())
    return figure


def history_frame(log_history: list[dict]):
    """history.csv: one row per logged training step (the run summary row left out)."""
    import pandas as pd

    # With token counting on, the Trainer adds its running clock and token count to each entry.
    renames = {"train_runtime": "elapsed_s", "num_input_tokens_seen": "tokens_seen"}
    rows = [{renames.get(k, k): v for k, v in entry.items() if k != "train_tokens_per_second"}
            for entry in log_history if "loss" in entry and "train_loss" not in entry]
    frame = pd.DataFrame(rows)
    for col in HISTORY_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype="float64")
    extra = [c for c in frame.columns if c not in HISTORY_COLUMNS]
    return frame[list(HISTORY_COLUMNS) + extra]


# --------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """``nbutils pretrain DATA MODEL_DIR OUT_DIR``: MLM on the data's training split only."""
    from nbutils.core.config_flags import add_config_flags, config_from_args

    parser = argparse.ArgumentParser(prog="nbutils pretrain", description=main.__doc__)
    parser.add_argument("data", help="dataset folder or file (the train split is used, never dev/test)")
    parser.add_argument("model_dir", help="BERT model folder (e.g. runs/<run>/convert/model)")
    parser.add_argument("out_dir", help="output folder (model/, history.csv, metrics.json, loss.png)")
    parser.add_argument("--format", default="auto", help="dataset format (see nbutils.data.dataset; default: auto)")
    parser.add_argument("--text-column", default="text", help="table formats: the text column (default: text)")
    parser.add_argument("--label-column", default="label", help="table formats: the label column (default: label)")
    parser.add_argument("--on-bad-rows", choices=("raise", "skip"), default="raise",
                        help="raise: stop at the first bad row (file:line, reason); skip: leave bad rows out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT_DIR")
    names = add_config_flags(parser, PretrainConfig, skip=("headless",))
    args = parser.parse_args(argv)

    from nbutils.data.dataset import load_dataset

    dataset = load_dataset(args.data, format=args.format, on_bad_rows=args.on_bad_rows,
                           text_column=args.text_column, label_column=args.label_column)
    config = config_from_args(PretrainConfig, args, names)
    result = continue_pretraining(dataset.texts("train"), args.model_dir, args.out_dir, config,
                                  overwrite=args.overwrite)
    m = result.metrics
    print(f"masked-token accuracy on {m['heldout_texts']} held-out train texts: "
          f"{m['masked_token_accuracy_before']:.3f} -> {m['masked_token_accuracy']:.3f} "
          f"after {m['steps']} steps ({m['train_runtime_s']:.0f} s, {m['tokens_per_s']:.0f} tokens/s)")
    print(f"adapted model: {result.model_dir}")
    return 0


__all__ = ["PretrainConfig", "PretrainResult", "continue_pretraining", "load_mlm_model",
           "masked_token_accuracy", "tokenize_texts", "make_collator", "split_heldout", "main"]
