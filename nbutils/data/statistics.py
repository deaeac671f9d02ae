"""Statistics for the data exploration notebook: class balance, lengths, tokenizer coverage,
short texts, characteristic n-grams and example tables.

Everything here is a plain function of a DataFrame (columns ``text``, ``label`` as int id,
``split``) or of arrays, so each answer can be checked on a hand-made input. Duplicates and
cross-split leakage are not computed here: ``Dataset.quality()`` in ``nbutils.data.dataset`` owns them,
as do split sizes, class counts and stratified subsampling (``sizes``, ``class_counts``,
``subsample``).

Lengths that decide truncation are counted in the model's WordPiece tokens, not characters:
a headline of 20 characters with a few English words or numbers can be more or fewer tokens,
and ``max_length`` is a token budget that also pays for ``[CLS]`` and ``[SEP]``.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbutils.core.errors import NbutilsError
from nbutils.text.tokenization import iter_chunks

MAX_LENGTH_CANDIDATES = (32, 64, 128, 256, 512)
PERCENTILES = (50, 90, 95, 99)
BERT_SPECIAL_TOKENS = 2  # [CLS] text [SEP]
BERT_POSITION_LIMIT = 512  # bert-base-chinese's max_position_embeddings

RECOMMENDATION_RULE = (
    "smallest multiple of {multiple} that fits {coverage:.0%} of the train texts in "
    "WordPiece tokens plus {special} special tokens ([CLS], [SEP]), capped at {limit}"
)


# --- balance -------------------------------------------------------------------------------


def imbalance_ratio(counts: Iterable[int]) -> float | None:
    """Largest class count divided by the smallest (None when a class has no texts at all)."""
    values = [int(c) for c in counts]
    if not values:
        raise NbutilsError("imbalance_ratio needs at least one class count")
    smallest = min(values)
    return None if smallest == 0 else max(values) / smallest


# --- several labels per text (multi-label) --------------------------------------------------


def label_cardinality(label_matrix) -> dict[str, Any]:
    """How many labels the texts carry: mean (label cardinality), mean over the number of labels
    (label density), the largest count, texts per count, and the number of distinct label sets."""
    matrix = np.asarray(label_matrix, dtype=bool)
    if matrix.ndim != 2 or not len(matrix):
        raise NbutilsError("label_cardinality needs a non-empty rows x labels matrix")
    per_text = matrix.sum(axis=1)
    values, counts = np.unique(per_text, return_counts=True)
    return {
        "texts": int(len(matrix)),
        "cardinality": float(per_text.mean()),
        "density": float(per_text.mean() / matrix.shape[1]) if matrix.shape[1] else 0.0,
        "max_labels": int(per_text.max()),
        "texts_by_label_count": {str(int(v)): int(c) for v, c in zip(values, counts, strict=True)},
        "distinct_label_sets": int(len(np.unique(matrix, axis=0))),
    }


def label_cooccurrence(label_matrix, label_names: Sequence[str]) -> pd.DataFrame:
    """Texts carrying both labels of each pair (the diagonal: texts carrying the label)."""
    matrix = np.asarray(label_matrix, dtype=np.int64)
    names = pd.Index([str(n) for n in label_names], name="label")
    return pd.DataFrame(matrix.T @ matrix, index=names, columns=names)


def top_label_pairs(cooccurrence: pd.DataFrame, top: int = 10) -> list[dict[str, Any]]:
    """The label pairs most often on one text, with the share of each label's texts they make."""
    values = cooccurrence.to_numpy()
    names = list(cooccurrence.index)
    pairs = [(int(values[i, j]), i, j) for i in range(len(names)) for j in range(i + 1, len(names))
             if values[i, j] > 0]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"labels": [names[i], names[j]], "texts": n,
             "share_of_first": n / values[i, i] if values[i, i] else 0.0,
             "share_of_second": n / values[j, j] if values[j, j] else 0.0}
            for n, i, j in pairs[:top]]


# --- lengths --------------------------------------------------------------------------------


def char_lengths(texts: Iterable[str]) -> np.ndarray:
    """Length of each text in Unicode characters (code points), as an int array."""
    return np.fromiter((len(t) for t in texts), dtype=np.int64)


