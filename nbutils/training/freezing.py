"""What each frozen layer costs and saves: freezing strategies, layer-wise LR decay, comparison.

The strategies, scaled to the encoder's depth ``L`` (``config.num_hidden_layers``):

- ``full``: every parameter trains (the reference).
- ``frozen_embeddings``: the embedding block (word, position, type embeddings and their
  LayerNorm) is frozen; every encoder layer, the pooler and the head train.
- ``frozen_bottom_<k>``: the embeddings and the bottom ``k`` encoder layers are frozen. Freezing
  the embeddings too is what makes it cheaper: autograd then stops at layer ``k`` instead of
  back-propagating through frozen layers to reach trainable embeddings. Default ``k`` values are
  ``L/4, L/2, 3L/4`` rounded half up, kept within ``1..L-1`` and deduplicated (3, 6, 9 of 12).
- ``classifier_only``: the feature-based way. The whole encoder *including the pooler* is
  frozen, so only the linear head on top of the pooled ``[CLS]`` features trains (the weights
  are fixed; dropout inside the encoder stays active, see below); a
  trainable pooler would be a small two-layer head, not a feature-based model.
- ``llrd``: nothing is frozen; layer-wise learning-rate decay (Sun et al. 2019, "How to
  Fine-Tune BERT for Text Classification?"): the head and the pooler get the base LR, the top
  encoder layer too, each layer below it ``decay`` times the LR of the layer above, and the
  embeddings ``decay`` times the bottom layer's.

The classification head (everything outside ``model.base_model``) is never frozen:
:func:`apply_strategy` checks it after freezing, because a head frozen by accident (a bug users
report in older repositories) trains nothing and still reports a number.

Frozen layers keep their dropout active during training (the Trainer puts the whole model in
train mode); that is the usual ``requires_grad=False`` recipe and it is what is measured here.

:func:`run_comparison` fine-tunes every strategy for every seed with the same data, budget and
hyper-parameters through :func:`nbutils.training.finetune.finetune` and writes ``results.csv`` and
``history.csv`` (schemas in CONTRIBUTING.md). What the numbers say: :mod:`nbutils.reporting.findings`;
their figures: :mod:`nbutils.reporting.plots`; how steps are timed and memory measured:
:class:`nbutils.training.measurement.TrainingClock`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbutils.core.errors import NbutilsError
from nbutils.core.run_contract import (
    FREEZING_HISTORY_COLUMNS,
    FREEZING_RESULT_COLUMNS,
    FREEZING_RESULTS,
    FREEZING_RUNS,
    HISTORY,
    TENSORBOARD,
)

FULL = "full"
FROZEN_EMBEDDINGS = "frozen_embeddings"
FROZEN_BOTTOM = "frozen_bottom_{k}"
CLASSIFIER_ONLY = "classifier_only"
LLRD = "llrd"
RANDOM_INIT_CONTROL = "full_random_init"

DEFAULT_LLRD_DECAY = 0.9
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
_FROZEN_BOTTOM_RE = re.compile(r"^frozen_bottom_(\d+)$")

RESULT_COLUMNS = FREEZING_RESULT_COLUMNS  # results.csv (then extras, see _result_row)
HISTORY_COLUMNS = FREEZING_HISTORY_COLUMNS  # history.csv


@dataclass(frozen=True)
class Strategy:
    """Which parameters train, and how: one row of the comparison."""

    name: str
    frozen_layers: int = 0  # bottom encoder layers frozen
    freeze_embeddings: bool = False
    classifier_only: bool = False  # freeze the whole encoder, pooler included
    llrd_decay: float | None = None  # layer-wise LR decay factor (None: one LR for all)
    random_init: bool = False  # start from random weights of the same architecture (the control)

    def describe(self) -> str:
        if self.random_init:
            return "every parameter trains, starting from random weights (control)"
        if self.classifier_only:
            return "encoder and pooler frozen, only the classifier head trains"
        if self.llrd_decay is not None:
            return f"all layers train, LR x{self.llrd_decay:g} per layer going down"
        if self.frozen_layers:
            return f"embeddings and the bottom {self.frozen_layers} encoder layer(s) frozen"
        if self.freeze_embeddings:
            return "embeddings frozen, every encoder layer trains"
        return "every parameter trains"


@dataclass
class FreezeSummary:
    """What :func:`apply_strategy` left trainable."""

    strategy: str
    trainable_params: int
    total_params: int
    frozen_names: list[str] = field(default_factory=list)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def describe(self) -> str:
        return (
            f"{self.strategy}: {self.trainable_params:,} of {self.total_params:,} parameters train "
            f"({100 * self.trainable_fraction:.1f}%), {len(self.frozen_names)} tensors frozen"
        )


def default_ks(num_layers: int) -> list[int]:
    """``L/4, L/2, 3L/4`` rounded half up, within ``1..L-1``, deduplicated (3, 6, 9 of 12)."""
    if num_layers < 2:
        return []
    ks = (min(num_layers - 1, max(1, math.floor(num_layers * q + 0.5))) for q in (0.25, 0.5, 0.75))
    return sorted(set(ks))


def strategies_for(
    num_layers: int, ks: Iterable[int] | None = None, llrd_decay: float = DEFAULT_LLRD_DECAY
) -> list[Strategy]:
    """Every strategy for an encoder of ``num_layers`` layers, cheapest-to-train last but one.

    ``ks`` are the bottom-layer counts to freeze (default :func:`default_ks`); each must be in
    ``1..num_layers``.
    """
    if num_layers < 1:
        raise NbutilsError(f"the encoder has {num_layers} layers; need at least 1")
    ks = default_ks(num_layers) if ks is None else sorted(set(int(k) for k in ks))
    for k in ks:
        if not 1 <= k <= num_layers:
            raise NbutilsError(
                f"cannot freeze the bottom {k} of {num_layers} encoder layers",
                fix=f"choose k between 1 and {num_layers}",
            )
    _check_decay(llrd_decay)
    return [
        Strategy(FULL),
        Strategy(FROZEN_EMBEDDINGS, freeze_embeddings=True),
        *(Strategy(FROZEN_BOTTOM.format(k=k), frozen_layers=k, freeze_embeddings=True) for k in ks),
        Strategy(CLASSIFIER_ONLY, freeze_embeddings=True, frozen_layers=num_layers, classifier_only=True),
        Strategy(LLRD, llrd_decay=llrd_decay),
    ]


def as_list(value, cast=str) -> list:
    """A notebook list parameter as a list: ``papermill -p x a,b`` injects the string "a,b"."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    return [cast(v.strip() if isinstance(v, str) else v) for v in value]


