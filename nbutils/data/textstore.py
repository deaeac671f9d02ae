"""Many texts kept on disk, not in memory: ``TextStore`` (append, then read by index) and
``TextColumn`` (a read-only, list-like view of some of its rows).

Why: a 500k-article corpus is ~1.6 GB of UTF-8; held as Python strings it is ~1.1 GB (and the
pandas/Arrow copy another 1.6 GB), so loading, checking and fine-tuning would all grow with the
data. Here the texts go once into an anonymous temporary file (deleted by the operating system
when the store is closed or the process ends, even after a crash) and memory holds only two
8-byte numbers per text: where it starts in the file and a 64-bit digest used to find copies
(``group_ids``, Python's ``hash`` of the bytes). Reads use ``os.pread``, so the page cache, not the process, holds the bytes,
and forked DataLoader workers can read concurrently.

The digest is only a fast first pass: texts with the same digest are compared in full before they
are called copies, so a hash collision cannot merge two different texts.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

_ENCODING, _ERRORS = "utf-8", "surrogatepass"  # lone surrogates (e.g. from JSON escapes) round-trip
_READ_BLOCK = 1 << 22  # bytes read at once when walking a column in order


def _digest(data: bytes) -> int:
    # Python's own 64-bit hash of bytes: fast, and only ever compared within this process
    return hash(data)


class TextStore:
    """Append-only texts in an unlinked temporary file; ``column()`` gives read access."""

    def __init__(self, texts: Iterable[str] = (), *, dir: str | None = None):
        self._file = tempfile.TemporaryFile(dir=dir)  # already unlinked on POSIX
        self._fd = self._file.fileno()
        self._starts = array("q", [0])  # row i is bytes [_starts[i], _starts[i+1])
        self._digests = array("q")
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._closer = weakref.finalize(self, self._file.close)
        self.extend(texts)

    def append(self, text: str) -> int:
        """Store ``text``; return its row number."""
        data = text.encode(_ENCODING, _ERRORS)
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._starts.append(self._starts[-1] + len(data))
        self._digests.append(_digest(data))
        if self._pending_bytes >= _READ_BLOCK:
            self._flush()
        return len(self._digests) - 1

    def extend(self, texts: Iterable[str]) -> None:
        for text in texts:
            self.append(text)

    def _flush(self) -> None:
        if self._pending:
            self._file.seek(0, os.SEEK_END)
            self._file.write(b"".join(self._pending))
            self._file.flush()
            self._pending, self._pending_bytes = [], 0

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def nbytes(self) -> int:
        """UTF-8 bytes of all texts (the size of the file on disk)."""
        return self._starts[-1]

    def read(self, row: int) -> str:
        self._flush()
        start, end = self._starts[row], self._starts[row + 1]
        return os.pread(self._fd, end - start, start).decode(_ENCODING, _ERRORS)

    def read_range(self, first: int, last: int) -> list[str]:
        """Rows ``first`` .. ``last - 1`` with one read (they are adjacent in the file)."""
        return [bytes(b).decode(_ENCODING, _ERRORS) for b in self.read_range_bytes(first, last)]

    def read_range_bytes(self, first: int, last: int) -> list[memoryview]:
        """The stored UTF-8 bytes of rows ``first`` .. ``last - 1``, one read, no decoding."""
        self._flush()
        base = self._starts[first]
        block = memoryview(os.pread(self._fd, self._starts[last] - base, base))
        return [block[self._starts[i] - base:self._starts[i + 1] - base] for i in range(first, last)]

    def digests(self) -> np.ndarray:
        return np.frombuffer(self._digests, dtype=np.int64) if len(self) else np.zeros(0, np.int64)

    def byte_lengths(self) -> np.ndarray:
        return np.diff(np.frombuffer(self._starts, dtype=np.int64))

    def column(self, rows: Sequence[int] | np.ndarray | None = None) -> TextColumn:
        """A read-only view of ``rows`` (all rows, in order, when None)."""
        self._flush()
        index = np.arange(len(self), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        return TextColumn(self, index)

    def close(self) -> None:
        self._closer()


class TextColumn(Sequence):
    """Texts of a :class:`TextStore`, in a given row order; reads go to disk on demand.

    ``column[i]`` is one text, ``column[a:b]``/``column[array]`` a smaller column, iteration
    reads adjacent rows in large blocks, ``tolist()`` materialises everything (small data only).
    """

    def __init__(self, store: TextStore, index: np.ndarray):
        self.store = store
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.store.read(int(self.index[key]))
        return TextColumn(self.store, self.index[key])

    def __iter__(self) -> Iterator[str]:
        return self.iter_batches(None)

    def _runs(self) -> Iterator[tuple[int, int, int]]:
        """(store row of the first, store row after the last, column position of the first) for
        each run of consecutive store rows, capped at about one read block."""
        lengths = self.store.byte_lengths()
        i, n = 0, len(self.index)
        while i < n:
            j, block = i + 1, int(lengths[self.index[i]])
            while j < n and self.index[j] == self.index[j - 1] + 1 and block < _READ_BLOCK:
                block += int(lengths[self.index[j]])
                j += 1
            yield int(self.index[i]), int(self.index[j - 1]) + 1, i
            i = j

    def iter_batches(self, max_bytes: int | None = _READ_BLOCK) -> Iterator:
        """The texts in order; with ``max_bytes``, as lists of at most that many UTF-8 bytes
        (at least one text each), else one by one. Runs of adjacent rows are read at once."""
        lengths = self.store.byte_lengths()
        batch: list[str] = []
        size = 0
        for first, last, _ in self._runs():
            texts = self.store.read_range(first, last)
            if max_bytes is None:
                yield from texts
                continue
            for text, row in zip(texts, range(first, last), strict=True):
                cost = int(lengths[row])
                if batch and size + cost > max_bytes:
                    yield batch
                    batch, size = [], 0
                batch.append(text)
                size += cost
        if max_bytes is not None and batch:
            yield batch

    def iter_bytes(self) -> Iterator[memoryview]:
        """Each text's stored UTF-8 bytes (``surrogatepass``), in order, never decoded: hashing
        them (``Dataset.content_fingerprint``) needs no str round trip."""
        for first, last, _ in self._runs():
            yield from self.store.read_range_bytes(first, last)

    def tolist(self) -> list[str]:
        return list(self)

    def char_lengths(self) -> np.ndarray:
        """Length of each text in characters, read in blocks (memory: one block)."""
        return np.fromiter((len(t) for t in self), dtype=np.int64, count=len(self))

    def group_ids(self) -> np.ndarray:
        """One id per row, equal exactly when the texts are equal, numbered in first-seen order."""
        digests = self.store.digests()[self.index]
        _, first, inverse = np.unique(digests, return_index=True, return_inverse=True)
        # renumber by first occurrence so ids follow the column's order
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        ids = rank[inverse.reshape(-1)]
        counts = np.bincount(ids, minlength=len(order))
        # Rows that share a digest: compare the texts themselves (a collision must not merge them).
        next_id = len(order)
        shared = np.flatnonzero(counts[ids] > 1)  # rows whose digest occurs more than once
        shared = shared[np.argsort(ids[shared], kind="stable")]
        for rows in np.split(shared, np.flatnonzero(np.diff(ids[shared])) + 1) if len(shared) else []:
            group = ids[rows[0]]
            texts = [self.store.read(int(self.index[r])) for r in rows]
            seen: dict[str, int] = {}
            for r, text in zip(rows, texts, strict=True):
                if text not in seen:
                    seen[text] = group if not seen else next_id
                    next_id += len(seen) > 1
                ids[r] = seen[text]
        if next_id > len(order):  # a collision split a group: renumber in first-seen order again
            _, ids = np.unique(ids, return_inverse=True)
            first = np.full(ids.max() + 1, len(ids))
            np.minimum.at(first, ids, np.arange(len(ids)))
            rank = np.empty_like(first)
            rank[np.argsort(first, kind="stable")] = np.arange(len(first))
            ids = rank[ids]
        return ids.astype(np.int64)

    def __getstate__(self):
        # A spawned worker cannot open our unlinked file: send the texts themselves.
        return {"texts": self.tolist()}

    def __setstate__(self, state):
        store = TextStore(state["texts"])
        self.store, self.index = store, np.arange(len(store), dtype=np.int64)

    def __repr__(self) -> str:
        return f"TextColumn({len(self)} texts)"