@dataclass(frozen=True)
class TokenCounts:
    """Per text: WordPiece tokens without special tokens, and how many of them are ``[UNK]``."""

    tokens: np.ndarray
    unknown: np.ndarray


# A batch holds at most this many characters: a tokenizer's output takes ~100 bytes per token,
# so 8,192 articles of 900 characters at once would take ~0.7 GB; titles still go 8,192 at a time.
BATCH_CHARS = 1_000_000


def text_batches(texts: Iterable[str], batch_size: int, max_chars: int = BATCH_CHARS) -> Iterable[list[str]]:
    """``texts`` in lists of at most ``batch_size`` texts and (beyond the first) ``max_chars``:
    prediction's chunking (:func:`nbutils.text.tokenization.iter_chunks`), read as it goes."""
    return iter_chunks(texts, batch_size, max_chars)


def count_tokens(texts: Iterable[str], tokenizer, *, batch_size: int = 8192) -> TokenCounts:
    """Tokenise ``texts`` in batches with a fast tokenizer; no truncation, no special tokens.

    Batches (capped in texts and in characters) keep memory flat on long articles; the fast
    (Rust) tokenizer parallelises within a batch, so 50k headlines take about a second.
    """
    unk_id = tokenizer.unk_token_id
    tokens: list[int] = []
    unknown: list[int] = []
    for batch in text_batches(texts, batch_size):
        encoded = tokenizer(
            batch,
            add_special_tokens=False,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )["input_ids"]
        tokens.extend(len(ids) for ids in encoded)
        unknown.extend(ids.count(unk_id) for ids in encoded)
    return TokenCounts(np.asarray(tokens, dtype=np.int64), np.asarray(unknown, dtype=np.int64))


def add_length_columns(frame: pd.DataFrame, tokenizer) -> pd.DataFrame:
    """A copy of ``frame`` with ``chars``, ``tokens`` and ``unk`` (unknown tokens) per text."""
    counts = count_tokens(frame["text"].tolist(), tokenizer)
    out = frame.copy()
    out["chars"] = char_lengths(out["text"])
    out["tokens"] = counts.tokens
    out["unk"] = counts.unknown
    return out


