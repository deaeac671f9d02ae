"""Text to token ids for classification: load a model folder's tokenizer, check it fits the
weights, and cut texts of any length to ``max_length`` tokens.

Token ids are cut here (``head``, ``tail`` or ``head+tail``, Sun et al. 2019), so texts of any
length work and long documents keep their most useful parts; the ids equal those of tokenizing
the whole text and cutting, but only the characters that can reach the kept tokens are tokenized
(``Truncator``). Training tokenizes per batch (``TextsToEncode`` + ``TokenizingCollator``): memory
holds one batch of ids, not the whole corpus's, and the first step does not wait for every
text to be tokenized. Training (``nbutils.training.finetune``),
prediction (``nbutils.inference.predict``) and ``benchmarks/bench_train.py`` share this code, so a
model predicts on exactly the ids it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from nbutils.core.errors import NbutilsError

TRUNCATIONS = ("head", "tail", "head+tail")


class Truncator:
    """Token ids of texts cut to ``max_length``: head / tail / head+tail of the token ids.

    Cutting ids (not characters) keeps exactly ``max_length`` tokens whatever the text, and a
    3,000-character article never reaches the model's 512-position limit. The ids are exactly
    those of tokenizing the whole text and then cutting, but a long text is first cut to a
    window of characters at each kept end (``window_chars``), so the discarded middle is never
    tokenized: for BERT's WordPiece pipeline (per-character normalization, words split at
    whitespace, punctuation and CJK characters, each word tokenized alone) every word that ends
    inside the window gets the same tokens as in the whole text; only the word cut by the window
    edge may differ, so its tokens are never used. When a window holds too few complete words,
    it doubles until it does or covers the text. Tokenizers whose pipeline is not of that kind
    (or slow tokenizers) tokenize the whole text, as before.
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
        self._specials_before, self._specials_after = empty[:self.n_prefix], empty[self.n_prefix:]
        self.windows = word_local(tokenizer)
        # First guess of characters per kept end: Chinese news runs ~0.9 tokens per character.
        self.window_chars = int(1.5 * self.budget) + 16

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return self.cut_with_counts(texts)[0]

    def cut_with_counts(self, texts: Sequence[str], *,
                        whole: bool = False) -> tuple[list[list[int]], list[int | None]]:
        """The cut ids of every text, and its whole token count where the whole text was
        tokenized (None where only its windows were: such a text is longer than ``max_length``).
        ``whole`` tokenizes every text whole, so every count is known."""
        texts = [str(t) for t in texts]
        if whole or not self.windows:
            whole = self._encode(texts)
            return [self.cut(ids) for ids in whole], [len(ids) for ids in whole]
        out: list[list[int] | None] = [None] * len(texts)
        counts: list[int | None] = [None] * len(texts)
        todo = list(range(len(texts)))
        window = self.window_chars
        while todo:
            short = [i for i in todo if len(texts[i]) <= 2 * window]  # the windows would overlap
            for i, ids in zip(short, self._encode([texts[i] for i in short]), strict=True):
                out[i], counts[i] = self.cut(ids), len(ids)
            long = [i for i in todo if len(texts[i]) > 2 * window]
            todo = []
            if long:
                for i, ids in zip(long, self._windowed([texts[i] for i in long], window), strict=True):
                    if ids is None:
                        todo.append(i)
                    else:
                        out[i] = ids
            window *= 2
        return out, counts  # type: ignore[return-value]

    def cut(self, ids: list[int]) -> list[int]:
        """Keep the head / tail / head+tail of a whole text's ids (special tokens kept)."""
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

    def _encode(self, texts: list[str], words: bool = False):
        if not texts:
            return [] if not words else ([], [])
        enc = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                             return_attention_mask=False, return_token_type_ids=False)
        if not words:
            return enc["input_ids"]
        return enc["input_ids"], [enc.word_ids(i) for i in range(len(texts))]

    def _windowed(self, texts: list[str], window: int) -> list[list[int] | None]:
        """Cut ids from the first / last ``window`` characters; None where they are not enough."""
        need_head = {"head": self.budget, "tail": 0, "head+tail": self.head}[self.truncation]
        need_tail = self.budget - need_head
        heads = tails = None
        if need_head:
            heads = [self._exact_tokens(ids, words, from_start=True)
                     for ids, words in zip(*self._encode([t[:window] for t in texts], words=True), strict=True)]
        if need_tail:
            tails = [self._exact_tokens(ids, words, from_start=False)
                     for ids, words in zip(*self._encode([t[-window:] for t in texts], words=True), strict=True)]
        out = []
        for i in range(len(texts)):
            head = heads[i] if heads is not None else []
            tail = tails[i] if tails is not None else []
            # more exact tokens than the budget: the whole text is longer, so it is cut
            if len(head) < need_head or len(tail) < need_tail or len(head) + len(tail) <= self.budget:
                out.append(None)
                continue
            body = head[:need_head] + (tail[-need_tail:] if need_tail else [])
            out.append(self._specials_before + body + self._specials_after)
        return out

    def _exact_tokens(self, ids: list[int], words: list, *, from_start: bool) -> list[int]:
        """The window's body tokens, less those of the word the window edge may have cut."""
        body = ids[self.n_prefix:len(ids) - self.n_suffix]
        body_words = words[self.n_prefix:len(ids) - self.n_suffix]
        if not body:
            return []
        edge = body_words[-1] if from_start else body_words[0]
        keep = [w != edge for w in body_words]
        if from_start:
            n = keep.index(False) if False in keep else len(body)
            return body[:n]
        n = len(keep) - keep[::-1].index(False) if False in keep else 0
        return body[n:]


