"""Fine-tune a BERT-family model folder (or hub id) for text classification with HF Trainer.

What the library does, we let it do: Trainer runs the loop (AdamW, warmup + linear decay,
evaluation, checkpointing, early stopping, best-model reload, DDP under ``torchrun``),
``DataCollatorWithPadding`` pads each batch only to its longest text, AdamW runs as one
fused kernel, and matrix products run in bf16 where the hardware does that natively (CUDA, and
CPUs with AVX512-BF16/AMX; ``nbutils.runtime.device``). Length-grouped batches (``group_by_length``)
are opt-in: they cut padding further but, on titles whose length tracks their class, make
batches class-skewed. What we add:

- texts of any length cut on token ids (``nbutils.text.tokenization``: ``head``, ``tail`` or
  ``head+tail``, Sun et al. 2019), tokenized per batch as training reads them (the texts stay on
  disk in the dataset's ``TextStore``), so memory and the wait for the first step do not grow
  with the corpus;
- multi-label data (``Dataset.multi_label``): one sigmoid output per label trained with binary
  cross-entropy (``problem_type="multi_label_classification"``, as transformers defines it),
  decision thresholds chosen on dev (one global, one per label) and saved with the model;
- metrics on the full gathered predictions, files in the run-directory contract
  (model/, history.csv, metrics.json, test_predictions.csv, curves PNG);
- resume: an interrupted run restarts from its last checkpoint in the same ``out_dir``, and only
  with the same model, data, settings, trainable parameters and optimizer groups
  (``nbutils.training.resume``);
- errors a user can fix (missing files, vocabulary mismatch, out of memory) say how.

The command line and the torchrun launcher (``nbutils train``, multi-GPU) are in ``nbutils.training.launch``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils import data as torch_data
from transformers import Trainer

from nbutils.checkpoints.weights import quiet_weight_files
from nbutils.core.config_flags import config_from_params
from nbutils.core.errors import NbutilsError
from nbutils.core.run_contract import CURVES_FIGURE, HISTORY, METRICS, MODEL, PREDICTIONS
from nbutils.inference.predict import CALIBRATION_FILE
from nbutils.text.tokenization import TRUNCATIONS, EncodedTexts, TextsToEncode, Truncator
from nbutils.training.metrics import THRESHOLD_RULES

CONFIG_FILE = "finetune_config.json"  # saved next to the model so prediction cuts texts the same way
CHECKPOINTS = "checkpoints"

@dataclass
class FinetuneConfig:
    """Everything that decides a fine-tuning run. Defaults suit titles on a GPU."""

    max_length: int = 128  # tokens per text, including [CLS] and [SEP]
    truncation: str = "head"  # head | tail | head+tail (which tokens of a long text to keep)
    head_tokens: int = 0  # head+tail: tokens kept from the start; 0 = Sun et al.'s 128 of 510, scaled
    epochs: float = 3.0  # passes over the training split (fractions allowed)
    batch_size: int = 32  # training examples per step, per device
    eval_batch_size: int = 128  # examples per batch when evaluating and predicting
    learning_rate: float = 5e-5  # AdamW peak learning rate (after warmup, then linear decay)
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and LayerNorm weights)
    warmup_ratio: float = 0.1  # share of the steps spent warming the learning rate up, in [0, 1)
    eval_strategy: str = "epoch"  # evaluate (and checkpoint) every "epoch" or every eval_steps "steps"
    eval_steps: int = 0  # > 0 evaluates (and checkpoints) every N optimizer steps
    early_stopping_patience: int = 2  # evaluations without dev macro-F1 gain; 0 = off
    gradient_accumulation_steps: int = 1  # batches summed per optimizer step (effective batch = batch_size x this)
    seed: int = 42  # seeds the head initialisation, data order and subsampling
    device: str = "auto"  # auto | cuda | cpu | mps
    precision: str = "auto"  # auto | bf16 | fp16 | fp32 (auto: bf16 on CUDA and on CPUs with native bf16)
    # Length buckets cut padding but make batches class-skewed where length goes with class; on
    # THUCNews titles (256x4 BERT, 150 steps, 3 seeds; benchmarks/bench_train.py) they took the
    # speed-up over the older repos' way from ~1.75x to 2.03x but dev accuracy from 0.576 to 0.474,
    # so they are opt-in.
    group_by_length: bool = False  # batches of similar length: less padding, but class-skewed batches on titles (above)
    max_steps: int = -1  # > 0 overrides epochs
    max_train_samples: int = 0  # 0 = all
    max_eval_samples: int = 0  # dev examples used (0 = all)
    max_test_samples: int = 0  # test examples scored (0 = all)
    logging_steps: int = 0  # 0 = about 50 loss points per run
    headless: bool = True  # quiet progress lines instead of bars, no inline figure
    save_total_limit: int = 2  # checkpoints kept for resume (the best one is always kept)
    keep_checkpoints: bool = False  # delete checkpoints/ after a successful run
    dataloader_num_workers: int = 0  # batch-loading worker processes (0: in the training process)
    threshold_rule: str = "per_label"  # multi-label data: per_label | global | fixed (0.5): which dev-chosen thresholds predict
    extra_training_args: dict = field(default_factory=dict)  # any other TrainingArguments
    invariant_numerics: bool = True  # CPU: the same bits at any thread count (nbutils.runtime.invariant); off: stock kernels, one thread count held

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **overrides: Any) -> FinetuneConfig:
        """The config of notebook 04's ``finetune_*`` parameters (and ``seed``, ``device``,
        ``precision``, ``headless``); ``finetune_label_smoothing`` > 0 goes to Trainer as
        ``label_smoothing_factor``. ``overrides`` for values the notebook derives."""
        smoothing = params.get("finetune_label_smoothing") or 0
        if smoothing:
            overrides = {"extra_training_args": {"label_smoothing_factor": smoothing}, **overrides}
        return config_from_params(cls, params, "finetune_", **overrides)

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise NbutilsError(
                f"unknown truncation {self.truncation!r}", fix=f"use one of {', '.join(TRUNCATIONS)}"
            )
        if self.max_length < 3:
            raise NbutilsError(f"max_length={self.max_length} is too small", fix="use at least 8")
        if not 0 <= self.warmup_ratio < 1:
            # transformers 5 reads warmup_steps >= 1 as a step count, not a ratio
            raise NbutilsError(f"warmup_ratio={self.warmup_ratio} is not a share of the steps",
                               fix="use a value in [0, 1), e.g. 0.1")
        if self.threshold_rule not in THRESHOLD_RULES:
            raise NbutilsError(f"unknown threshold_rule {self.threshold_rule!r}",
                               fix=f"use one of {', '.join(THRESHOLD_RULES)} (finetune_threshold_rule)")
        if self.eval_strategy not in ("epoch", "steps"):
            raise NbutilsError(f"unknown eval_strategy {self.eval_strategy!r}", fix="use 'epoch' or 'steps'")


@dataclass
class FinetuneResult:
    metrics: dict
    history: Any  # pandas DataFrame, one row per logged step
    out_dir: Path
    model_dir: Path  # the fine-tuned model folder (out_dir/model)
    train_runtime_s: float
    train_samples_per_second: float
    peak_memory_mb: float
    trainable_params: int
    total_params: int


def load_model(model_dir: str | Path, label_names: Sequence[str], choice=None, *, multi_label: bool = False):
    """The classifier with a fresh head sized to ``label_names`` and its tokenizer; with
    ``multi_label`` one independent sigmoid output per label, trained with binary cross-entropy."""
    from transformers import AutoModelForSequenceClassification

    from nbutils.checkpoints.model_folder import check_model_dir, is_local_path
    from nbutils.checkpoints.weights import load_pretrained
    from nbutils.text.tokenization import check_vocab_matches, load_tokenizer

    if is_local_path(model_dir):
        check_model_dir(model_dir)  # missing files, vocabulary that does not fit the weights
    id2label = dict(enumerate(label_names))
    try:
        model = load_pretrained(
            AutoModelForSequenceClassification, model_dir,
            num_labels=len(label_names),
            id2label=id2label,
            label2id={name: i for i, name in id2label.items()},
            attn_implementation=choice.attn_implementation if choice else "sdpa",
            ignore_mismatched_sizes=True,  # a head fine-tuned for other classes is replaced
            **({"problem_type": "multi_label_classification"} if multi_label else {}),
        )
    except OSError as err:
        raise NbutilsError(
            f"cannot load a model from {model_dir}: {err}",
            fix="pass a local Hugging Face model folder (no internet here for hub ids)",
        ) from err
    tokenizer = load_tokenizer(model_dir)
    check_vocab_matches(model, tokenizer, model_dir)
    return model, tokenizer


def default_param_groups(model, weight_decay: float) -> list[dict]:
    """AdamW groups as Trainer makes them: no weight decay on biases and LayerNorm weights."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]