def select_strategies(
    names: Sequence[str] | str, num_layers: int, llrd_decay: float = DEFAULT_LLRD_DECAY
) -> list[Strategy]:
    """Strategies by name, as a notebook parameter lists them; ``["all"]`` means every default.

    Names: ``full``, ``frozen_embeddings``, ``frozen_bottom_<k>`` (any ``k`` in ``1..L``),
    ``classifier_only``, ``llrd``; a comma-separated string works too.
    """
    names = as_list(names)
    if not names:
        raise NbutilsError("no freezing strategies selected", fix='list some, or use ["all"]')
    if "all" in names:
        return strategies_for(num_layers, llrd_decay=llrd_decay)
    ks = [int(m.group(1)) for n in names if (m := _FROZEN_BOTTOM_RE.match(n))]
    by_name = {s.name: s for s in strategies_for(num_layers, ks=ks, llrd_decay=llrd_decay)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise NbutilsError(
            f"unknown freezing strategy {unknown[0]!r}",
            fix=f"use 'all' or some of {FULL}, {FROZEN_EMBEDDINGS}, frozen_bottom_<k> "
            f"(1 <= k <= {num_layers}), {CLASSIFIER_ONLY}, {LLRD}",
        )
    return [by_name[n] for n in dict.fromkeys(names)]


def _check_decay(decay: float) -> None:
    if not 0 < decay <= 1:
        raise NbutilsError(
            f"layer-wise LR decay {decay} is outside (0, 1]",
            fix="use e.g. 0.9 (each layer down gets 90% of the LR of the layer above); 1 = no decay",
        )


# --- which parameter belongs where ----------------------------------------------------------


def _encoder_parts(model):
    """(prefix of the base model, embeddings, list of encoder layers, pooler or None)."""
    base = getattr(model, "base_model", None)
    prefix = getattr(model, "base_model_prefix", "")
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if base is None or base is model or embeddings is None or layers is None:
        raise NbutilsError(
            f"{type(model).__name__} does not look like a BERT-style classifier "
            "(model.base_model.embeddings / .encoder.layer / a head outside the base model)",
            fix="use a BertForSequenceClassification-like model (nbutils.training.finetune loads one)",
        )
    return prefix, embeddings, list(layers), getattr(base, "pooler", None)


def _names_in(module, prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name, _ in module.named_parameters()]


def parameter_blocks(model) -> dict[str, list[str]]:
    """Parameter names by block: ``embeddings``, ``layer.0`` .. ``layer.{L-1}``, ``pooler``, ``head``."""
    prefix, embeddings, layers, pooler = _encoder_parts(model)
    base = model.base_model
    module_names = {id(m): n for n, m in base.named_modules()}
    blocks = {"embeddings": _names_in(embeddings, f"{prefix}.{module_names[id(embeddings)]}")}
    for i, layer in enumerate(layers):
        blocks[f"layer.{i}"] = _names_in(layer, f"{prefix}.{module_names[id(layer)]}")
    blocks["pooler"] = _names_in(pooler, f"{prefix}.{module_names[id(pooler)]}") if pooler is not None else []
    in_base = {f"{prefix}.{n}" for n, _ in base.named_parameters()}
    blocks["head"] = [n for n, _ in model.named_parameters() if n not in in_base]
    claimed = {n for names in blocks.values() for n in names}
    stray = sorted(in_base - claimed)
    if stray:  # a base-model parameter outside embeddings/layers/pooler: say so, don't guess
        raise NbutilsError(f"parameters outside embeddings, encoder layers and pooler: {stray[:3]}")
    return blocks


def _num_layers(blocks: dict[str, list[str]]) -> int:
    return sum(1 for b in blocks if b.startswith("layer."))


def frozen_blocks(strategy: Strategy, num_layers: int) -> list[str]:
    """The blocks (names as in :func:`parameter_blocks`) that ``strategy`` freezes."""
    if strategy.frozen_layers > num_layers:
        raise NbutilsError(
            f"strategy {strategy.name!r} freezes {strategy.frozen_layers} layers but the encoder has {num_layers}",
            fix="build strategies with strategies_for(model.config.num_hidden_layers)",
        )
    blocks = ["embeddings"] if strategy.freeze_embeddings or strategy.frozen_layers else []
    layers = num_layers if strategy.classifier_only else strategy.frozen_layers
    blocks += [f"layer.{i}" for i in range(layers)]
    if strategy.classifier_only:
        blocks.append("pooler")
    return blocks


def apply_strategy(model, strategy: Strategy) -> FreezeSummary:
    """Set ``requires_grad`` for ``strategy`` (from an all-trainable start); return what trains."""
    blocks = parameter_blocks(model)
    frozen = {n for b in frozen_blocks(strategy, _num_layers(blocks)) for n in blocks[b]}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    head = dict(model.named_parameters())
    if not blocks["head"] or not all(head[n].requires_grad for n in blocks["head"]):
        raise AssertionError(f"strategy {strategy.name!r} left the classifier head frozen")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_names = [n for n, _ in model.named_parameters() if n in frozen]
    return FreezeSummary(strategy.name, trainable, total, frozen_names)


def llrd_param_groups(model, base_lr: float, decay: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups with layer-wise LR decay (see the module docstring).

    Head, pooler and top encoder layer: ``base_lr``; encoder layer ``i`` of ``L``:
    ``base_lr * decay ** (L - 1 - i)``; embeddings: ``base_lr * decay ** L``. Biases and
    LayerNorm weights get no weight decay (as in the Trainer's default grouping). Only
    trainable parameters are included, each exactly once; empty groups are dropped.
    """
    import torch
    from transformers.trainer_pt_utils import get_parameter_names

    _check_decay(decay)
    blocks = parameter_blocks(model)
    num_layers = _num_layers(blocks)
    # The same rule as Trainer.get_decay_parameter_names: no decay for norms and biases.
    no_decay_patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    decayed = set(get_parameter_names(model, [torch.nn.LayerNorm], no_decay_patterns))
    params = dict(model.named_parameters())
    depth = {"head": 0, "pooler": 0, "embeddings": num_layers}
    depth.update({f"layer.{i}": num_layers - 1 - i for i in range(num_layers)})
    groups = []
    for block, names in blocks.items():
        lr = base_lr * decay ** depth[block]
        for with_decay in (True, False):
            chosen = [params[n] for n in names if params[n].requires_grad and (n in decayed) == with_decay]
            if chosen:
                groups.append({"params": chosen, "lr": lr, "weight_decay": weight_decay if with_decay else 0.0})
    return groups


# --- the comparison ---------------------------------------------------------------------------


def _result_row(strategy: Strategy, seed: int, result, clock, wall_s: float) -> dict[str, Any]:
    dev, test = result.metrics["dev"], result.metrics["test"]
    return {
        "strategy": strategy.name,
        "seed": int(seed),
        "trainable_params": int(result.trainable_params),
        "total_params": int(result.total_params),
        "train_time_s": clock.step_seconds,
        "samples_per_second": clock.examples_seen / clock.step_seconds if clock.step_seconds else float("nan"),
        "peak_memory_mb": clock.peak_mb,
        "dev_accuracy": dev["accuracy"],
        "dev_macro_f1": dev["macro_f1"],
        "test_accuracy": test["accuracy"],
        "test_macro_f1": test["macro_f1"],
        # multi-label runs: accuracy is the subset accuracy; micro-F1 too (thresholds chosen on dev)
        **({"dev_micro_f1": dev["micro_f1"], "test_micro_f1": test["micro_f1"]} if test.get("multi_label") else {}),
        "peak_memory_kind": clock.memory_kind,
        # sum >> steps x median means other processes slowed some steps (a shared machine)
        "median_step_s": statistics.median(clock.step_durations) if clock.step_durations else float("nan"),
        "run_wall_s": wall_s,
        "description": strategy.describe(),
    }


def _history_rows(strategy: Strategy, seed: int, history):
    frame = history.reindex(columns=list(HISTORY_COLUMNS[2:]))
    frame.insert(0, "seed", int(seed))
    frame.insert(0, "strategy", strategy.name)
    return frame


def write_random_init_copy(model_dir, out_dir, seed: int) -> Path:
    """The architecture of ``model_dir`` with fresh random weights (the model's own initialiser,
    seeded) and the same tokenizer files: the "no pre-training" control."""
    import torch
    from transformers import AutoConfig, AutoModel

    from nbutils.core.io import atomic_dir

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    from nbutils.checkpoints.weights import quiet_weight_files

    with atomic_dir(out_dir) as tmp, quiet_weight_files():  # no "Writing model shards" bar left behind
        torch.manual_seed(seed)
        AutoModel.from_config(config).save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)
    return Path(out_dir)


def comparison_config(n_train: int, *, evals_per_run: int = 2, **settings):
    """The ``FinetuneConfig`` every strategy shares: ``settings`` plus evaluation (for the dev
    curve) ``evals_per_run`` times per run, evenly spaced, and no early stopping."""
    import dataclasses

    from nbutils.training.finetune import FinetuneConfig

    if n_train < 1 or evals_per_run < 1:
        raise NbutilsError(f"need training examples and at least one evaluation (got {n_train}, {evals_per_run})")
    config = FinetuneConfig(**{**settings, "early_stopping_patience": 0, "eval_strategy": "steps"})
    steps = config.max_steps
    if steps <= 0:
        per_epoch = math.ceil(n_train / (config.batch_size * config.gradient_accumulation_steps))
        steps = math.ceil(per_epoch * config.epochs)
    return dataclasses.replace(config, eval_steps=max(1, math.ceil(steps / evals_per_run)))


# Notebook 05's freeze_<name> parameters that every strategy's FinetuneConfig shares. The sample
# sizes are not among them: the data is subsampled once (comparison_data), for every run alike.
SHARED_BUDGET = ("epochs", "batch_size", "learning_rate", "max_length")


def comparison_config_from_params(params: dict[str, Any], n_train: int):
    """:func:`comparison_config` from notebook 05's parameters (``freeze_epochs``,
    ``freeze_batch_size``, ``freeze_learning_rate``, ``freeze_max_length``,
    ``freeze_evals_per_run``, and ``device``, ``precision``, ``headless``)."""
    settings = {name: params[f"freeze_{name}"] for name in SHARED_BUDGET}
    settings.update({name: params[name] for name in ("device", "precision", "headless")})
    return comparison_config(n_train, evals_per_run=params["freeze_evals_per_run"], **settings)


def comparison_data(data_dir, data_format: str = "auto", *, on_bad_rows: str = "raise",
                    max_train_samples: int = 0, max_dev_test_samples: int = 0, seed: int = 42,
                    text_column: str = "text", label_column: str = "label", label_delimiter: str = ""):
    """The dataset every strategy trains and is scored on: stratified samples of at most
    ``max_train_samples`` training and ``max_dev_test_samples`` dev and test examples each (0: all).
    ``label_delimiter``: several labels per text (multi-label; ``nbutils.data.dataset.load_dataset``)."""
    from nbutils.data.dataset import load_dataset

    sizes = {"train": max_train_samples, "dev": max_dev_test_samples, "test": max_dev_test_samples}
    dataset = load_dataset(data_dir, data_format, on_bad_rows=on_bad_rows, text_column=text_column,
                           label_column=label_column, label_delimiter=label_delimiter)
    return dataset.subsample(
        {split: n or None for split, n in sizes.items()}, seed=seed)


def encoder_layers(model_dir: str | Path) -> int:
    """The encoder's layer count, from ``model_dir/config.json``; a clear error without one.
    (Read directly: importing transformers to read it would load torch before nbutils sets the
    CPU thread policy, nbutils.runtime.threads.)"""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        raise NbutilsError(f"no encoder to start from: {model_dir} has no config.json",
                           fix="run 01_convert_checkpoint (and optionally 03_pretrain_mlm) with this run_dir first")
    return json.loads(config_file.read_text(encoding="utf-8"))["num_hidden_layers"]


def plan_table(strategies: Sequence[Strategy], *, random_init_control: bool):
    """One row per strategy to run: its name and what trains."""
    import pandas as pd

    plan = [{"strategy": s.name, "what trains": s.describe()} for s in strategies]
    if random_init_control:
        plan.append({"strategy": RANDOM_INIT_CONTROL, "what trains": "every parameter, from random weights (control)"})
    return pd.DataFrame(plan).set_index("strategy")

@contextlib.contextmanager
def _quiet_transformers(quiet: bool = True):
    """Hide the load report and weight-loading bars that repeat identically for every run."""
    from transformers.utils import logging as hf_logging

    if not quiet:
        yield
        return
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _warm_up(dataset, model_dir, out_dir, config, log) -> None:
    import dataclasses

    from nbutils.training.finetune import finetune

    log("warm-up: 2 untimed training steps")
    small = dataset.subsample({"train": 2 * config.batch_size, "dev": 8, "test": 8}, seed=config.seed)
    finetune(
        small, model_dir, out_dir,
        dataclasses.replace(config, max_steps=2, eval_strategy="epoch", eval_steps=0, headless=True),
        save_model=False, extra_callbacks=[], progress_lines=0,
        tensorboard_dir=Path(out_dir) / TENSORBOARD,  # removed with it: not a run to compare
    )
    shutil.rmtree(out_dir, ignore_errors=True)


def _run_one(dataset, source, tmp: Path, config, strategy: Strategy, seed: int, *, quiet: bool):
    """One strategy at one seed: its results row and its history rows."""
    import dataclasses
    from functools import partial

    from nbutils.training.finetune import finetune
    from nbutils.training.measurement import TrainingClock

    clock = TrainingClock(measure_memory=True)
    groups = None
    if strategy.llrd_decay is not None:
        groups = partial(llrd_param_groups, base_lr=config.learning_rate, decay=strategy.llrd_decay,
                         weight_decay=config.weight_decay)
    started = time.perf_counter()
    with _quiet_transformers(quiet=quiet):
        result = finetune(
            dataset, source, tmp / FREEZING_RUNS / f"{strategy.name}-seed{seed}",
            dataclasses.replace(config, seed=seed),
            prepare_model=partial(apply_strategy, strategy=strategy),
            param_groups=groups, extra_callbacks=[clock], save_model=False,
            title=f"{strategy.name}, seed {seed}",
            progress_lines=0,  # one line per run (run_comparison's) instead of ten step lines each
            # the freezing runs' own TensorBoard root: comparable with each other
            tensorboard_dir=tmp / TENSORBOARD / f"{strategy.name}-seed{seed}",
        )
    row = _result_row(strategy, seed, result, clock, time.perf_counter() - started)
    return row, _history_rows(strategy, seed, result.history)


def run_comparison(
    dataset,
    model_dir,
    out_dir,
    strategies: Sequence[Strategy],
    seeds: Sequence[int] | str,
    base_config,
    *,
    random_init_control: bool = False,
    overwrite: bool = False,
    warmup: bool = True,
    log=print,
):
    """Fine-tune every strategy with every seed; write and return ``results.csv`` (one row each).

    Everything but the strategy and the seed stays as in ``base_config`` (data, epochs, learning
    rate, batch size), except that early stopping is switched off so every run gets the same
    budget. With ``random_init_control``, a ``full_random_init`` row fully fine-tunes the same
    architecture from random weights (:func:`write_random_init_copy`) under the same budget: what
    the starting encoder adds over no pre-training at all.

    ``out_dir`` appears only once every run has finished (``results.csv``, ``history.csv`` and
    ``runs/<name>-seed<n>/`` with each run's metrics and predictions); an existing ``out_dir`` is
    kept unless ``overwrite``.

    ``warmup`` first trains a few untimed steps on a few examples, so the one-off costs of a
    fresh process (thread pools, allocator arenas, CUDA context) are not billed to whichever
    strategy happens to run first.
    """
    import dataclasses

    import pandas as pd

    from nbutils.core.io import atomic_dir, atomic_file

    seeds = as_list(seeds, int)
    if not strategies or not seeds:
        raise NbutilsError("nothing to compare: no strategies or no seeds", fix="list at least one of each")
    runs = [(s, model_dir) for s in strategies]
    config = dataclasses.replace(base_config, early_stopping_patience=0)
    rows, histories = [], []
    from nbutils.checkpoints.weights import say_loading_once

    # the encoder's load message once, not once per strategy and seed
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, say_loading_once():
        if warmup:
            _warm_up(dataset, model_dir, tmp / "warmup", config, log)
        if random_init_control:
            random_dir = write_random_init_copy(model_dir, tmp / "random_init_model", seed=config.seed)
            runs.append((Strategy(RANDOM_INIT_CONTROL, random_init=True), random_dir))
        total = len(runs) * len(seeds)
        for i, ((strategy, source), seed) in enumerate(
            ((run, seed) for run in runs for seed in seeds), start=1
        ):
            log(f"[{i}/{total}] {strategy.name}, seed {seed}: {strategy.describe()}")
            # the model's load report was shown once (warm-up or first run); it repeats verbatim
            row, history = _run_one(dataset, source, tmp, config, strategy, seed, quiet=warmup or i > 1)
            rows.append(row)
            histories.append(history)
            log(
                f"    test accuracy {row['test_accuracy']:.4f}, macro-F1 {row['test_macro_f1']:.4f}; "
                f"{row['trainable_params']:,} trainable; {row['train_time_s']:.1f} s of steps"
            )
        if random_init_control:
            shutil.rmtree(random_dir)  # a throwaway: its seed makes it again
        results = pd.DataFrame(rows)
        with atomic_file(tmp / FREEZING_RESULTS) as path:
            results.to_csv(path, index=False, encoding="utf-8")
        with atomic_file(tmp / HISTORY) as path:
            pd.concat(histories, ignore_index=True).to_csv(path, index=False, encoding="utf-8")
    return results
