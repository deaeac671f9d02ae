"""nbutils.data.textstore: texts on disk read back exactly, in any order and in blocks; copies found
exactly (digest collisions cannot merge texts); Dataset.quality equals the old all-in-memory
computation on data with duplicates, leakage and conflicting labels."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pandas as pd

from nbutils.data import textstore
from nbutils.data.dataset import SPLITS, Dataset
from nbutils.data.textstore import TextStore

TEXTS = ["体育新闻", "", "a\tb\nc", "财经 " * 500, "\ud800 lone surrogate", "emoji 😀", "体育新闻"]


def test_texts_round_trip_by_index_slice_and_block_iteration():
    store = TextStore(TEXTS)
    column = store.column()
    assert len(column) == len(TEXTS)
    assert [column[i] for i in range(len(TEXTS))] == TEXTS
    assert column.tolist() == TEXTS
    assert column[[6, 0, 3]].tolist() == [TEXTS[6], TEXTS[0], TEXTS[3]]
    assert column[2:4].tolist() == TEXTS[2:4]
    batches = list(column.iter_batches(max_bytes=20))
    assert [t for b in batches for t in b] == TEXTS
    assert all(len(b) == 1 or sum(len(t.encode("utf-8", "surrogatepass")) for t in b) <= 20 for b in batches)
    assert column.char_lengths().tolist() == [len(t) for t in TEXTS]
    assert pickle.loads(pickle.dumps(column[[3, 1]])).tolist() == [TEXTS[3], TEXTS[1]]


def test_appends_after_reads_are_visible():
    store = TextStore(["一"])
    assert store.column()[0] == "一"
    store.append("二")
    assert store.column().tolist() == ["一", "二"]


def test_group_ids_first_seen_order_and_collisions_do_not_merge(monkeypatch):
    texts = ["b", "a", "b", "c", "a", "d"]
    assert TextStore(texts).column().group_ids().tolist() == [0, 1, 0, 2, 1, 3]
    # every text gets the same digest: the texts themselves must still separate them
    monkeypatch.setattr(textstore, "_digest", lambda data: 7)
    assert TextStore(texts).column().group_ids().tolist() == [0, 1, 0, 2, 1, 3]


def reference_quality(frame: pd.DataFrame, label_names, max_examples=5) -> dict:
    """The pre-TextStore Dataset.quality: one dict per distinct text, all texts in memory."""
    per_text: dict = {}
    for text, split, label in zip(frame["text"].tolist(), frame["split"].tolist(), frame["label"].tolist(),
                                  strict=True):
        counts, labels = per_text.setdefault(text, ({}, set()))
        counts[split] = counts.get(split, 0) + 1
        labels.add(label)
    duplicates = {}
    for s in SPLITS:
        repeated = [(t, c[s]) for t, (c, _) in per_text.items() if c.get(s, 0) > 1]
        duplicates[s] = {"count": sum(n - 1 for _, n in repeated),
                         "examples": [{"text": t, "count": n} for t, n in repeated[:max_examples]]}
    leaked = [(t, [s for s in SPLITS if s in c]) for t, (c, _) in per_text.items() if len(c) > 1]
    pairs = {f"{a}/{b}": sum(a in found and b in found for _, found in leaked)
             for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]}
    conflicting = [(t, sorted(ids)) for t, (_, ids) in per_text.items() if len(ids) > 1]
    return {"duplicates": duplicates,
            "leakage": {"count": len(leaked), "pairs": pairs,
                        "examples": [{"text": t, "splits": f} for t, f in leaked[:max_examples]]},
            "conflicting_labels": {"count": len(conflicting),
                                   "examples": [{"text": t, "labels": [label_names[i] for i in ids]}
                                                for t, ids in conflicting[:max_examples]]}}


def test_quality_equals_the_in_memory_reference_on_messy_data():
    rng = random.Random(3)
    pool = [f"文本{i}" for i in range(300)]  # few distinct texts: many copies, leaks, conflicts
    rows = [(rng.choice(pool), rng.randrange(4), rng.choice(SPLITS)) for _ in range(2000)]
    frame = pd.DataFrame(rows, columns=["text", "label", "split"])
    names = ["w", "x", "y", "z"]
    ds = Dataset(frame, names, source="mem", format="table")
    for k in (0, 3, 50):
        assert ds.quality(max_examples=k) == reference_quality(frame, names, max_examples=k)
    small = ds.subsample({"train": 100, "dev": 50}, seed=2)
    assert small.quality() == reference_quality(small.frame, names)
    assert ds.class_counts().to_numpy().sum() == 2000
    assert np.array_equal(ds.label_array(), frame["label"].to_numpy())


def test_iter_bytes_gives_the_stored_encoding_in_column_order():
    texts = ["甲乙", "x\udc80y", "", "长" * 5000, "end"]  # a lone surrogate round-trips (surrogatepass)
    store = TextStore(texts)
    for rows in ([0, 1, 2, 3, 4], [4, 1, 1, 0], [3, 2]):
        got = [bytes(b) for b in store.column(rows).iter_bytes()]
        assert got == [texts[r].encode("utf-8", "surrogatepass") for r in rows]
