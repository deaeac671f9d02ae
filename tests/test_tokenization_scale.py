"""Windowed truncation gives exactly the ids of the old path (tokenize the whole text, then cut
the ids), for head, tail and head+tail, on long mixed-script texts; the lazy training dataset
feeds the model those same ids; prediction in bounded chunks gives the same labels."""

from __future__ import annotations

import random

import pytest

from nbutils.text.tokenization import TextsToEncode, TokenizingCollator, Truncator, word_local
from nbutils.text.vocab import build_tokenizer


@pytest.fixture(scope="module")
def tokenizer(vocab_dir):
    return build_tokenizer(vocab_dir / "vocab.txt")


def reference_ids(tokenizer, texts, max_length, truncation, head_tokens=0):
    """The pre-window path, kept here (not in the package): whole-text ids, then the cut."""
    empty = tokenizer("", add_special_tokens=True)["input_ids"]
    n_prefix, n_suffix = 1, len(empty) - 1  # [CLS] ... [SEP]
    budget = max_length - len(empty)
    head = min(budget, head_tokens or round(budget * 128 / 510))
    out = []
    for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)["input_ids"]:
        body = ids[n_prefix:len(ids) - n_suffix]
        if len(body) > budget:
            if truncation == "head":
                body = body[:budget]
            elif truncation == "tail":
                body = body[-budget:]
            else:
                body = body[:head] + (body[-(budget - head):] if budget - head else [])
        out.append(ids[:n_prefix] + body + ids[len(ids) - n_suffix:])
    return out


PIECES = ["中国", "足球", "。", "，", " ", "  ", "2008年", "NBA", "iPhone", "supercalifragilistic", "Ａ１",
          "\u3000", "é", "e\u0301", "😀", "\t", "x" * 120, "123456789012", "——", "《新闻》", "股市", "\x00",
          "Straße", "İstanbul", "ǅ", "\ufffd", "a-b", "...", "。\n"]


def random_texts(n, seed):
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        length = rng.choice([0, 3, 50, 200, 400, 900, 2500])
        parts = []
        while sum(map(len, parts)) < length:
            parts.append(rng.choice(PIECES) if rng.random() < 0.5 else chr(0x4E00 + rng.randrange(20000)))
        texts.append("".join(parts))
    return texts


def test_the_bert_tokenizer_qualifies_for_windows(tokenizer):
    assert word_local(tokenizer)


@pytest.mark.parametrize("truncation", ["head", "tail", "head+tail"])
@pytest.mark.parametrize("max_length", [8, 24, 128, 512])
def test_windowed_ids_equal_the_whole_text_ids(tokenizer, truncation, max_length):
    texts = random_texts(150, seed=max_length)
    cut = Truncator(tokenizer, max_length, truncation)
    assert cut(texts) == reference_ids(tokenizer, texts, max_length, truncation)
    # a tiny first window forces the doubling path on almost every text
    cut.window_chars = 3
    assert cut(texts) == reference_ids(tokenizer, texts, max_length, truncation)


def test_head_tokens_and_edge_words(tokenizer):
    # a long Latin word straddling every window edge: its tokens must come from the whole word
    text = ("中" * 40 + " " + "abcdefghij" * 30 + " ") * 20
    for head_tokens in (1, 5, 30):
        cut = Truncator(tokenizer, 64, "head+tail", head_tokens=head_tokens)
        for window in (5, 17, 40, 41, 45, 300):
            cut.window_chars = window
            assert cut([text]) == reference_ids(tokenizer, [text], 64, "head+tail", head_tokens)


def test_lazy_dataset_and_collator_feed_the_same_ids(tokenizer):
    from transformers import DataCollatorWithPadding

    texts = random_texts(40, seed=7)
    cut = Truncator(tokenizer, 32, "head+tail")
    data = TextsToEncode(texts, list(range(40)), cut)
    assert len(data) == 40 and data.token_lengths() == [len(ids) for ids in cut(texts)]
    collate = TokenizingCollator(cut, DataCollatorWithPadding(tokenizer))
    batch = collate([data[i] for i in range(8)])
    expected = reference_ids(tokenizer, texts[:8], 32, "head+tail")
    for row, ids in zip(batch["input_ids"].tolist(), expected, strict=True):
        assert row[:len(ids)] == ids and set(row[len(ids):]) <= {tokenizer.pad_token_id}
    assert batch["labels"].tolist() == list(range(8))
