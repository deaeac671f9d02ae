"""Hugging Face model folders: is this one complete and consistent (config, weights, a
tokenizer whose vocabulary fits the weights), and is a model source a local path or a hub id?

Every later notebook reads exactly one Hugging Face folder; this is where the "model learns
nothing" mismatches (wrong vocab for the weights, a checkpoint that never loaded) are caught
before any training time is spent.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.text.vocab import tokenizer_vocab_size

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_local_path(source: str | Path) -> bool:
    """True when ``source`` names a local path (it exists, starts with ``.``, ``/`` or ``~``, or
    has more than one ``/``); otherwise it may be a Hugging Face hub id like ``bert-base-chinese``
    or ``google-bert/bert-base-chinese``."""
    text = str(source)
    return Path(source).exists() or text.startswith((".", "/", "~")) or text.count("/") > 1


def _embedding_rows(model_dir: Path) -> int | None:
    """Rows of the word-embedding matrix in model.safetensors (header only, no weights loaded)."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(weights, framework="numpy") as fh:
        for key in fh.keys():
            if key.endswith("embeddings.word_embeddings.weight"):
                return fh.get_slice(key).get_shape()[0]
    return None


def check_model_dir(model_dir: str | Path) -> None:
    """Raise NbutilsError unless ``model_dir`` is a complete, consistent Hugging Face BERT folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NbutilsError(f"{model_dir}: model folder not found", fix="run notebook 01 (convert) first, or pass a model folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        hint = " (this looks like a Google TF checkpoint: convert it with `nbutils convert`)" if (model_dir / "bert_config.json").exists() else ""
        raise NbutilsError(f"{model_dir}: no config.json{hint}", fix="point at a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NbutilsError(f"{config_path}:{err.lineno}: invalid JSON ({err.msg})", fix="re-create the model folder") from None
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise NbutilsError(f"{model_dir}: no weights ({' / '.join(WEIGHT_FILES)})", fix="the folder is incomplete; convert or download it again")
    if not ((model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()):
        raise NbutilsError(f"{model_dir}: no tokenizer (tokenizer.json or vocab.txt)", fix="save the tokenizer into the model folder")
    vocab_size = config.get("vocab_size")
    tokens = tokenizer_vocab_size(model_dir)
    if tokens != vocab_size:
        raise NbutilsError(
            f"{model_dir}: the tokenizer has {tokens} tokens but config.json says vocab_size={vocab_size}: "
            "the vocabulary does not belong to these weights (the classic 'model learns nothing' mismatch)",
            fix="use the vocab.txt shipped with the checkpoint",
        )
    rows = _embedding_rows(model_dir)
    if rows is not None and rows != vocab_size:
        raise NbutilsError(
            f"{model_dir / 'model.safetensors'}: word embeddings have {rows} rows but config.json says vocab_size={vocab_size}",
            fix="config.json does not belong to these weights; convert or download the model again",
        )