# ----------------------------------------------------------------------------- training


class LengthBucketSampler(torch_data.Sampler):
    """Batches of similar length (little padding) in random order.

    Like Trainer's ``LengthGroupedSampler`` it sorts random mega-batches of ``50 x batch``
    examples by length, but then shuffles the batches: Trainer's sampler walks each mega-batch
    from its longest to its shortest batch, and where length goes with class (THUCNews sports
    titles average 24.5 tokens, finance 17.6) fifty consecutive steps see a drifting class mix,
    which stalls learning. Randomness comes from torch's global generator, which Trainer seeds
    and restores on resume.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, mega_batches: int = 50):
        self.lengths, self.batch_size, self.mega = list(lengths), batch_size, mega_batches

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        import torch

        order = torch.randperm(len(self.lengths)).tolist()
        size = self.batch_size * self.mega
        batches = []
        for start in range(0, len(order), size):
            mega = sorted(order[start:start + size], key=self.lengths.__getitem__)
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        for b in torch.randperm(len(batches)).tolist():
            yield from batches[b]


class LengthBucketTrainer(Trainer):
    """Trainer with length buckets served in random order (see LengthBucketSampler); ``group_by_length`` switches it on."""

    group_by_length = False

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        if self.group_by_length and isinstance(dataset, EncodedTexts):
            return LengthBucketSampler([len(ids) for ids in dataset.input_ids], batch)
        if self.group_by_length and isinstance(dataset, TextsToEncode):
            return LengthBucketSampler(dataset.token_lengths(), batch)
        return super()._get_train_sampler(train_dataset)


def _split(dataset, name: str):
    """(texts, labels) of one split; texts stay on disk where the dataset keeps them there.
    Multi-label data gives each text's 0/1 label row as floats (binary cross-entropy targets)."""
    if getattr(dataset, "multi_label", False):
        texts = dataset.text_column(name)
        if not len(texts):
            raise NbutilsError(f"the {name} split is empty", fix=f"the dataset needs {name} examples")
        return texts, dataset.label_matrix(name).astype(float).tolist()
    if hasattr(dataset, "text_column"):
        texts, labels = dataset.text_column(name), [int(x) for x in dataset.label_array(name)]
    else:
        texts, labels = list(dataset.texts(name)), [int(x) for x in dataset.labels(name)]
    if not len(texts):
        raise NbutilsError(f"the {name} split is empty", fix=f"the dataset needs {name} examples")
    n_labels = len(dataset.label_names)
    bad = next((i for i, y in enumerate(labels) if not 0 <= y < n_labels), None)
    if bad is not None:
        raise NbutilsError(
            f"{name} example {bad} has label id {labels[bad]}, but the dataset has {n_labels} classes "
            f"({list(dataset.label_names)})",
            fix="check the class list (class.txt / label column) against the data",
        )
    return texts, labels


