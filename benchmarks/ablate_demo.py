"""Ablation of the demo recipe: which pre-training / shape / fine-tuning choices pay in the demo's budget.

Each variant is the original demo recipe (``BASE``: 15% masking, 2 epochs, no distillation)
with a few settings changed (``cv_mask40_distill_ft8`` is the current ``params/demo.yaml``): the
pre-training recipe (masked LM, ELECTRA replaced-token detection, none), its step budget and
masking rate, the model shape, and the fine-tuning schedule (epochs, learning rate, label
smoothing, distillation from the cross-fitted TF-IDF SVM). Every run goes through the same
library code as ``make demo`` (``nbutils.checkpoints.random_bert.make_random_bert``, ``nbutils.pretraining.mlm`` /
``nbutils.pretraining.electra``, ``nbutils.training.finetune.finetune``), so accuracies at a step budget transfer
between devices; seconds do not (time CPU steps on a CPU). Budgets are steps and epochs.

Rules kept: pre-training sees the train split's texts only (500 of them held out for its own
scores); fine-tuning trains on the train split, picks its checkpoint on the same 1,000-title
stratified dev sample as the demo and is scored on the whole 10k test split; the distillation
teacher is fitted on the train split only (cross-fitted; ``nbutils.training.distill``).

    python benchmarks/ablate_demo.py --list                      # the variants and their settings
    python benchmarks/ablate_demo.py --tiny --device cpu --out benchmarks/out/ablation-tiny   # ~2 min check
    python benchmarks/ablate_demo.py --device cuda --seeds 42 43 44 --jobs 12 --out OUT/ablation
    python benchmarks/ablate_demo.py --device cpu --variants demo ft4 --seeds 42 --out benchmarks/out/abl
    python benchmarks/ablate_demo.py --device cpu --variants distill distill_a08 --seeds 42 \
        --from-pretrained runs/<demo run>/pretrain --out benchmarks/out/abl-ft   # fine-tuning variants only
    python benchmarks/ablate_demo.py --timing 200 --variants demo electra_ft4 --seeds 42 --out OUT  # CPU cost

Writes ``runs.csv`` (one row per variant and seed, rewritten after every finished run, so an
interrupted sweep keeps what it finished) and ``summary.csv`` / ``summary.md`` (mean +- std
over seeds) to ``--out``, which must not exist yet (or use ``--resume`` to skip finished rows).
A run that fails is a row with ``status=error`` and the message, never silently missing.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The original demo profile (params/demo.yaml before the ablation, 128x2 BERT).
BASE = {
    "hidden": 128, "layers": 2, "heads": 2, "intermediate": 512,
    "recipe": "mlm",  # mlm | electra | none
    "pt_steps": 3000, "pt_batch": 64, "pt_lr": 1e-3, "pt_max_length": 32, "mask": 0.15, "pt_dropout": 0.0,
    "pt_warmup": 0.06, "pt_vocab": "full", "gen_layers": 1, "disc_weight": 50.0,
    "ft_epochs": 2.0, "ft_lr": 5e-4, "ft_batch": 32, "ft_max_length": 48, "ft_warmup": 0.1,
    "ft_eval_steps": 300, "label_smoothing": 0.0, "distill_alpha": 0.0, "distill_folds": 5, "distill_T": 1.0,
}

# name -> (what it tests, overrides of BASE). Order = priority: a sweep cut short keeps the first.
VARIANTS: dict[str, tuple[str, dict]] = {
    "demo": ("the original demo recipe (2 epochs, no distillation)", {}),
    "ft4": ("fine-tune 4 epochs instead of 2", {"ft_epochs": 4.0}),
    "distill_ft4": ("distil the cross-fitted TF-IDF SVM (alpha 0.5), 4 epochs", {"distill_alpha": 0.5, "ft_epochs": 4.0}),
    "electra_ft4": ("ELECTRA replaced-token detection, 3,000 steps, 4 epochs", {"recipe": "electra", "ft_epochs": 4.0}),
    "mask30_ft4": ("mask 30% instead of 15% (Wettig et al. 2023), 4 epochs", {"mask": 0.30, "ft_epochs": 4.0}),
    "electra_distill_ft4": ("ELECTRA + distil + 4 epochs", {"recipe": "electra", "distill_alpha": 0.5,
                                                            "ft_epochs": 4.0}),
    "electra1500_ft4": ("ELECTRA 1,500 steps (a CPU ELECTRA step cost ~1.9 MLM steps), 4 epochs",
                        {"recipe": "electra", "pt_steps": 1500, "ft_epochs": 4.0}),
    "distill_a08": ("distil alpha 0.8, 2 epochs", {"distill_alpha": 0.8}),
    "distill_a08_ft4": ("distil alpha 0.8, 4 epochs", {"distill_alpha": 0.8, "ft_epochs": 4.0}),
    "ls01_ft4": ("label smoothing 0.1, 4 epochs", {"label_smoothing": 0.1, "ft_epochs": 4.0}),
    "ft4_lr1e3": ("4 epochs at lr 1e-3", {"ft_epochs": 4.0, "ft_lr": 1e-3}),
    "wide256x1_ft4": ("256 wide, 1 layer (CPU: ~1.6x the pre-training step time of 128x2), 4 epochs",
                      {"hidden": 256, "layers": 1, "heads": 4, "intermediate": 1024, "ft_epochs": 4.0}),
    "pt1500_ft6": ("half the pre-training steps, 6 epochs", {"pt_steps": 1500, "ft_epochs": 6.0}),
    "no_pretrain_ft4": ("control: no pre-training, 4 epochs", {"recipe": "none", "ft_epochs": 4.0}),
    "mask40_ft4": ("mask 40%, 4 epochs", {"mask": 0.40, "ft_epochs": 4.0}),
    "distill": ("distil (alpha 0.5), 2 epochs", {"distill_alpha": 0.5}),
    "electra": ("ELECTRA, 2 epochs", {"recipe": "electra"}),
    "distill_ft6": ("distil (alpha 0.5), 6 epochs", {"distill_alpha": 0.5, "ft_epochs": 6.0}),
    "pt6000_ft4": ("twice the pre-training steps, 4 epochs", {"pt_steps": 6000, "ft_epochs": 4.0}),
    "mask30_distill_ft4": ("mask 30% + distil + 4 epochs", {"mask": 0.30, "distill_alpha": 0.5, "ft_epochs": 4.0}),
    "ptlr2e3_ft4": ("pre-training lr 2e-3 (Cramming: as high as stays stable), 4 epochs",
                    {"pt_lr": 2e-3, "ft_epochs": 4.0}),
    "distill_T2_ft4": ("distil at temperature 2, 4 epochs", {"distill_alpha": 0.5, "distill_T": 2.0, "ft_epochs": 4.0}),
    "distill_ft4_lr1e3": ("distil + 4 epochs at lr 1e-3", {"distill_alpha": 0.5, "ft_epochs": 4.0, "ft_lr": 1e-3}),
    # "cv": the MLM head scores only the tokens of the pre-training texts (mlm_output_vocabulary:
    # corpus), which makes a step cheaper, the more so the more tokens are masked
    "cv_distill_ft6": ("corpus-vocabulary head + distil + 6 epochs", {"pt_vocab": "corpus", "distill_alpha": 0.5,
                                                                     "ft_epochs": 6.0}),
    "cv_mask30_distill_ft6": ("corpus-vocabulary head, mask 30% + distil + 6 epochs",
                              {"pt_vocab": "corpus", "mask": 0.30, "distill_alpha": 0.5, "ft_epochs": 6.0}),
    "cv_mask40_distill_ft6": ("corpus-vocabulary head, mask 40% + distil + 6 epochs",
                              {"pt_vocab": "corpus", "mask": 0.40, "distill_alpha": 0.5, "ft_epochs": 6.0}),
    "cv_mask30_pt4000_distill_ft6": ("corpus-vocabulary head, mask 30%, 4,000 steps + distil + 6 epochs",
                                     {"pt_vocab": "corpus", "mask": 0.30, "pt_steps": 4000, "distill_alpha": 0.5,
                                      "ft_epochs": 6.0}),
    "cv_mask30_distill_ft8": ("corpus-vocabulary head, mask 30% + distil + 8 epochs",
                              {"pt_vocab": "corpus", "mask": 0.30, "distill_alpha": 0.5, "ft_epochs": 8.0}),
    "cv_mask40_distill_ft8": ("corpus-vocabulary head, mask 40% + distil + 8 epochs",
                              {"pt_vocab": "corpus", "mask": 0.40, "distill_alpha": 0.5, "ft_epochs": 8.0}),
    "cv_mask30_pt12000_distill_ft6": ("corpus-vocabulary head, mask 30%, 12,000 steps (4x: beyond the demo's "
                                      "budget, what more pre-training buys) + distil + 6 epochs",
                                      {"pt_vocab": "corpus", "mask": 0.30, "pt_steps": 12000, "distill_alpha": 0.5,
                                       "ft_epochs": 6.0}),
}

COLUMNS = ["variant", "seed", "recipe", "shape", "pretrain_steps", "finetune_steps", "dev_acc", "test_acc",
           "test_macro_f1", "pretrain_s", "finetune_s", "finetune_total_s", "pretrain_ms_per_step",
           "finetune_ms_per_step", "pretrain_cpu_s", "finetune_cpu_s", "torch_threads", "pretrain_metric", "teacher_oof_acc", "device",
           "precision", "status", "error"]


def settings_of(name: str, tiny: bool, timing: int = 0) -> dict:
    s = {**BASE, **VARIANTS[name][1]}
    if timing:  # seconds per step on this machine (accuracies meaningless): K steps of each stage
        s.update(pt_steps=min(s["pt_steps"], timing) if s["recipe"] != "none" else 0, ft_max_steps=timing,
                 ft_eval_steps=timing, max_test=1000)
    if tiny:  # seconds on a CPU: checks the code paths, not the numbers
        s.update(pt_steps=min(s["pt_steps"], 10), ft_epochs=0.0, ft_max_steps=8, ft_eval_steps=4,
                 max_train=600, max_test=300, heldout=50, distill_folds=2)
    return s


PRETRAIN_KEYS = ("hidden", "layers", "heads", "intermediate", "recipe", "pt_steps", "pt_batch", "pt_lr",
                 "pt_max_length", "mask", "pt_dropout", "pt_warmup", "gen_layers", "disc_weight", "pt_vocab")


def reused_pretraining(pretrained: str, s: dict) -> dict:
    """The metrics of an earlier pre-training (``<dir>/metrics.json`` + ``<dir>/model``), if it is this variant's."""
    import json as _json

    folder = Path(pretrained)
    metrics = _json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    cfg, model = metrics["config"], metrics["model"]
    seen = {"hidden": model["hidden_size"], "layers": model["num_layers"], "heads": model["num_heads"],
            "intermediate": model["intermediate_size"], "recipe": metrics.get("recipe", "mlm"),
            "pt_steps": metrics["steps"], "pt_batch": cfg["batch_size"], "pt_lr": cfg["learning_rate"],
            "pt_max_length": cfg["max_length"], "mask": cfg["mlm_probability"], "pt_dropout": cfg["dropout"],
            "pt_warmup": cfg["warmup_ratio"], "pt_vocab": cfg.get("output_vocabulary", "full")}
    differ = {k: (seen[k], s[k]) for k in seen if seen[k] != s[k]}
    if differ or s["recipe"] == "electra":
        raise ValueError(f"--from-pretrained {folder} was pre-trained differently from this variant: {differ}")
    return metrics