def percentiles(values: Iterable[float], qs: Sequence[float] = PERCENTILES) -> dict[str, float]:
    """``min``, ``p<q>`` for each q (linear interpolation), ``max`` and ``mean`` of ``values``."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if arr.size == 0:
        raise NbutilsError("cannot take percentiles of an empty list of lengths")
    out: dict[str, float] = {"min": float(arr.min())}
    out.update({f"p{q:g}": float(np.percentile(arr, q)) for q in qs})
    out["max"] = float(arr.max())
    out["mean"] = float(arr.mean())
    return out


def percentiles_by(
    frame: pd.DataFrame, column: str, by: str, qs: Sequence[float] = PERCENTILES
) -> dict[str, dict[str, float]]:
    """``percentiles`` of ``frame[column]`` for each value of ``frame[by]`` (in sorted order)."""
    return {
        str(key): percentiles(group[column].to_numpy(), qs)
        for key, group in frame.groupby(by, sort=True)
    }


def fit_shares(
    token_lengths: Iterable[int],
    max_lengths: Sequence[int] = MAX_LENGTH_CANDIDATES,
    *,
    special_tokens: int = BERT_SPECIAL_TOKENS,
) -> dict[int, float]:
    """Share of texts whose tokens plus the special tokens fit in each ``max_length``."""
    arr = np.asarray(
        list(token_lengths) if not isinstance(token_lengths, np.ndarray) else token_lengths
    )
    if arr.size == 0:
        raise NbutilsError("cannot compute fit shares of an empty list of lengths")
    return {int(m): float(np.mean(arr + special_tokens <= m)) for m in max_lengths}


def recommend_max_length(
    token_lengths: Iterable[int],
    *,
    coverage: float = 0.99,
    multiple: int = 8,
    special_tokens: int = BERT_SPECIAL_TOKENS,
    limit: int = BERT_POSITION_LIMIT,
) -> int:
    """The smallest multiple of ``multiple`` that fits at least ``coverage`` of the texts.

    A text fits when its tokens plus ``special_tokens`` are at most max_length. The answer is
    capped at ``limit`` (the model's position embeddings): longer texts must be truncated or
    split whatever we choose. Multiples of 8 keep padded batches friendly to tensor cores, and
    with dynamic padding a slightly generous max_length costs nothing on shorter batches.
    """
    if not 0 < coverage <= 1:
        raise NbutilsError(f"coverage must be in (0, 1], got {coverage}")
    arr = np.sort(
        np.asarray(
            list(token_lengths) if not isinstance(token_lengths, np.ndarray) else token_lengths
        )
    )
    if arr.size == 0:
        raise NbutilsError("cannot recommend a max_length from an empty list of lengths")
    # the k-th shortest text, k = ceil(coverage * n): fitting it fits at least coverage * n texts
    needed = int(arr[math.ceil(coverage * arr.size) - 1]) + special_tokens
    rounded = max(multiple, math.ceil(needed / multiple) * multiple)
    return min(rounded, limit)


def recommendation_rule(
    *,
    coverage: float = 0.99,
    multiple: int = 8,
    special_tokens: int = BERT_SPECIAL_TOKENS,
    limit: int = BERT_POSITION_LIMIT,
) -> str:
    """The rule ``recommend_max_length`` applies, in words (written next to its answer)."""
    return RECOMMENDATION_RULE.format(
        multiple=multiple, coverage=coverage, special=special_tokens, limit=limit
    )


# --- tokenizer coverage ---------------------------------------------------------------------


def unk_rates(frame: pd.DataFrame, label_names: Sequence[str]) -> dict[str, Any]:
    """Share of tokens that are ``[UNK]``, overall and per class, and of texts with any ``[UNK]``.

    ``frame`` needs the ``tokens`` and ``unk`` columns of ``add_length_columns``.
    """
    total = int(frame["tokens"].sum())
    by_class = frame.groupby("label")[["tokens", "unk"]].sum()
    return {
        "unk_tokens": int(frame["unk"].sum()),
        "total_tokens": total,
        "unk_rate": float(frame["unk"].sum() / total) if total else 0.0,
        "texts_with_unk": float((frame["unk"] > 0).mean()) if len(frame) else 0.0,
        "unk_rate_by_class": {
            label_names[int(label)]: float(row.unk / row.tokens) if row.tokens else 0.0
            for label, row in by_class.iterrows()
        },
    }


def unknown_pieces(
    texts: Iterable[str], tokenizer, *, top: int = 20, batch_size: int = 8192
) -> list[tuple[str, int]]:
    """The most frequent pieces of text the tokenizer maps to ``[UNK]``, with their counts.

    Uses the fast tokenizer's offsets, so the piece is the original text (an emoji, a rare
    character, or a whole word the WordPiece vocabulary cannot spell).
    """
    unk_id = tokenizer.unk_token_id
    counter: Counter[str] = Counter()
    for batch in text_batches(texts, batch_size):
        encoded = tokenizer(
            batch,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        for text, ids, offsets in zip(
            batch, encoded["input_ids"], encoded["offset_mapping"], strict=True
        ):
            for token_id, (begin, end) in zip(ids, offsets, strict=True):
                if token_id == unk_id:
                    counter[text[begin:end]] += 1
    return counter.most_common(top)


def char_width(char: str) -> str:
    """``full`` (a full-width form with a half-width twin, e.g. ``Ａ``, ``１``, ``，`` U+FF0C),
    ``half`` (ASCII and half-width forms), ``wide`` (CJK ideographs and CJK punctuation, which
    have no half-width twin) or ``other``."""
    width = unicodedata.east_asian_width(char)
    if width == "F":
        return "full"
    if width in ("Na", "H"):
        return "half"
    if width == "W":
        return "wide"
    return "other"


def char_width_shares(texts: Iterable[str]) -> dict[str, float]:
    """Share of non-space characters that are full-width / half-width / wide / other, and the
    share of texts containing any full-width form.

    Full-width letters and digits are different WordPiece tokens from their ASCII twins, so a
    corpus that mixes both splits its statistics; NFKC normalisation folds them together.
    """
    counts: Counter[str] = Counter()
    width_of: dict[str, str] = {}  # one unicodedata lookup per distinct character, not per character
    texts_with_full = 0
    n_texts = 0
    for text in texts:
        n_texts += 1
        has_full = False
        for char, n in Counter(text).items():
            if char.isspace():
                continue
            kind = width_of.get(char)
            if kind is None:
                kind = width_of[char] = char_width(char)
            counts[kind] += n
            has_full = has_full or kind == "full"
        texts_with_full += has_full
    total = sum(counts.values())
    shares = {
        kind: (counts[kind] / total if total else 0.0) for kind in ("full", "half", "wide", "other")
    }
    shares["texts_with_full_width"] = texts_with_full / n_texts if n_texts else 0.0
    return shares


def char_length_percentiles(dataset, qs: Sequence[float] = PERCENTILES) -> dict[str, dict[str, float]]:
    """``percentiles`` of the character length of *every* text, per split, read from disk in
    blocks: what a sample cannot promise (the longest article, the exact mean)."""
    lengths = dataset.text_column().char_lengths()
    splits = dataset.split_array()
    return {s: percentiles(lengths[splits == s], qs) for s in dict.fromkeys(splits)}


# --- quality --------------------------------------------------------------------------------


def short_texts(frame: pd.DataFrame, min_chars: int) -> pd.DataFrame:
    """Texts with fewer than ``min_chars`` non-space characters (empty ones included), with
    their split, label, original row index and non-space length, shortest first."""
    stripped = frame["text"].str.replace(r"\s+", "", regex=True).str.len()
    found = frame.loc[stripped < min_chars, ["split", "label", "text"]].copy()
    found.insert(0, "row", found.index.to_numpy(dtype=np.int64))
    found["chars"] = stripped[found.index].astype(int)
    return found.sort_values(["chars", "row"], kind="stable").reset_index(drop=True)


def short_texts_of(dataset, min_chars: int) -> pd.DataFrame:
    """``short_texts`` of a :class:`~nbutils.data.dataset.Dataset`, streaming its texts from disk: the
    same rows (and ``row`` numbers) as ``short_texts(dataset.frame, ...)`` without the frame."""
    rows, texts = [], []
    for row, text in enumerate(dataset.text_column()):
        if len(text) >= min_chars and sum(map(len, text.split())) >= min_chars:
            continue  # str.split() and the regex \s agree on what is whitespace
        rows.append(row)
        texts.append(text)
    rows = np.asarray(rows, dtype=np.int64)
    text_array = np.empty(len(texts), dtype=object)
    text_array[:] = texts
    found = pd.DataFrame({"split": dataset.split_array()[rows], "label": dataset.label_array()[rows],
                          "text": text_array}, index=rows)
    return short_texts(found, min_chars)


def short_text_summary(
    frame: pd.DataFrame, min_chars: int, label_names: Sequence[str], *, max_examples: int = 5
) -> dict[str, Any]:
    """Counts of empty and short texts per split, with a few examples (label names, not ids).

    ``frame`` is a DataFrame (text, label, split) or a Dataset, whose texts are then streamed.
    """
    found = short_texts(frame, min_chars) if isinstance(frame, pd.DataFrame) else short_texts_of(frame, min_chars)
    # "row" (a position in the combined table) would be mistaken for a line of the user's file
    examples = found.head(max_examples).drop(columns="row")
    examples["label"] = [label_names[i] for i in examples["label"]]
    return {
        "min_chars": int(min_chars),
        "empty": int((found["chars"] == 0).sum()),
        "short": int(len(found)),
        "short_by_split": {
            str(k): int(v) for k, v in found["split"].value_counts().sort_index().items()
        },
        "examples": examples.to_dict(orient="records"),
    }


# --- what separates the classes -------------------------------------------------------------


def characteristic_ngrams(
    texts: Sequence[str],
    labels: Sequence[int],
    label_names: Sequence[str],
    *,
    ngram_range: tuple[int, int] = (1, 2),
    top_k: int = 10,
    min_df: int = 2,
) -> dict[str, list[tuple[str, float]]]:
    """Per class, the character n-grams most over-represented in it (one-vs-rest chi-squared).

    Chi-squared alone also rewards n-grams that are conspicuously *absent* from a class; only
    n-grams seen in the class more often than expected are kept. Whitespace-only n-grams are
    dropped. This is the signal a bag-of-characters baseline can exploit.
    """
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.feature_selection import chi2

    labels = np.asarray(labels)
    if len(texts) != len(labels):
        raise NbutilsError(f"{len(texts)} texts but {len(labels)} labels")
    vectorizer = CountVectorizer(
        analyzer="char", ngram_range=ngram_range, min_df=min_df, lowercase=True
    )
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError as err:  # empty vocabulary: too few texts for min_df
        raise NbutilsError(
            f"no character n-gram occurs in {min_df} or more texts",
            fix="lower min_df or explore more texts",
        ) from err
    vocabulary = vectorizer.get_feature_names_out()
    keep = np.array([not g.isspace() for g in vocabulary])
    totals = np.asarray(counts.sum(axis=0)).ravel()
    result: dict[str, list[tuple[str, float]]] = {}
    for label, name in enumerate(label_names):
        in_class = labels == label
        if not in_class.any() or in_class.all():
            result[name] = []
            continue
        scores, _ = chi2(counts, in_class)
        observed = np.asarray(counts[in_class].sum(axis=0)).ravel()
        expected = totals * in_class.mean()
        candidates = np.flatnonzero(keep & (observed > expected) & np.isfinite(scores))
        best = candidates[np.argsort(-scores[candidates], kind="stable")][:top_k]
        result[name] = [(str(vocabulary[i]), float(scores[i])) for i in best]
    return result


# --- looking at examples --------------------------------------------------------------------


def shorten(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= max_chars else text[: max(max_chars - 1, 0)] + "…"


def sample_table(
    frame: pd.DataFrame,
    label_names: Sequence[str],
    *,
    per_class: int = 3,
    split: str | None = "train",
    seed: int = 0,
    max_chars: int = 120,
) -> pd.DataFrame:
    """A few random examples of each class (from ``split``, or all splits when None)."""
    pool = frame if split is None else frame[frame["split"] == split]
    rows = []
    for label, name in enumerate(label_names):
        group = pool[pool["label"] == label]
        picked = (
            group.sample(n=min(per_class, len(group)), random_state=seed) if len(group) else group
        )
        rows += [
            {"class": name, "split": r.split, "text": shorten(r.text, max_chars)}
            for r in picked.itertuples()
        ]
    return pd.DataFrame(rows, columns=["class", "split", "text"])


def page_of(frame: pd.DataFrame, page: int, page_size: int) -> pd.DataFrame:
    """Rows ``page * page_size`` up to the next page (page numbers start at 0)."""
    if page < 0 or page_size <= 0:
        raise NbutilsError(f"page must be >= 0 and page_size > 0, got {page} and {page_size}")
    return frame.iloc[page * page_size : (page + 1) * page_size]


# --- the tokenizer to count with ------------------------------------------------------------


def counting_tokenizer(vocab_dir: str | Path | None, model_dir: str | Path):
    """The WordPiece tokenizer to measure with: ``vocab_dir/vocab.txt`` if it exists, else the
    tokenizer saved with the converted model in ``model_dir``. Returns (tokenizer, source path).
    (Training and prediction load a model folder's tokenizer with
    ``nbutils.text.tokenization.load_tokenizer``.)"""
    if vocab_dir and (Path(vocab_dir) / "vocab.txt").is_file():
        from nbutils.text.vocab import build_tokenizer

        vocab_file = Path(vocab_dir) / "vocab.txt"
        return build_tokenizer(vocab_file), vocab_file
    model_dir = Path(model_dir)
    if (model_dir / "vocab.txt").is_file() or (model_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model_dir), model_dir
    raise NbutilsError(
        f"no vocab.txt in {vocab_dir or '(no vocab folder given)'} and no tokenizer in {model_dir}",
        fix="set explore_vocab_dir to a folder with vocab.txt (`make data` fetches "
        "data/raw/bert-base-chinese-vocab), or run the conversion notebook first",
    )