def _schedule(n_train: int, config: FinetuneConfig, world_size: int = 1) -> dict:
    """Optimizer steps per epoch and in total, and the logging / evaluation intervals.

    Under DDP each of ``world_size`` processes takes its own batch per step, so one epoch is
    ``world_size`` times fewer steps than on one process.
    """
    per_step = config.batch_size * config.gradient_accumulation_steps * max(1, world_size)
    steps_per_epoch = math.ceil(n_train / per_step)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(steps_per_epoch * config.epochs)
    return {
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "logging_steps": config.logging_steps or max(1, total_steps // 50),
        "eval_steps": config.eval_steps or max(1, steps_per_epoch),
    }


@quiet_weight_files()  # one training bar, not one "Writing model shards" bar per checkpoint
def finetune(
    dataset,
    model_dir: str | Path,
    out_dir: str | Path,
    config: FinetuneConfig | None = None,
    *,
    prepare_model: Callable | None = None,
    param_groups: Callable | None = None,
    extra_callbacks: Sequence = (),
    save_model: bool = True,
    curves_png: str | Path | None = None,
    title: str = "",
    overwrite: bool = False,
    teacher=None,
    length_advice: int | None = None,
    progress_lines: int = 10,
    tensorboard_dir: str | Path | None = None,
) -> FinetuneResult:
    """Fine-tune ``model_dir`` on ``dataset`` (train/dev/test splits) and write ``out_dir``.

    ``prepare_model(model)`` runs after loading (e.g. to freeze layers); ``param_groups(model)``
    returns optimizer parameter groups (e.g. layer-wise learning rates) instead of the default
    AdamW groups. If ``out_dir/checkpoints`` holds a checkpoint of an interrupted run, training
    resumes from it, unless the model, data or settings changed (an error says what differs).
    A finished ``out_dir`` (metrics.json or model/ present) is never overwritten unless
    ``overwrite=True``. With ``overwrite=True`` a finished run is replaced (its checkpoints and
    metrics.json go when the new training starts, the other files are replaced when it ends), an
    interrupted one with the same fingerprint still resumes (so a notebook re-run after Kernel >
    Interrupt continues), and checkpoints of a different run are discarded. ``teacher`` (e.g.
    ``nbutils.training.distill.SvmTeacher``) adds soft targets for the train split and supplies the loss.
    ``length_advice``: exploration's recommended max_length, quoted when max_length cuts many
    train texts (``nbutils.training.length_fit``).
    ``progress_lines``: headless progress lines (0: none, for a caller that prints its own line
    per training, as the freezing comparison does). ``tensorboard_dir``: its TensorBoard run
    (default ``training.tensorboard_logs.log_dir(out_dir)``: ``<run>/tensorboard/finetune``).
    """
    from transformers import set_seed

    from nbutils.runtime.device import choose_device

    config = config or FinetuneConfig()
    out_dir = Path(out_dir)
    finished = _check_out_dir(out_dir, save_model=save_model, overwrite=overwrite)
    if config.headless:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # weight loading/saving bars would clutter the log
    choice = choose_device(config.device, config.precision)
    set_seed(config.seed)  # the classifier head's initialisation depends on it
    label_names = [str(n) for n in dataset.label_names]
    multi_label = bool(getattr(dataset, "multi_label", False))
    if multi_label:
        teacher = _check_multi_label_settings(config, teacher)
    model, tokenizer, sizes = _load_for_training(model_dir, label_names, choice, config, prepare_model,
                                                 multi_label=multi_label)
    truncator = Truncator(tokenizer, config.max_length, config.truncation, config.head_tokens)
    dataset, splits, encoded = _encode_splits(dataset, truncator, config, teacher, len(label_names))
    length_fit = _length_fit(splits, tokenizer, model, config, length_advice)
    run = _assemble(model, tokenizer, truncator, encoded, config, choice, out_dir, label_names,
                    param_groups=param_groups, extra_callbacks=extra_callbacks,
                    curves_png=curves_png, title=title, teacher=teacher, progress_lines=progress_lines,
                    multi_label=multi_label, tensorboard_dir=tensorboard_dir)
    fingerprint = _fingerprint(run, model_dir, dataset, config, encoded, choice, teacher)
    resume = _resume_or_start(run, out_dir, fingerprint, finished=finished, overwrite=overwrite)
    _train(run.trainer, resume, choice, config)
    outputs = _evaluate(run, splits, encoded, label_names, choice,
                        threshold_rule=config.threshold_rule if multi_label else None)
    metrics = {**_metrics(run, outputs, sizes, resume, choice, model_dir, config, teacher),
               "length_fit": length_fit, "data": _data_record(dataset, splits)}
    if run.trainer.is_world_process_zero():
        _write_outputs(run, out_dir, outputs, metrics, tokenizer, truncator, config,
                       save_model=save_model, overwrite=overwrite)
    runtime = metrics["train"]["runtime_s"]
    return FinetuneResult(
        metrics=metrics, history=outputs["history"], out_dir=out_dir, model_dir=out_dir / MODEL,
        train_runtime_s=runtime, train_samples_per_second=run.clock.samples / runtime,
        peak_memory_mb=metrics["train"]["peak_memory_mb"], trainable_params=sizes["trainable"],
        total_params=sizes["total"],
    )


@dataclass
class _Assembled:
    """One fine-tuning's Trainer and what was built with it."""

    trainer: Any
    args: Any
    clock: Any
    optimizer: Any  # None: Trainer's default AdamW groups
    tensorboard_dir: Path | None = None  # this training's TensorBoard run


def _check_out_dir(out_dir: Path, *, save_model: bool, overwrite: bool) -> bool:
    """Refuse to overwrite a finished run unless asked; True when ``out_dir`` holds one."""
    finished = (out_dir / METRICS).exists()
    if finished and not overwrite:
        raise NbutilsError(
            f"{out_dir} already holds a finished fine-tuning run (metrics.json)",
            fix="choose a new out_dir (a new run dir) or pass overwrite=True",
        )
    if save_model and (out_dir / MODEL).exists() and not overwrite:
        # Checked now, not when the model is saved: that would fail only after all the training.
        raise NbutilsError(
            f"{out_dir / 'model'} already exists",
            fix="choose a new out_dir (a new run dir), delete that folder, or pass overwrite=True",
        )
    return finished


def _load_for_training(model_dir, label_names, choice, config, prepare_model, *, multi_label: bool = False):
    """The model (numerics prepared, ``prepare_model`` applied), its tokenizer, and parameter counts."""
    from nbutils.checkpoints.weights import random_weights_warning
    from nbutils.training.assembly import prepare_for_training

    model, tokenizer = load_model(model_dir, label_names, choice, multi_label=multi_label)
    prepare_for_training(model, choice.device, invariant_numerics=config.invariant_numerics)
    warning = random_weights_warning(model_dir)
    if warning and int(os.environ.get("RANK", "0")) == 0:
        print(f"\n{'!' * 100}\n{warning}\n{'!' * 100}\n", flush=True)
    if prepare_model is not None:
        prepare_model(model)
    sizes = {"total": sum(p.numel() for p in model.parameters()),
             "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    if sizes["trainable"] == 0:
        raise NbutilsError("prepare_model froze every parameter; nothing would train")
    return model, tokenizer, sizes


def _encode_splits(dataset, truncator, config, teacher, num_labels: int):
    """The (subsampled) dataset, its splits as (texts, labels), and each split ready to encode."""
    limits = {"train": config.max_train_samples, "dev": config.max_eval_samples,
              "test": config.max_test_samples}
    if any(limits.values()):  # stratified, the same rows for the same seed
        dataset = dataset.subsample({k: n or None for k, n in limits.items()}, seed=config.seed)
    splits = {name: _split(dataset, name) for name in ("train", "dev", "test")}
    # Tokenized per batch by the collator: nothing waits for the whole corpus to be tokenized,
    # and memory holds one batch of ids (benchmarks/bench_scale.py measures both).
    encoded = {name: TextsToEncode(texts, labels, truncator) for name, (texts, labels) in splits.items()}
    if teacher is not None:  # fitted on the train split only; dev/test keep plain labels
        targets = teacher.targets(*splits["train"], num_labels)
        encoded["train"] = TextsToEncode(*splits["train"], truncator, targets=targets)
    return dataset, splits, encoded


def _length_fit(splits, tokenizer, model, config, length_advice) -> dict:
    """How many train texts max_length cuts: one line now, metrics.json's length_fit, the report."""
    from nbutils.training.length_fit import measure_length_fit

    length_fit = measure_length_fit(splits["train"][0], tokenizer, config.max_length, seed=config.seed,
                                    positions=getattr(model.config, "max_position_embeddings", None),
                                    recommended=length_advice)
    if int(os.environ.get("RANK", "0")) == 0:
        print(length_fit["warning"] or f"max_length {config.max_length} cuts "
              f"{length_fit['truncated_share']:.1%} of the train texts", flush=True)
    return length_fit


def _data_record(dataset, splits) -> dict:
    """What the model card names as its data (sizes after any subsample: what was trained and scored)."""
    return {"source": str(getattr(dataset, "source", "")), "format": getattr(dataset, "format", None),
            "sizes": {name: len(split[1]) for name, split in splits.items()}}


def _training_arguments(config: FinetuneConfig, choice, ckpt_dir: Path, n_train: int):
    from transformers import TrainingArguments

    from nbutils.training.live import progress_kwargs

    world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it
    plan = _schedule(n_train, config, world_size)
    by_steps = config.eval_strategy == "steps" or config.eval_steps > 0
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        eval_strategy="steps" if by_steps else "epoch",
        save_strategy="steps" if by_steps else "epoch",
        eval_steps=plan["eval_steps"] if by_steps else None,
        save_steps=plan["eval_steps"] if by_steps else None,
        logging_steps=plan["logging_steps"],
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        save_total_limit=config.save_total_limit,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # transformers 5: a float < 1 is a ratio
        lr_scheduler_type="linear",
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        seed=config.seed,
        data_seed=config.seed,
        train_sampling_strategy="random",  # length grouping: LengthBucketTrainer's sampler
        dataloader_num_workers=config.dataloader_num_workers,
        ddp_backend="gloo" if choice.device == "cpu" and world_size > 1 else None,
        ddp_find_unused_parameters=False,  # every parameter takes part in each forward pass
        report_to="none",
        **choice.training_args(),
        **progress_kwargs(config.headless),
        **{"remove_unused_columns": False,  # the collator needs each example's "text"
           **config.extra_training_args},
    )


def _assemble(model, tokenizer, truncator, encoded, config, choice, out_dir: Path, label_names, *,
              param_groups, extra_callbacks, curves_png, title, teacher, progress_lines=10,
              multi_label=False, tensorboard_dir=None) -> _Assembled:
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback

    from nbutils.text.tokenization import TokenizingCollator
    from nbutils.training.assembly import assemble_trainer
    from nbutils.training.live import LiveCurves
    from nbutils.training.measurement import TrainingClock
    from nbutils.training.tensorboard_logs import log_dir

    tensorboard_dir = Path(tensorboard_dir) if tensorboard_dir else log_dir(out_dir)
    args = _training_arguments(config, choice, out_dir / CHECKPOINTS, len(encoded["train"]))
    clock = TrainingClock()
    callbacks = [clock, *extra_callbacks]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping_patience))
    optimizer = None
    if param_groups is not None:
        optimizer = torch.optim.AdamW(param_groups(model), lr=config.learning_rate,
                                      weight_decay=config.weight_decay, fused=choice.fused_adamw or None)
    trainer = assemble_trainer(
        model, args, trainer_class=LengthBucketTrainer, headless=config.headless,
        govern_threads=config.invariant_numerics, progress_lines=progress_lines,
        curves=LiveCurves(curves_png or out_dir / CURVES_FIGURE, headless=config.headless, title=title),
        # one TensorBoard run: <run>/tensorboard/finetune (training.tensorboard_logs)
        tensorboard_dir=tensorboard_dir, tensorboard_task="finetune",
        tensorboard_text={"run": title} if title else None,
        callbacks=callbacks,
        train_dataset=encoded["train"],
        eval_dataset=encoded["dev"],
        processing_class=tokenizer,
        data_collator=TokenizingCollator(truncator, DataCollatorWithPadding(
            tokenizer, pad_to_multiple_of=8 if choice.device == "cuda" else None)),
        compute_metrics=_dev_scores(label_names, multi_label),
        # Trainer builds the warmup + linear decay schedule around a given optimizer
        optimizers=(optimizer, None),
        compute_loss_func=teacher.loss if teacher is not None else None,
    )
    # Sequence classifiers accept **kwargs but average their loss themselves; if Trainer thinks
    # they sum per token, it skips the division by gradient_accumulation_steps and multiplies the
    # loss by the number of DDP processes (gradients N times too large). Tell it the truth.
    trainer.model_accepts_loss_kwargs = False
    trainer.group_by_length = config.group_by_length
    return _Assembled(trainer=trainer, args=args, clock=clock, optimizer=optimizer,
                      tensorboard_dir=tensorboard_dir)