def pretraining_key(s: dict, seed: int) -> str | None:
    """Name of a pre-training in the cache: variants that pre-train alike (same settings, same seed)
    share it; None for a variant that does not pre-train."""
    if s["recipe"] == "none":
        return None
    import hashlib

    settings = json.dumps({k: s[k] for k in PRETRAIN_KEYS} | {"heldout": s.get("heldout", 500),
                          "max_train": s.get("max_train", 0)}, sort_keys=True)
    return f"{s['recipe']}-seed{seed}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _cache_lock(cached: Path):
    """Hold ``<cached>.lock``: a parallel run that needs the same pre-training waits for this one to
    finish it and then reuses it, instead of training it a second time."""
    import fcntl

    cached.parent.mkdir(parents=True, exist_ok=True)
    with open(cached.with_name(cached.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, even if the run dies
        yield


def run_one(name: str, seed: int, device: str, data_dir: str, vocab_dir: str, tiny: bool, threads: int,
            timing: int = 0, pretrained: str = "", cache: str = "") -> dict:
    """One variant and seed, start to finish, in this process; a CSV row (errors included).

    ``pretrained``: reuse that earlier pre-training (same settings as the variant's, checked) and
    fine-tune from it; its steps and seconds are reported as they were measured then.
    ``cache``: a folder of finished pre-trainings (``pretraining_key``); a variant whose pre-training
    is there fine-tunes from it (its steps and seconds as measured then), else it pre-trains and adds
    its own (written to a temporary name and renamed, so a cut-off run leaves no half model).
    """
    s = settings_of(name, tiny, timing)
    row = {"variant": name, "seed": seed, "recipe": s["recipe"],
           "shape": f"{s['hidden']}x{s['layers']}", "device": device, "status": "ok", "error": ""}
    try:
        import torch

        torch.set_num_threads(threads)
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            # Loss-curve PNGs are a by-product here; a machine without matplotlib still gives numbers.
            from nbutils.training.live import LiveCurves

            LiveCurves.save = lambda self, path: print(f"matplotlib missing: no figure {path}")
        from nbutils.checkpoints.random_bert import make_random_bert
        from nbutils.data.dataset import load_dataset
        from nbutils.training.finetune import FinetuneConfig, finetune

        ds = load_dataset(data_dir)
        with tempfile.TemporaryDirectory(prefix=f"ablate-{name}-{seed}-") as tmp:
            tmp = Path(tmp)
            reuse = bool(pretrained) and s["recipe"] != "none"
            model_dir = None if reuse else make_random_bert(Path(vocab_dir) / "vocab.txt", tmp / "init", hidden_size=s["hidden"],
                                         num_layers=s["layers"], num_heads=s["heads"],
                                         intermediate_size=s["intermediate"], max_position_embeddings=128, seed=seed)
            train_texts = ds.texts("train")
            if tiny:
                train_texts = train_texts[:s["max_train"]]
            row["pretrain_steps"], row["pretrain_s"], row["pretrain_metric"] = 0, 0.0, ""
            # CPU seconds of this process per stage (tokenizing, scoring, teacher fit included): with
            # one thread on a loaded machine they track what a quiet machine's wall clock would show.
            cpu0 = time.process_time()
            key = pretraining_key(s, seed)
            cached = Path(cache) / key if cache and key and not reuse else None
            with _cache_lock(cached) if cached is not None else contextlib.nullcontext():
                if cached is not None and (cached / "row.json").exists():
                    row.update(json.loads((cached / "row.json").read_text(encoding="utf-8")))
                    row["pretrain_metric"] = f"cached {row['pretrain_metric']}"
                    model_dir = cached / "model"
                elif reuse:
                    pre_metrics = reused_pretraining(pretrained, s)
                    row["pretrain_steps"] = pre_metrics["steps"]
                    row["pretrain_s"] = round(pre_metrics["train_runtime_s"], 2)
                    row["pretrain_metric"] = f"reused mlm_acc={pre_metrics['masked_token_accuracy']:.4f}"
                    model_dir = Path(pretrained) / "model"
                elif s["recipe"] != "none":
                    common = dict(max_steps=s["pt_steps"], batch_size=s["pt_batch"], learning_rate=s["pt_lr"],
                                  max_length=s["pt_max_length"], mlm_probability=s["mask"], dropout=s["pt_dropout"],
                                  warmup_ratio=s["pt_warmup"], heldout_size=s.get("heldout", 500), seed=seed,
                                  output_vocabulary=s["pt_vocab"],
                                  device=device, precision="fp32", headless=True, logging_steps=50)
                    if s["recipe"] == "electra":
                        from nbutils.pretraining.electra import ElectraConfig, electra_pretraining

                        cfg = ElectraConfig(**common, generator_layers=s["gen_layers"],
                                            discriminator_weight=s["disc_weight"])
                        pre = electra_pretraining(train_texts, model_dir, tmp / "pretrain", cfg)
                        row["pretrain_metric"] = f"rtd_acc={pre.metrics['replaced_token_accuracy']:.4f}"
                    else:
                        from nbutils.pretraining.mlm import PretrainConfig, continue_pretraining

                        pre = continue_pretraining(train_texts, model_dir, tmp / "pretrain", PretrainConfig(**common))
                        row["pretrain_metric"] = f"mlm_acc={pre.metrics['masked_token_accuracy']:.4f}"
                    row["pretrain_steps"] = pre.metrics["steps"]
                    row["pretrain_s"] = round(pre.metrics["train_runtime_s"], 2)
                    row["pretrain_ms_per_step"] = round(1000 * pre.metrics["train_runtime_s"] / max(pre.metrics["steps"], 1), 1)
                    model_dir = pre.model_dir
                    row["pretrain_cpu_s"] = round(time.process_time() - cpu0, 2)
                    if cached is not None:
                        import shutil

                        partial = cached.with_name(cached.name + ".partial")
                        shutil.rmtree(partial, ignore_errors=True)
                        shutil.copytree(model_dir, partial / "model")
                        keep = ("pretrain_steps", "pretrain_s", "pretrain_ms_per_step", "pretrain_cpu_s", "pretrain_metric")
                        (partial / "row.json").write_text(json.dumps({k: row[k] for k in keep}), encoding="utf-8")
                        os.replace(partial, cached)
            if "pretrain_cpu_s" not in row:
                row["pretrain_cpu_s"] = round(time.process_time() - cpu0, 2)
            cpu0 = time.process_time()
            teacher = None
            if s["distill_alpha"] > 0:
                from nbutils.training.distill import DistillConfig, SvmTeacher

                teacher = SvmTeacher(DistillConfig(alpha=s["distill_alpha"], folds=s["distill_folds"], temperature=s["distill_T"],
                                                   label_smoothing=s["label_smoothing"], seed=seed))
            extra = {"label_smoothing_factor": s["label_smoothing"]} if s["label_smoothing"] and teacher is None else {}
            cfg = FinetuneConfig(
                max_length=s["ft_max_length"], epochs=s["ft_epochs"], batch_size=s["ft_batch"], eval_batch_size=128,
                learning_rate=s["ft_lr"], weight_decay=0.01, warmup_ratio=s["ft_warmup"], eval_steps=s["ft_eval_steps"],
                early_stopping_patience=0, max_steps=s.get("ft_max_steps", -1),
                max_train_samples=s.get("max_train", 0), max_eval_samples=1000, max_test_samples=s.get("max_test", 0),
                seed=seed, device=device, precision="auto", headless=True, extra_training_args=extra,
            )
            t0 = time.perf_counter()
            result = finetune(ds, model_dir, tmp / "finetune", cfg, save_model=False, teacher=teacher)
            m = result.metrics
            row["finetune_cpu_s"] = round(time.process_time() - cpu0, 2)
            row.update(finetune_steps=m["train"]["global_step"], finetune_s=round(result.train_runtime_s, 2),
                       finetune_total_s=round(time.perf_counter() - t0, 2),
                       dev_acc=round(m["dev"]["accuracy"], 4), test_acc=round(m["test"]["accuracy"], 4),
                       test_macro_f1=round(m["test"]["macro_f1"], 4), precision=m["device"]["precision"],
                       finetune_ms_per_step=round(1000 * result.train_runtime_s / max(m["train"]["global_step"], 1), 1),
                       torch_threads=threads,
                       teacher_oof_acc=round(m["distillation"]["oof_accuracy"], 4) if teacher else "")
    except Exception as err:  # a failed run is a row that says so, never a silent gap
        row["status"] = "error"
        row["error"] = f"{type(err).__name__}: {err}".replace("\n", " ")[:500]
        traceback.print_exc()
    return row


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def summarize(rows: list[dict]) -> list[dict]:
    """Mean +- std (sample std over seeds) per variant, in VARIANTS order; errors counted, not averaged."""
    out = []
    for name in [n for n in VARIANTS if any(r["variant"] == n for r in rows)]:
        ok = [r for r in rows if r["variant"] == name and r["status"] == "ok"]
        errors = sum(1 for r in rows if r["variant"] == name and r["status"] != "ok")

        def stat(key, digits=4, rs=ok):
            vals = [float(r[key]) for r in rs if r.get(key) not in ("", None)]
            if not vals:
                return "", ""
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return round(statistics.mean(vals), digits), round(sd, digits)

        dev, dev_sd = stat("dev_acc")
        test, test_sd = stat("test_acc")
        test_vals = sorted(float(r["test_acc"]) for r in ok)
        out.append({
            "variant": name, "what": VARIANTS[name][0], "seeds": len(ok), "errors": errors,
            "pretrain_steps": ok[0]["pretrain_steps"] if ok else "", "finetune_steps": ok[0]["finetune_steps"] if ok else "",
            "pretrain_s": stat("pretrain_s", 1)[0], "finetune_s": stat("finetune_s", 1)[0],
            "pretrain_ms_per_step": stat("pretrain_ms_per_step", 1)[0],
            "finetune_ms_per_step": stat("finetune_ms_per_step", 1)[0],
            "pretrain_cpu_s": stat("pretrain_cpu_s", 1)[0], "finetune_cpu_s": stat("finetune_cpu_s", 1)[0],
            "dev_acc": dev, "dev_sd": dev_sd, "test_acc": test, "test_sd": test_sd,
            "test_median": round(statistics.median(test_vals), 4) if test_vals else "",
        })
    return out


def markdown(summary: list[dict], device: str) -> str:
    lines = [f"| variant | what | pre-training steps | fine-tuning steps | pre-training s ({device}) | "
             f"fine-tuning s ({device}) | dev acc | test acc | test median | seeds |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary:
        pm = lambda m, s: f"{100 * m:.2f} +- {100 * s:.2f}" if m != "" else "n/a"  # noqa: E731
        lines.append(f"| {r['variant']} | {r['what']} | {r['pretrain_steps']} | {r['finetune_steps']} | "
                     f"{r['pretrain_s']} | {r['finetune_s']} | {pm(r['dev_acc'], r['dev_sd'])} | "
                     f"{pm(r['test_acc'], r['test_sd'])} | "
                     f"{100 * r['test_median']:.2f} | {r['seeds']}{' (' + str(r['errors']) + ' failed)' if r['errors'] else ''} |"
                     if r["test_median"] != "" else
                     f"| {r['variant']} | {r['what']} | | | | | n/a | n/a | n/a | 0 ({r['errors']} failed) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=None, help="names (default: all, in priority order)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[42, 43, 44])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (separate processes)")
    parser.add_argument("--priority", type=int, default=6,
                        help="the first N variants run all their seeds before the others start")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", help="output folder (must not exist unless --resume)")
    parser.add_argument("--resume", action="store_true", help="keep the finished rows of --out/runs.csv")
    parser.add_argument("--tiny", action="store_true", help="a few steps on a few hundred titles: checks the code")
    parser.add_argument("--data", default=str(REPO / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO / "data/raw/bert-base-chinese-vocab"))
    parser.add_argument("--timing", type=int, default=0, metavar="K",
                        help="time K pre-training and K fine-tuning steps per variant (ms/step columns; "
                             "accuracies then mean nothing)")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--from-pretrained", default="", metavar="DIR",
                        help="fine-tune from this earlier pre-training (DIR/metrics.json + DIR/model, e.g. a demo "
                             "run's pretrain/) instead of pre-training again; variants that pre-train differently fail")
    parser.add_argument("--no-cache", action="store_true",
                        help="pre-train every run anew (default: variants that pre-train alike share --out/pretrain-cache)")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "SEED", "ROW_JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # one run, launched by a parallel sweep: the row goes to a JSON file
        name, seed, row_file = args.worker
        row = run_one(name, int(seed), args.device, args.data, args.vocab, args.tiny, args.threads, args.timing,
                      args.from_pretrained, args.cache)
        Path(row_file).write_text(json.dumps(row, ensure_ascii=False), encoding="utf-8")
        return 0

    if args.list:
        for name, (what, over) in VARIANTS.items():
            print(f"{name:22s} {what}  {over}")
        return 0
    if not args.out:
        parser.error("--out is required")
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; --list shows them")
    for folder, what in ((args.data, "--data"), (args.vocab, "--vocab")):
        if not Path(folder).is_dir():
            parser.error(f"{what} {folder} is not a folder (run `make data` first)")
    out = Path(args.out)
    rows: list[dict] = []
    if out.exists() and not args.resume:
        parser.error(f"{out} exists; pick a new --out or pass --resume")
    out.mkdir(parents=True, exist_ok=True)
    if args.resume and (out / "runs.csv").exists():
        with (out / "runs.csv").open(encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    done = {(r["variant"], int(r["seed"])) for r in rows}
    # The first --priority variants get all their seeds first; then the rest, seed-major (every one
    # gets its first seed before any gets its second): a sweep cut short keeps the most useful rows.
    head, rest = names[:args.priority], names[args.priority:]
    order = [(n, s) for s in args.seeds for n in head] + [(n, s) for s in args.seeds for n in rest]
    todo = [(n, s) for n, s in order if (n, s) not in done]
    if args.jobs > 1 and not args.no_cache and not args.from_pretrained:
        # Every distinct pre-training starts before any run that would reuse one (within the
        # priority variants, then within the rest), so parallel jobs do not queue on the same
        # pre-training (the cache lock covers what this order cannot).
        def leaders_first(runs):
            firsts, seen = [], set()
            for n, s in runs:
                key = pretraining_key(settings_of(n, args.tiny, args.timing), s) or (n, s)
                if key not in seen:
                    seen.add(key)
                    firsts.append((n, s))
            return firsts + [run for run in runs if run not in firsts]

        todo = leaders_first([r for r in todo if r[0] in head]) + leaders_first([r for r in todo if r[0] in rest])
    import torch
    import transformers

    where = torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device} ({where})")
    print(f"{len(todo)} runs ({len(names)} variants x {len(args.seeds)} seeds, {len(done)} already done) on "
          f"{args.device}, {args.jobs} at a time; writing {out}", flush=True)

    def record(row):
        rows.append(row)
        rows.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), int(r["seed"])))
        _write_csv(out / "runs.csv", rows, COLUMNS)
        summary = summarize(rows)
        _write_csv(out / "summary.csv", summary, list(summary[0]))
        (out / "summary.md").write_text(markdown(summary, args.device), encoding="utf-8")
        print(f"[{time.strftime('%H:%M:%S')}] {row['variant']} seed {row['seed']}: {row['status']} "
              f"test {row.get('test_acc', '')} dev {row.get('dev_acc', '')} "
              f"(pt {row.get('pretrain_s', '')} s / {row.get('pretrain_steps', '')} steps, "
              f"ft {row.get('finetune_s', '')} s / {row.get('finetune_steps', '')} steps) {row['error']}", flush=True)

    cache = "" if args.no_cache else str(out / "pretrain-cache")
    job_args = (args.device, args.data, args.vocab, args.tiny, args.threads, args.timing, args.from_pretrained, cache)
    if args.jobs <= 1:
        for name, seed in todo:
            record(run_one(name, seed, *job_args))
    else:
        # Each run in its own Python process (a main process: the masking collator's seeded RNG refuses
        # to run inside multiprocessing workers); threads here only wait for them.
        from concurrent.futures import ThreadPoolExecutor

        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}

        def launch(name, seed):
            row_file = out / "rows" / f"{name}-{seed}.json"
            row_file.parent.mkdir(exist_ok=True)
            cmd = [sys.executable, __file__, "--worker", name, str(seed), str(row_file), "--device", args.device,
                   "--data", args.data, "--vocab", args.vocab, "--threads", str(args.threads),
                   "--timing", str(args.timing), "--from-pretrained", args.from_pretrained, "--cache", cache,
                   *(["--tiny"] if args.tiny else [])]
            with (out / "rows" / f"{name}-{seed}.log").open("w") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
            if row_file.exists():
                return json.loads(row_file.read_text(encoding="utf-8"))
            return {"variant": name, "seed": seed, "device": args.device, "status": "error",
                    "error": f"worker exited {code} without a result; see {row_file.with_suffix('.log')}"}

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(launch, n, s) for n, s in todo]
            for fut in as_completed(futures):
                record(fut.result())
    print((out / "summary.md").read_text(encoding="utf-8"))
    failed = sum(r["status"] != "ok" for r in rows)
    if failed:
        print(f"{failed} run(s) failed: see the error column of {out / 'runs.csv'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
