"""Resuming fine-tuning safely: a run's fingerprint (model, data, settings, what trains, the
precision chosen) is saved next to its checkpoints, and a restart resumes only when the new run
has the same one; otherwise an error lists what differs.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict
from pathlib import Path

from nbutils.core.errors import NbutilsError

FINGERPRINT = "run_fingerprint.json"  # in checkpoints/: what the checkpoints were trained on
TRAINER_STATE = "trainer_state.json"  # transformers' TRAINER_STATE_NAME: written last in a checkpoint
# Config fields that change how a run looks or where files go, not what it learns: a resume may
# change them freely.
COSMETIC_FIELDS = ("headless", "keep_checkpoints", "dataloader_num_workers")


def last_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder in ``ckpt_dir``, or None.

    Trainer writes a checkpoint's ``trainer_state.json`` last, so a folder without a readable one
    was cut off mid-save (Kernel > Interrupt, a kill): resuming from it would restart the step
    count at 0 or fail on the missing optimizer state. It is skipped for the one before it.
    """
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return None
    steps = sorted((int(m.group(1)), path) for path in ckpt_dir.iterdir()
                   if path.is_dir() and (m := re.fullmatch(r"checkpoint-(\d+)", path.name)))
    for _, path in reversed(steps):
        try:
            json.loads((path / TRAINER_STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(path)
    return None


def training_setup(model, optimizer=None) -> dict:
    """What ``prepare_model`` and ``param_groups`` decided, as a fingerprint can compare it: which
    parameters train and, for a custom optimizer, each group's parameters, lr and weight decay."""

    def digest(names) -> str:
        return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]

    named = list(model.named_parameters())
    setup = {"trainable": digest(n for n, p in named if p.requires_grad)}
    if optimizer is not None:
        name_of = {id(p): n for n, p in named}
        setup["param_groups"] = [
            {"params": digest(name_of.get(id(p), "?") for p in g["params"]), "lr": g["lr"],
             "weight_decay": g.get("weight_decay", 0.0)}
            for g in optimizer.param_groups]
    return setup


def run_fingerprint(model_dir, dataset, config, split_sizes: dict, setup: dict | None = None,
                    choice=None) -> dict:
    """What a checkpoint was trained on: resuming with anything else would mix two runs."""
    path = Path(model_dir)
    settings = {k: v for k, v in asdict(config).items() if k not in COSMETIC_FIELDS}
    fingerprint = {
        "model_dir": str(path.resolve()) if path.exists() else str(model_dir),
        # the data's content, not its path: the same files elsewhere may resume, shifted labels
        # with unchanged row counts may not (a subsample is fixed by this plus config's seed/sizes)
        "data_content": dataset.content_fingerprint() if hasattr(dataset, "content_fingerprint") else None,
        "split_sizes": dict(split_sizes),
        "config": settings,
        "training_setup": setup or {},
        # what precision="auto" became on this machine: another host may choose differently
        "device": {"device": choice.device, "precision": choice.precision} if choice else {},
    }
    # Round-trip through JSON so the comparison with the saved file sees the same types
    # (tuples become lists, extra_training_args values become strings if not JSON).
    return json.loads(json.dumps(fingerprint, default=str))


def resume_problem(ckpt_dir: Path, fingerprint: dict) -> str | None:
    """Why the checkpoints in ``ckpt_dir`` must not be resumed with ``fingerprint`` (None: they may)."""
    saved_path = ckpt_dir / FINGERPRINT
    if not saved_path.is_file():
        return (f"{ckpt_dir} holds checkpoints but no {FINGERPRINT}: "
                "cannot tell which model, data and settings they were trained with")
    saved = json.loads(saved_path.read_text(encoding="utf-8"))
    if "training_setup" not in saved:
        return (f"{saved_path} was written by an older nbutils that did not record the trainable "
                "parameters and precision, so resuming cannot be checked")
    diffs = []
    for key in sorted(set(saved) | set(fingerprint)):
        old, new = saved.get(key), fingerprint.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            diffs += [f"{key}.{k}: {old.get(k)!r} -> {new.get(k)!r}"
                      for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        elif old != new:
            diffs.append(f"{key}: {old!r} -> {new!r}")
    if diffs:
        return f"the checkpoints in {ckpt_dir} belong to a different run ({'; '.join(diffs)})"
    return None


def check_resume(ckpt_dir: Path, fingerprint: dict) -> None:
    """Refuse to resume checkpoints of a different model, dataset or configuration."""
    problem = resume_problem(ckpt_dir, fingerprint)
    if problem:
        raise NbutilsError(f"cannot resume: {problem}",
                           fix=f"use a new out_dir for the changed run, or delete {ckpt_dir} to start over "
                               "(or pass overwrite=True)")