def _dev_scores(label_names, multi_label: bool = False):
    """Trainer's ``compute_metrics``: the dev scores early stopping and the best checkpoint use."""
    def compute_metrics(eval_pred):
        from nbutils.training.metrics import classification_metrics

        if multi_label:  # during training: every label at 0.5; the thresholds are chosen at the end
            return _multi_label_eval(eval_pred, label_names)
        m = classification_metrics(eval_pred.label_ids, eval_pred.predictions.argmax(-1), label_names)
        return {k: m[k] for k in ("accuracy", "macro_f1", "weighted_f1")}

    return compute_metrics


def _fingerprint(run: _Assembled, model_dir, dataset, config, encoded, choice, teacher) -> dict:
    from nbutils.training.resume import run_fingerprint, training_setup

    setup = training_setup(run.trainer.model, run.optimizer)
    if teacher is not None:
        setup["teacher"] = teacher.settings()  # not its timings: a resume must match
    return run_fingerprint(model_dir, dataset, config, {k: len(v) for k, v in encoded.items()},
                           setup, choice)


def _resume_or_start(run: _Assembled, out_dir: Path, fingerprint: dict, *, finished: bool,
                     overwrite: bool) -> str | None:
    """The checkpoint to resume from (None: start over), after clearing what ``overwrite`` replaces."""
    from nbutils.core.io import write_json
    from nbutils.training.resume import FINGERPRINT, check_resume, last_checkpoint, resume_problem

    trainer, ckpt_dir = run.trainer, out_dir / CHECKPOINTS
    # Rank 0 first (the others wait at a barrier): it clears or checks checkpoints/ and writes the
    # fingerprint before any rank decides whether to resume.
    with run.args.main_process_first(local=False, desc="checkpoint check"):
        if overwrite and trainer.is_world_process_zero():
            if finished:
                # A finished run's checkpoints would otherwise be "resumed" into 0 more steps, its
                # metrics.json would mark a later interrupted replacement as finished, and its
                # TensorBoard events would mix with this run's.
                print(f"replacing the finished run in {out_dir} (overwrite=True)")
                shutil.rmtree(ckpt_dir, ignore_errors=True)
                shutil.rmtree(run.tensorboard_dir, ignore_errors=True)
                (out_dir / METRICS).unlink()
            elif last_checkpoint(ckpt_dir):
                problem = resume_problem(ckpt_dir, fingerprint)
                if problem:
                    print(f"starting over (overwrite=True): {problem}")
                    shutil.rmtree(ckpt_dir, ignore_errors=True)
                    shutil.rmtree(run.tensorboard_dir, ignore_errors=True)
        resume = last_checkpoint(ckpt_dir)
        if resume:
            check_resume(ckpt_dir, fingerprint)
        elif trainer.is_world_process_zero():
            write_json(ckpt_dir / FINGERPRINT, fingerprint)
    if resume and trainer.is_world_process_zero():
        print(f"resuming from {resume}")
    return resume