# Pipeline parts that act on one character (normalizers) or split text into words at
# whitespace / punctuation / CJK characters (pre-tokenizers) and tokenize each word alone (model):
# with these, a word that ends inside a window of the text gets the same tokens as in the whole.
_LOCAL_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFD", "NFKD", "NFC", "NFKC", "StripAccents"}
_LOCAL_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation"}


def word_local(tokenizer) -> bool:
    """Whether ``tokenizer`` (a fast WordPiece tokenizer of the BERT kind) allows windowed cutting."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    try:
        spec = json.loads(backend.to_str())
    except (ValueError, TypeError, AttributeError):
        return False

    def parts(node, key):
        if node is None:
            return []
        if node.get("type") == "Sequence":
            return [p for child in node.get(key, []) for p in parts(child, key)]
        return [node.get("type")]

    normalizers = parts(spec.get("normalizer"), "normalizers")
    pre_tokenizers = parts(spec.get("pre_tokenizer"), "pretokenizers")
    return (bool(pre_tokenizers) and set(normalizers) <= _LOCAL_NORMALIZERS
            and set(pre_tokenizers) <= _LOCAL_PRE_TOKENIZERS
            and (spec.get("model") or {}).get("type") == "WordPiece")


# What prediction tokenizes at once. The fast tokenizer's whole-text encodings (for n_tokens)
# take a few hundred bytes per character while they exist: on ~900-character articles (128x2
# model, 471 MB once loaded) chunks of 250k characters (~270 articles) peaked at 660 MB, chunks
# of 1M characters at 841 MB. 100k articles took 0.95x the time of the old 1M-character in-memory
# way (benchmarks/bench_predict_scale.py, load 3-5).
CHUNK_TEXTS = 4096
CHUNK_CHARS = 250_000


def char_chunks(texts: Sequence[str], max_texts: int = CHUNK_TEXTS, max_chars: int = CHUNK_CHARS):
    """Index ranges ``(start, end)`` over ``texts`` of at most ``max_texts`` texts and (beyond
    the first text) ``max_chars`` characters: what is tokenized at once, so memory stays flat."""
    start, chars = 0, 0
    for i, text in enumerate(texts):
        if i > start and (i - start >= max_texts or chars + len(text) > max_chars):
            yield start, i
            start, chars = i, 0
        chars += len(text)
    if start < len(texts):
        yield start, len(texts)


def iter_chunks(texts: Iterable[str], max_texts: int = CHUNK_TEXTS,
                max_chars: int = CHUNK_CHARS) -> Iterator[list[str]]:
    """:func:`char_chunks` for an iterable read as it goes (a file's lines): the same chunks, as
    lists, the next one read only when asked for."""
    if max_texts < 1 or max_chars < 1:
        raise NbutilsError(f"chunks of max_texts={max_texts}, max_chars={max_chars}",
                           fix="use positive chunk sizes")
    chunk: list[str] = []
    chars = 0
    for text in texts:
        if chunk and (len(chunk) >= max_texts or chars + len(text) > max_chars):
            yield chunk
            chunk, chars = [], 0
        chunk.append(text)
        chars += len(text)
    if chunk:
        yield chunk


class _LabelledItems:
    """The labels of a map-style dataset's items, and a teacher's class probabilities per example
    (``nbutils.training.distill``), with which an item's labels become ``[label, p...]``."""

    def __init__(self, labels: Sequence[int] | None, targets=None):
        # a label id per item, or (multi-label) a row of 0/1 floats, the binary cross-entropy targets
        self.labels = None if labels is None else [[float(v) for v in x] if isinstance(x, (list, tuple)) else int(x)
                                                   for x in labels]
        self.targets = targets

    def _labelled(self, item: dict, i: int) -> dict:
        if self.labels is not None:
            item["labels"] = self.labels[i]
            if self.targets is not None:
                item["labels"] = [float(self.labels[i]), *map(float, self.targets[i])]
        return item


class TextsToEncode(_LabelledItems):
    """A torch map-style dataset of texts (+ labels, + a teacher's targets), tokenized per batch
    by :class:`TokenizingCollator`: nothing is tokenized before training starts, and memory
    holds one batch of ids. ``texts`` may be a list or a disk-backed ``TextColumn``."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int] | None, truncator: Truncator, targets=None):
        super().__init__(labels, targets)
        self.texts = texts
        self.truncator = truncator
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict:
        return self._labelled({"text": self.texts[i]}, i)

    def token_lengths(self) -> list[int]:
        """Ids per text after cutting (for length-grouped batches), computed once in chunks."""
        if self._lengths is None:
            chunk = 2048  # texts read and tokenized at once (a list or a TextColumn slice)
            self._lengths = [len(ids) for a in range(0, len(self.texts), chunk)
                             for ids in self.truncator(list(self.texts[a:a + chunk]))]
        return self._lengths


class TokenizingCollator:
    """Tokenize and cut a batch's texts (one fast-tokenizer call), then pad with ``pad_collator``
    (e.g. ``DataCollatorWithPadding``)."""

    def __init__(self, truncator: Truncator, pad_collator):
        self.truncator = truncator
        self.pad_collator = pad_collator

    def __call__(self, features: list[dict]) -> dict:
        ids = self.truncator([f["text"] for f in features])
        return self.pad_collator([{**{k: v for k, v in f.items() if k != "text"}, "input_ids": x}
                                  for f, x in zip(features, ids, strict=True)])


class EncodedTexts(_LabelledItems):
    """A torch map-style dataset of token ids (+ labels): what the collator pads per batch."""

    def __init__(self, input_ids: list[list[int]], labels: Sequence[int] | None = None, targets=None):
        super().__init__(labels, targets)
        self.input_ids = input_ids

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict:
        return self._labelled({"input_ids": self.input_ids[i]}, i)


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
