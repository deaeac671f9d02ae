"""Text to token ids for classification: load a model folder's tokenizer, check it fits the
weights, and cut texts of any length to ``max_length`` tokens.

Texts are tokenized once per split with the fast tokenizer *without* truncation, and the token
ids are then cut here (``head``, ``tail`` or ``head+tail``, Sun et al. 2019), so texts of any
length work and long documents keep their most useful parts. Training (``nbutils.train``),
prediction (``nbutils.prediction``) and ``benchmarks/bench_train.py`` share this code, so a
model predicts on exactly the ids it was trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from nbutils.errors import NbutilsError

TRUNCATIONS = ("head", "tail", "head+tail")


class Truncator:
    """Tokenize without truncation, then keep head / tail / head+tail of the token ids.

    Cutting ids (not characters) keeps exactly ``max_length`` tokens whatever the text, and a
    3,000-character article never reaches the model's 512-position limit.
    """

    def __init__(self, tokenizer, max_length: int, truncation: str = "head", head_tokens: int = 0):
        if truncation not in TRUNCATIONS:
            raise NbutilsError(f"unknown truncation {truncation!r}", fix=f"use one of {', '.join(TRUNCATIONS)}")
        self.tokenizer = tokenizer
        self.truncation = truncation
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < 100_000 and max_length > limit:
            raise NbutilsError(
                f"max_length={max_length} is longer than the model accepts ({limit} tokens)",
                fix=f"use max_length <= {limit}; long texts are cut by the truncation strategy",
            )
        self.max_length = max_length
        # Where the special tokens sit: [CLS] text [SEP] for BERT, found by probing, not assumed.
        empty = tokenizer("", add_special_tokens=True)["input_ids"]
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.n_prefix = next((i for i, (a, b) in enumerate(zip(empty, probe, strict=False)) if a != b), len(empty))
        self.n_suffix = len(empty) - self.n_prefix
        self.budget = max_length - len(empty)
        if self.budget < 1:
            raise NbutilsError(f"max_length={max_length} leaves no room for text", fix="use at least 8")
        default_head = round(self.budget * 128 / 510)
        self.head = min(self.budget, head_tokens or default_head)

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self.tokenizer(
            [str(t) for t in texts], add_special_tokens=True, truncation=False, verbose=False
        )["input_ids"]
        return [self.cut(ids) for ids in encoded]

    def cut(self, ids: list[int]) -> list[int]:
        end = len(ids) - self.n_suffix
        body = ids[self.n_prefix:end]
        if len(body) <= self.budget:
            return ids
        if self.truncation == "head":
            body = body[: self.budget]
        elif self.truncation == "tail":
            body = body[-self.budget:]
        else:
            tail = self.budget - self.head
            body = body[: self.head] + (body[-tail:] if tail else [])
        return ids[: self.n_prefix] + body + ids[end:]


class EncodedTexts:
    """A torch map-style dataset of token ids (+ labels): what the collator pads per batch."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None = None, targets=None):
        self.input_ids = input_ids
        self.labels = None if labels is None else [int(x) for x in labels]
        # a teacher's class probabilities per example (nbutils.distill): labels become [label, p...]
        self.targets = targets

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
            if self.targets is not None:
                item["labels"] = [float(self.labels[i]), *map(float, self.targets[i])]
        return item


_ENCODE_CACHE: dict[str, list[list[int]]] = {}


def encode_cached(truncator: Truncator, texts: Sequence[str], cache_key: str) -> list[list[int]]:
    """Tokenize once per (tokenizer, settings, texts): freezing runs reuse the same ids."""
    digest = hashlib.sha1(cache_key.encode())
    digest.update(f"{truncator.max_length}|{truncator.truncation}|{truncator.head}".encode())
    for text in texts:
        digest.update(str(text).encode("utf-8", "surrogatepass") + b"\0")
    key = digest.hexdigest()
    if key not in _ENCODE_CACHE:
        if len(_ENCODE_CACHE) > 16:
            _ENCODE_CACHE.clear()
        _ENCODE_CACHE[key] = truncator(texts)
    return _ENCODE_CACHE[key]


def load_tokenizer(model_dir: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise NbutilsError(
            f"cannot load a tokenizer from {model_dir}: {err}",
            fix="the folder needs tokenizer.json or vocab.txt (+ tokenizer_config.json)",
        ) from err


def check_vocab_matches(model, tokenizer, model_dir) -> None:
    """A tokenizer with more ids than the embedding table silently trains on garbage (or crashes)."""
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise NbutilsError(
            f"{model_dir}: the tokenizer has {len(tokenizer)} tokens but the model's embedding table "
            f"has {n_embed} rows: vocabulary and checkpoint do not belong together",
            fix="use the vocab.txt shipped with this checkpoint (for bert-base-chinese: 21,128 tokens)",
        )