def _train(trainer, resume, choice, config) -> None:
    import torch

    if choice.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError as err:
        raise NbutilsError(
            f"out of memory on {choice.name} with batch_size={config.batch_size}, max_length={config.max_length}",
            fix="halve batch_size (and double gradient_accumulation_steps to keep the effective batch), "
            "or lower max_length",
        ) from err


def _evaluate(run: _Assembled, splits, encoded, label_names, choice, threshold_rule: str | None = None) -> dict:
    """Dev and test predictions and metrics of the best checkpoint, the history, peak memory;
    with ``threshold_rule`` (multi-label data) the thresholds chosen on dev, and metrics under it."""
    from nbutils.training.live import history_frame
    from nbutils.training.measurement import process_peak_memory_mb
    from nbutils.training.metrics import classification_metrics

    # Trainer.predict gathers every rank's predictions: metrics are over the whole split.
    dev_out = run.trainer.predict(encoded["dev"], metric_key_prefix="dev")
    test_out = run.trainer.predict(encoded["test"], metric_key_prefix="test")
    peak_mb = process_peak_memory_mb(choice.device)
    if threshold_rule is not None:
        dev, test, thresholds = multi_label_results(splits, dev_out.predictions, test_out.predictions,
                                                    label_names, threshold_rule)
        multi = {"problem_type": "multi_label_classification", "threshold_rule": threshold_rule,
                 "thresholds": thresholds}
    else:
        dev = classification_metrics(splits["dev"][1], dev_out.predictions.argmax(-1), label_names)
        test = classification_metrics(splits["test"][1], test_out.predictions.argmax(-1), label_names)
        multi = None
    return {
        "dev": dev, "test": test, "multi_label": multi,
        "test_logits": test_out.predictions, "test_split": splits["test"], "label_names": label_names,
        "calibration": _calibrate(run.trainer.model, dev_out.predictions, splits["dev"][1],
                                  test_out.predictions, splits["test"][1]),
        "history": history_frame(run.trainer.state.log_history), "peak_memory_mb": peak_mb,
        "runtime_s": max(run.clock.end_time - run.clock.start_time, 1e-9),
    }


