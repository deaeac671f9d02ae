"""``nbutils train`` on the command line and under ``torchrun`` (DDP on several GPUs or CPU
processes): flags generated from :class:`nbutils.training.finetune.FinetuneConfig`, and the launcher a
notebook uses to run the same training on ``nproc`` processes.

Multi-GPU: ``torchrun --nproc_per_node N -m nbutils.training.launch ...`` runs :func:`nbutils.training.finetune.finetune`
under DDP; :func:`launch_distributed` builds and streams that command.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from collections.abc import Sequence

from nbutils.core.config_flags import add_config_flags, config_from_args, config_to_argv
from nbutils.core.errors import NbutilsError
from nbutils.training.finetune import FinetuneConfig, finetune

# FinetuneConfig fields that are not flags: the CLI is always headless, and arbitrary
# TrainingArguments do not fit a flag.
NOT_FLAGS = ("extra_training_args", "headless")


def _load_dataset(data_dir: str, data_format: str, on_bad_rows: str = "raise", *,
                  text_column: str = "text", label_column: str = "label", label_delimiter: str = ""):
    from nbutils.data import dataset as data

    dataset = data.load_dataset(data_dir, format=data_format, on_bad_rows=on_bad_rows,
                                text_column=text_column, label_column=label_column,
                                label_delimiter=label_delimiter)
    if dataset.skipped and int(os.environ.get("RANK", "0")) == 0:
        print(f"left out {len(dataset.skipped)} bad row(s) (--on-bad-rows skip), e.g. {dataset.skipped[0]}")
    return dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nbutils train",
        description="Fine-tune a BERT model folder on a dataset (works under torchrun for DDP).",
    )
    parser.add_argument("--model", required=True, help="model folder (or hub id)")
    parser.add_argument("--data", required=True, help="dataset folder or file")
    parser.add_argument("--data-format", default="auto",
                        help="auto | titles | cnews | table | corpus (see nbutils.data.dataset; default: auto)")
    parser.add_argument("--text-column", default="text", help="table formats: the text column (default: text)")
    parser.add_argument("--label-column", default="label", help="table formats: the label column (default: label)")
    parser.add_argument("--on-bad-rows", choices=("raise", "skip"), default="raise",
                        help="raise: stop at the first bad row (file:line, reason); skip: leave bad rows out")
    parser.add_argument("--label-delimiter", default="",
                        help="table formats: several labels per text separated by this (e.g. '|'): multi-label "
                             "(a sigmoid output per label, thresholds chosen on dev); JSON-list labels need none")
    parser.add_argument("--out", required=True, help="output folder (resumes if it holds checkpoints)")
    parser.add_argument("--curves-png", default=None, help="also save the training curves here (default: OUT/curves.png only)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in OUT and its checkpoints")
    add_config_flags(parser, FinetuneConfig, skip=NOT_FLAGS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [f.name for f in dataclasses.fields(FinetuneConfig) if f.name not in NOT_FLAGS]
    config = config_from_args(FinetuneConfig, args, names, headless=True)
    dataset = _load_dataset(args.data, args.data_format, args.on_bad_rows, text_column=args.text_column,
                            label_column=args.label_column, label_delimiter=args.label_delimiter)
    result = finetune(dataset, args.model, args.out, config, curves_png=args.curves_png,
                      overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        test = result.metrics["test"]
        if test.get("multi_label"):
            print(f"test micro-F1 {test['micro_f1']:.4f}, macro-F1 {test['macro_f1']:.4f}, subset accuracy "
                  f"{test['subset_accuracy']:.4f} (thresholds: {test['threshold_rule']}); wrote {result.out_dir}")
        else:
            print(f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}; wrote {result.out_dir}")
    return 0


def config_argv(config: FinetuneConfig) -> list[str]:
    """``config`` as ``nbutils train`` flags (what a notebook passes to a torchrun launch)."""
    return config_to_argv(config, skip=NOT_FLAGS)


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The command that runs ``nbutils train`` with ``argv`` on ``nproc`` processes (DDP)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "nbutils.cli", "train", *map(str, argv)]


def launch_distributed(nproc: int, argv: Sequence[str], *, env: dict | None = None) -> int:
    """Run training on ``nproc`` GPUs (or CPU processes) with torchrun, streaming its output."""
    from nbutils.runtime.threads import threads_per_process

    cmd = torchrun_command(nproc, argv)
    print("$", " ".join(cmd), flush=True)
    # CPU ranks share the machine: the thread policy's count is split between them
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **threads_per_process(nproc), **(env or {})})
    for line in proc.stdout:
        print(line, end="", flush=True)
    code = proc.wait()
    if code != 0:
        raise NbutilsError(f"distributed training failed (exit status {code})", fix="read the log above")
    return code