def _metrics(run: _Assembled, outputs: dict, sizes: dict, resume, choice, model_dir, config, teacher) -> dict:
    """metrics.json: dev and test scores, how training went, and what it ran on."""
    from nbutils.checkpoints.weights import weights_origin
    from nbutils.runtime.governor_callback import thread_schedule

    trainer, clock, runtime = run.trainer, run.clock, outputs["runtime_s"]
    metrics = {
        "label_names": outputs["label_names"],
        "dev": outputs["dev"],
        "test": outputs["test"],
        "train": {
            "runtime_s": runtime,
            "samples_per_second": clock.samples / runtime,  # wall time, evaluation included
            "step_samples_per_second": clock.samples / clock.step_seconds if clock.step_seconds else None,
            "steps": clock.steps,
            "global_step": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "resumed_from": resume,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "best_dev_macro_f1": trainer.state.best_metric,
            "train_samples": len(trainer.train_dataset),
            "world_size": run.args.world_size,
            "trainable_params": sizes["trainable"],
            "total_params": sizes["total"],
            "peak_memory_mb": outputs["peak_memory_mb"],
            "peak_memory_kind": "cuda allocated" if choice.device == "cuda" else "process RSS",
        },
        "device": choice.as_dict(),
        "threads": thread_schedule(trainer),
        "model_source": str(model_dir),
        # {"pretrained": False, ...}: these scores are of random weights fine-tuned (the demo without 03)
        "model_weights": weights_origin(model_dir),
        "config": asdict(config),
    }
    if teacher is not None:
        metrics["distillation"] = teacher.describe()
    if outputs.get("multi_label"):
        metrics["multi_label"] = outputs["multi_label"]
    metrics["calibration"] = outputs["calibration"]
    return metrics


def _calibrate(model, dev_logits, dev_labels, test_logits, test_labels) -> dict:
    """Temperature scaling fitted on the dev split, ECE before/after (``metrics.json``'s
    ``calibration``); multi-label models are not calibrated yet (one temperature per label would be)."""
    from nbutils.training.metrics import temperature_scaling

    if getattr(model.config, "problem_type", None) == "multi_label_classification":
        return {"skipped": "temperature scaling is not yet done for multi-label models"}
    return temperature_scaling(dev_logits, dev_labels, test_logits, test_labels)


def _write_outputs(run: _Assembled, out_dir: Path, outputs: dict, metrics: dict, tokenizer, truncator,
                   config, *, save_model: bool, overwrite: bool) -> None:
    """The run's files; metrics.json last, since its presence marks a finished run."""
    from nbutils.core.io import atomic_dir, write_json
    from nbutils.training.model_card import CARD, model_card
    from nbutils.training.tensorboard_logs import write_scalars

    out_dir.mkdir(parents=True, exist_ok=True)
    label_names = outputs["label_names"]
    calibration = outputs["calibration"]
    temperature = calibration.get("temperature", 1.0)
    if save_model:
        with atomic_dir(out_dir / MODEL, overwrite=overwrite) as tmp:
            run.trainer.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / CONFIG_FILE, {
                "max_length": config.max_length, "truncation": config.truncation,
                "head_tokens": truncator.head, "label_names": label_names,
                **({"multi_label": metrics["multi_label"]} if metrics.get("multi_label") else {}),
            })
            # a Hugging Face model card: the folder can be shared (or pushed to the Hub) as is
            (tmp / CARD).write_text(model_card(metrics), encoding="utf-8")
            if "temperature" in calibration:  # nbutils.inference.predict.load_temperature reads it
                write_json(tmp / CALIBRATION_FILE, {
                    "temperature": temperature, "fitted_on": "dev",
                    "dev_examples": calibration["dev"]["examples"],
                    "test_ece_before": calibration["test"]["ece_before"],
                    "test_ece_after": calibration["test"]["ece_after"]})
    _write_csv(out_dir / HISTORY, outputs["history"])
    test_texts, test_labels = outputs["test_split"]
    # calibrated confidences, as nbutils.predict gives them (the predicted labels are the same)
    _write_predictions_csv(out_dir / PREDICTIONS, test_texts, outputs["test_logits"] / temperature,
                           label_names, test_labels,
                           thresholds=_rule_vector(metrics, label_names))
    # the final test scores; the dev split's are the eval/ curve already
    write_scalars(run.tensorboard_dir, {f"test/{name}": outputs["test"][name] for name in ("accuracy", "macro_f1")},
                  step=run.trainer.state.global_step)
    write_json(out_dir / METRICS, metrics)
    if not config.keep_checkpoints:
        shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)


def _write_predictions_csv(path: Path, texts, logits, label_names, labels, chunk: int = 10_000,
                           thresholds=None) -> None:
    """test_predictions.csv written 10,000 rows at a time: the texts are read from disk per chunk.
    ``thresholds`` (one per label): multi-label predictions."""
    from nbutils.core.io import atomic_file
    from nbutils.inference.predict import prediction_frame

    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as out:
        for start in range(0, len(texts), chunk):
            frame = prediction_frame(list(texts[start:start + chunk]), logits[start:start + chunk],
                                     label_names, labels=labels[start:start + chunk], thresholds=thresholds)
            frame.to_csv(out, index=False, header=start == 0)


# ----------------------------------------------------------------------------- multi-label


def _check_multi_label_settings(config: FinetuneConfig, teacher):
    """Settings made for one label per text: label smoothing is refused; distillation from the
    single-label TF-IDF teacher is left out, saying so. Returns the teacher to use (None)."""
    if teacher is not None:
        print("note: the data is multi-label; distillation from the TF-IDF teacher needs one label per text, "
              "so this run learns from the labels only (finetune_distill_alpha is not used)")
    if config.extra_training_args.get("label_smoothing_factor"):
        raise NbutilsError("label smoothing needs one label per text, but the data is multi-label",
                           fix="set finetune_label_smoothing=0 (runner: -p finetune_label_smoothing=0)")
    return None


def _multi_label_eval(eval_pred, label_names) -> dict:
    """Trainer's evaluation metrics for multi-label logits, every label decided at 0.5."""
    from nbutils.training.metrics import FIXED_THRESHOLD, multilabel_metrics, sigmoid

    predicted = (sigmoid(eval_pred.predictions) >= FIXED_THRESHOLD).astype(int)
    m = multilabel_metrics(eval_pred.label_ids.round().astype(int), predicted, label_names)
    return {k: m[k] for k in ("accuracy", "macro_f1", "micro_f1", "weighted_f1")}


def multi_label_results(splits, dev_logits, test_logits, label_names, rule: str):
    """Thresholds chosen on dev, then dev and test metrics under ``rule``; each metrics dict also
    holds ``by_threshold_rule`` (micro/macro F1 and subset accuracy under every rule), so the
    rules can be compared on dev, where the choice belongs."""
    import numpy as np

    from nbutils.training.metrics import (
        THRESHOLD_RULES,
        choose_thresholds,
        multilabel_metrics,
        sigmoid,
        threshold_vector,
    )

    dev_true, test_true = (np.asarray(splits[s][1]).round().astype(int) for s in ("dev", "test"))
    dev_scores, test_scores = sigmoid(dev_logits), sigmoid(test_logits)
    thresholds = choose_thresholds(dev_true, dev_scores, label_names)
    results = []
    for true, scores in ((dev_true, dev_scores), (test_true, test_scores)):
        by_rule = {r: multilabel_metrics(true, (scores >= threshold_vector(thresholds, r, label_names)).astype(int),
                                         label_names) for r in THRESHOLD_RULES}
        chosen = by_rule[rule]
        chosen["threshold_rule"] = rule
        chosen["by_threshold_rule"] = {r: {k: m[k] for k in ("micro_f1", "macro_f1", "subset_accuracy")}
                                       for r, m in by_rule.items()}
        results.append(chosen)
    return results[0], results[1], thresholds


def _rule_vector(metrics: dict, label_names):
    """The thresholds test_predictions.csv decides with (None: single-label)."""
    from nbutils.training.metrics import threshold_vector

    info = metrics.get("multi_label")
    return None if info is None else threshold_vector(info["thresholds"], info["threshold_rule"], label_names)


def _write_csv(path: Path, frame) -> None:
    from nbutils.core.io import atomic_file

    with atomic_file(path) as tmp:
        frame.to_csv(tmp, index=False, encoding="utf-8")


def load_result(out_dir: str | Path) -> dict:
    """Read a finished run's files (e.g. after a torchrun launch): metrics, history, predictions."""
    import pandas as pd

    out_dir = Path(out_dir)
    if not (out_dir / METRICS).exists():
        raise NbutilsError(f"{out_dir} holds no finished run (no metrics.json)", fix="run the training first")
    return {
        "metrics": json.loads((out_dir / METRICS).read_text(encoding="utf-8")),
        "history": pd.read_csv(out_dir / HISTORY),
        "test_predictions": pd.read_csv(out_dir / PREDICTIONS),
    }
