"""Read and write TensorFlow V2 checkpoints ("tensor bundles") without TensorFlow.

A checkpoint with prefix ``P`` is ``P.index`` plus ``P.data-00000-of-0000N`` shards:

- ``P.index`` is a LevelDB-style table (sorted keys, prefix-compressed, in blocks each guarded by
  a masked CRC32C). Key ``""`` holds a ``BundleHeaderProto`` (number of shards, endianness); every
  other key is a tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard, offset,
  size, masked CRC32C of the tensor's bytes).
- the shards hold the raw little-endian tensor bytes back to back.

Only the few protobuf fields TensorFlow writes for plain (unpartitioned) numeric tensors are
decoded here; anything else (string tensors, partitioned variables, compressed tables) is refused
with a clear error rather than misread. Shards are memory-mapped, so reading a 400 MB checkpoint
costs no more memory than the tensors actually touched, and :meth:`TFCheckpoint.release` hands
their pages back. Every tensor is CRC32C-verified (hardware-accelerated ``crc32c`` package)
before its data is returned.

The writer produces files TensorFlow itself reads (``tf.train.load_checkpoint``); the tests pin
both directions against fixtures written by real TensorFlow (tests/fixtures/make_tf_checkpoints.py).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import crc32c as _crc32c
import numpy as np

from nbutils.core.errors import NbutilsError

# TensorFlow DataType enum values (tensorflow/core/framework/types.proto) we can store in numpy.
# bfloat16 has no numpy dtype: it is stored as uint16 and widened to float32 on request.
_DTYPES: dict[int, tuple[str, np.dtype]] = {
    1: ("float32", np.dtype("<f4")),
    2: ("float64", np.dtype("<f8")),
    3: ("int32", np.dtype("<i4")),
    4: ("uint8", np.dtype("u1")),
    5: ("int16", np.dtype("<i2")),
    6: ("int8", np.dtype("i1")),
    9: ("int64", np.dtype("<i8")),
    10: ("bool", np.dtype("?")),
    14: ("bfloat16", np.dtype("<u2")),
    17: ("uint16", np.dtype("<u2")),
    19: ("float16", np.dtype("<f2")),
    22: ("uint32", np.dtype("<u4")),
    23: ("uint64", np.dtype("<u8")),
}
_DTYPE_ENUM = {name: code for code, (name, _) in _DTYPES.items()}
_TF_DTYPE_NAMES = {7: "string", 8: "complex64", 18: "complex128", 20: "resource", 21: "variant"}

_TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB's table magic number, which TensorFlow reuses
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes + 8-byte magic
_BLOCK_TRAILER = 5  # compression type byte + masked crc32c
_MASK_DELTA = 0xA282EAD8
_SHARD_RE = re.compile(r"^(?P<prefix>.+)\.data-(?P<i>\d{5})-of-(?P<n>\d{5})$")


def masked_crc32c(data) -> int:
    """CRC32C as TensorFlow/LevelDB store it: rotated and offset, so CRCs of CRCs stay strong."""
    crc = _crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# --- protobuf wire format: just enough for BundleHeaderProto / BundleEntryProto ------------


def _read_varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end of its buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 in protobuf: two's complement, 10 bytes
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _fields(buf) -> Iterator[tuple[int, int, object]]:
    """Yield (field number, wire type, value) of a protobuf message; bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            value = bytes(buf[pos : pos + length])
            if len(value) != length:
                raise ValueError("length-delimited field runs past the end")
            pos += length
        elif wire == 5:
            value = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _field(number: int, wire: int, value) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(value)
    if wire == 2:
        return key + _varint(len(value)) + value
    if wire == 5:
        return key + struct.pack("<I", value)
    raise ValueError(wire)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# --- the checkpoint ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the .index table."""

    name: str
    dtype: str  # numpy-style name; "bfloat16" for TensorFlow's DT_BFLOAT16
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int  # bytes
    crc32c: int  # masked, as stored

    @property
    def storage_dtype(self) -> np.dtype:
        return _DTYPES[_DTYPE_ENUM[self.dtype]][1]


def checkpoint_prefix(path: str | Path) -> Path:
    """The prefix ``.../name.ckpt`` of a checkpoint given its prefix, .index, .data-* or .meta file.

    A folder is resolved by :func:`find_checkpoint` (it needs to choose among several).
    """
    path = Path(path)
    if path.is_dir():
        return find_checkpoint(path)
    name = path.name
    shard = _SHARD_RE.match(name)
    if shard:
        return path.with_name(shard["prefix"])
    for suffix in (".index", ".meta"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path


def find_checkpoint(folder: str | Path) -> Path:
    """The checkpoint prefix inside ``folder``: the only ``*.index``, or the one TF's
    ``checkpoint`` file names as latest."""
    folder = Path(folder)
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) == 1:
        return indexes[0].with_suffix("")
    if not indexes:
        raise NbutilsError(
            f"{folder}: no TensorFlow checkpoint here (no *.index file)",
            fix="point at the folder holding bert_model.ckpt.index and bert_model.ckpt.data-*",
        )
    state = folder / "checkpoint"
    if state.exists():
        found = re.search(r'^model_checkpoint_path:\s*"([^"]+)"', state.read_text(), re.M)
        if found:
            prefix = Path(found[1])
            prefix = prefix if prefix.is_absolute() else folder / prefix
            if prefix.with_name(prefix.name + ".index").exists():
                return prefix
    names = ", ".join(p.name for p in indexes)
    raise NbutilsError(
        f"{folder}: several checkpoints here ({names}) and no 'checkpoint' file saying which is latest",
        fix="pass the prefix of the one you want, e.g. " + str(indexes[-1].with_suffix("")),
    )


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened for reading: ``TFCheckpoint(prefix_or_any_of_its_files)``.

    ``infos`` maps tensor names to :class:`TensorInfo` in the index's (sorted) order.
    ``get_tensor(name)`` returns what ``tf.train.load_checkpoint(p).get_tensor(name)`` returns
    (bfloat16 widened to float32, exactly). ``storage(name)`` returns the raw little-endian
    array as stored (bfloat16 as uint16), zero-copy from the memory map.
    """

    def __init__(self, path: str | Path):
        self.prefix = checkpoint_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        if not self.index_path.is_file():
            raise NbutilsError(
                f"{self.index_path}: checkpoint index not found",
                fix="a TF checkpoint is PREFIX.index plus PREFIX.data-NNNNN-of-NNNNN; point at one of them",
            )
        self.num_shards = 1
        self.infos: dict[str, TensorInfo] = {}
        self._read_index()
        self.data_paths = [self._shard_path(i) for i in range(self.num_shards)]
        self._maps: dict[int, mmap.mmap] = {}
        self._verified: set[str] = set()

    # -- index --------------------------------------------------------------------------------

    def _index_error(self, reason: str) -> NbutilsError:
        return NbutilsError(
            f"{self.index_path}: {reason}",
            fix="the .index file is damaged or not a TensorFlow V2 checkpoint index; copy or unzip it again",
        )

    def _read_index(self) -> None:
        data = self.index_path.read_bytes()
        if len(data) < _FOOTER_SIZE:
            raise self._index_error(f"only {len(data)} bytes, too short for a checkpoint index (truncated?)")
        footer = data[-_FOOTER_SIZE:]
        if struct.unpack("<Q", footer[-8:])[0] != _TABLE_MAGIC:
            raise self._index_error("no table magic number at the end (truncated, or not an .index file)")
        try:
            _, pos = _read_varint(footer, 0)  # metaindex handle: TF writes an empty one
            _, pos = _read_varint(footer, pos)
            index_offset, pos = _read_varint(footer, pos)
            index_size, _ = _read_varint(footer, pos)
            entries = []
            for _, handle in self._block_entries(data, index_offset, index_size, "index block"):
                offset, pos = _read_varint(handle, 0)
                size, _ = _read_varint(handle, pos)
                entries.extend(self._block_entries(data, offset, size, f"data block at byte {offset}"))
            if not entries or entries[0][0] != b"":
                raise self._index_error("no bundle header entry")
            self._parse_header(entries[0][1])
            for key, value in entries[1:]:
                name = key.decode("utf-8", errors="replace")
                self.infos[name] = self._parse_entry(name, value)
        except (ValueError, IndexError, struct.error) as err:
            raise self._index_error(f"malformed table ({err})") from None

    def _block_entries(self, data: bytes, offset: int, size: int, what: str) -> list[tuple[bytes, bytes]]:
        end = offset + size
        if end + _BLOCK_TRAILER > len(data) - _FOOTER_SIZE:
            raise self._index_error(f"{what} points past the end of the file (truncated?)")
        block = data[offset:end]
        kind, stored_crc = data[end], struct.unpack_from("<I", data, end + 1)[0]
        if masked_crc32c(data[offset : end + 1]) != stored_crc:
            raise self._index_error(f"CRC32C mismatch in {what} (corrupted file)")
        if kind != 0:
            raise self._index_error(f"{what} is compressed (type {kind}); only uncompressed tables are supported")
        num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
        limit = len(block) - 4 - 4 * num_restarts
        entries, key, pos = [], b"", 0
        while pos < limit:
            shared, pos = _read_varint(block, pos)
            unshared, pos = _read_varint(block, pos)
            value_len, pos = _read_varint(block, pos)
            key = key[:shared] + block[pos : pos + unshared]
            pos += unshared
            entries.append((key, block[pos : pos + value_len]))
            pos += value_len
        return entries

    def _parse_header(self, value: bytes) -> None:
        for number, _, field in _fields(value):
            if number == 1:
                self.num_shards = field
            elif number == 2 and field != 0:
                raise self._index_error("checkpoint was written big-endian; only little-endian is supported")

    def _parse_entry(self, name: str, value: bytes) -> TensorInfo:
        dtype_code, shape, shard, offset, size, crc = 0, [], 0, 0, 0, None
        for number, _, field in _fields(value):
            if number == 1:
                dtype_code = field
            elif number == 2:
                shape = self._parse_shape(name, field)
            elif number == 3:
                shard = field
            elif number == 4:
                offset = field
            elif number == 5:
                size = field
            elif number == 6:
                crc = field
            elif number == 7:
                raise self._index_error(f"tensor {name!r} is a partitioned (sliced) variable; not supported")
        if dtype_code not in _DTYPES:
            what = _TF_DTYPE_NAMES.get(dtype_code, f"DataType {dtype_code}")
            raise self._index_error(f"tensor {name!r} has dtype {what}, which this reader does not support")
        dtype, storage = _DTYPES[dtype_code]
        if crc is None:
            raise self._index_error(f"tensor {name!r} has no CRC32C in the index")
        expected = int(np.prod(shape, dtype=np.int64)) * storage.itemsize
        if size != expected:
            raise self._index_error(f"tensor {name!r}: index says {size} bytes but shape {tuple(shape)} x {dtype} needs {expected}")
        if shard >= self.num_shards:
            raise self._index_error(f"tensor {name!r} is in shard {shard} but the header declares {self.num_shards} shard(s)")
        return TensorInfo(name, dtype, tuple(shape), shard, offset, size, crc)

    def _parse_shape(self, name: str, buf: bytes) -> list[int]:
        dims = []
        for number, _, field in _fields(buf):
            if number == 2:
                size = next((_signed64(v) for n, _, v in _fields(field) if n == 1), 0)
                dims.append(size)
            elif number == 3 and field:
                raise self._index_error(f"tensor {name!r} has an unknown rank")
        if any(d < 0 for d in dims):
            raise self._index_error(f"tensor {name!r} has a negative dimension {dims}")
        return dims

    def _shard_path(self, i: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{i:05d}-of-{self.num_shards:05d}")

    # -- data ---------------------------------------------------------------------------------

    def _map(self, shard: int, name: str) -> mmap.mmap:
        if shard not in self._maps:
            path = self.data_paths[shard]
            if not path.is_file():
                raise NbutilsError(
                    f"{path}: data shard {shard + 1} of {self.num_shards} is missing (needed for tensor {name!r})",
                    fix="copy every bert_model.ckpt.data-NNNNN-of-NNNNN file next to the .index file",
                )
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                self._maps[shard] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else mmap.mmap(-1, 1)
        return self._maps[shard]

    def storage(self, name: str, *, verify: bool = True) -> np.ndarray:
        """The tensor's bytes as stored, viewed as a read-only array of its storage dtype."""
        info = self._info(name)
        mm = self._map(info.shard, name)
        path = self.data_paths[info.shard]
        end = info.offset + info.size
        file_size = path.stat().st_size
        if end > file_size:
            raise NbutilsError(
                f"{path}: tensor {name!r} needs bytes {info.offset}..{end} but the file has only {file_size} (truncated)",
                fix="the data file is incomplete; copy or unzip the checkpoint again",
            )
        raw = np.frombuffer(mm, dtype=np.uint8, count=info.size, offset=info.offset)
        if verify and name not in self._verified:
            if masked_crc32c(raw) != info.crc32c:
                raise NbutilsError(
                    f"{path}: CRC32C mismatch for tensor {name!r} (bytes {info.offset}..{end}): the data is corrupted",
                    fix="copy or unzip the checkpoint again; the file changed after TensorFlow wrote it",
                )
            self._verified.add(name)
        return raw.view(info.storage_dtype).reshape(info.shape)

    def get_tensor(self, name: str) -> np.ndarray:
        """The tensor as TensorFlow returns it (a copy; bfloat16 widened exactly to float32)."""
        array = self.storage(name)
        if self._info(name).dtype == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.copy()

    def verify(self) -> int:
        """Check every tensor's CRC32C (releasing pages as it goes); return the number checked."""
        for name in self.infos:
            self.storage(name)
            self.release(name)
        return len(self.infos)

    def release(self, name: str) -> None:
        """Drop the memory-mapped pages of one tensor from this process (data stays on disk)."""
        info = self._info(name)
        mm = self._maps.get(info.shard)
        if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or info.size == 0:
            return
        start = info.offset - info.offset % mmap.PAGESIZE
        end = min(info.offset + info.size, len(mm))
        if end > start:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.infos[name]
        except KeyError:
            raise NbutilsError(f"{self.index_path}: no tensor named {name!r} in this checkpoint") from None

    def __contains__(self, name: str) -> bool:
        return name in self.infos

    def __iter__(self) -> Iterator[str]:
        return iter(self.infos)

    def __len__(self) -> int:
        return len(self.infos)

    @property
    def data_bytes(self) -> int:
        return sum(info.size for info in self.infos.values())

    def close(self) -> None:
        for mm in self._maps.values():
            try:
                mm.close()
            except BufferError:
                pass  # arrays handed out still view it; the mapping goes when they do
        self._maps.clear()

    def __enter__(self) -> TFCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --- writing ----------------------------------------------------------------------------------


def _as_storage(name: str, value) -> tuple[str, np.ndarray]:
    """(dtype name, C-contiguous little-endian storage array) for an array or ("bfloat16", uint16 array)."""
    if isinstance(value, tuple):
        dtype, array = value
        if dtype != "bfloat16" or np.asarray(array).dtype != np.uint16:
            raise NbutilsError(f"tensor {name!r}: a tuple value must be ('bfloat16', uint16 array)")
        return dtype, np.asarray(array, dtype="<u2", order="C")
    array = np.asarray(value)
    dtype = array.dtype.name
    if dtype not in _DTYPE_ENUM or dtype == "bfloat16":
        raise NbutilsError(f"tensor {name!r}: dtype {dtype} cannot be written to a TF checkpoint here")
    # np.asarray, not ascontiguousarray: that one turns scalars (global_step) into shape (1,)
    return dtype, np.asarray(array, dtype=_DTYPES[_DTYPE_ENUM[dtype]][1], order="C")


def _entry_proto(dtype: str, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(_field(2, 2, _field(1, 0, d) if d else b"") for d in shape)  # proto3 omits zeros
    out = _field(1, 0, _DTYPE_ENUM[dtype]) + _field(2, 2, dims)
    if offset:
        out += _field(4, 0, offset)
    if size:
        out += _field(5, 0, size)
    return out + _field(6, 5, crc)


class _TableWriter:
    """LevelDB table layout as TensorFlow writes it: uncompressed blocks, restart every 16 keys."""

    def __init__(self, block_size: int = 256 * 1024, restart_interval: int = 16):
        self.out = bytearray()
        self.block_size, self.restart_interval = block_size, restart_interval
        self.index: list[tuple[bytes, bytes]] = []

    @staticmethod
    def _encode_block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
        block, restarts, last = bytearray(), [], b""
        for i, (key, value) in enumerate(entries):
            shared = 0
            if i % restart_interval == 0:
                restarts.append(len(block))
            else:
                limit = min(len(key), len(last))
                while shared < limit and key[shared] == last[shared]:
                    shared += 1
            block += _varint(shared) + _varint(len(key) - shared) + _varint(len(value))
            block += key[shared:] + value
            last = key
        restarts = restarts or [0]
        block += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
        return bytes(block)

    def _write_block(self, block: bytes) -> bytes:
        handle = _varint(len(self.out)) + _varint(len(block))
        trailer_input = block + b"\x00"
        self.out += trailer_input + struct.pack("<I", masked_crc32c(trailer_input))
        return handle

    def build(self, entries: list[tuple[bytes, bytes]]) -> bytes:
        blocks: list[list[tuple[bytes, bytes]]] = [[]]
        size = 0
        for key, value in entries:
            blocks[-1].append((key, value))
            size += len(key) + len(value) + 8
            if size >= self.block_size:
                blocks.append([])
                size = 0
        blocks = [b for b in blocks if b]
        for i, block in enumerate(blocks):
            last = block[-1][0]
            # LevelDB's short index keys: a separator between blocks, a successor after the last
            key = _separator(last, blocks[i + 1][0][0]) if i + 1 < len(blocks) else _successor(last)
            self.index.append((key, self._write_block(self._encode_block(block, self.restart_interval))))
        meta = self._write_block(self._encode_block([], self.restart_interval))
        index = self._write_block(self._encode_block(self.index, 1))
        handles = meta + index
        footer = handles + b"\x00" * (40 - len(handles)) + struct.pack("<Q", _TABLE_MAGIC)
        return bytes(self.out + footer)


def _separator(start: bytes, limit: bytes) -> bytes:
    """Shortest key >= start and < limit (LevelDB's FindShortestSeparator)."""
    n = 0
    while n < min(len(start), len(limit)) and start[n] == limit[n]:
        n += 1
    if n < min(len(start), len(limit)) and start[n] < 0xFF and start[n] + 1 < limit[n]:
        return start[:n] + bytes([start[n] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """Shortest key >= key (LevelDB's FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_checkpoint(prefix: str | Path, tensors: Mapping[str, object] | Iterable[tuple[str, object]]) -> Path:
    """Write a single-shard TF V2 checkpoint ``prefix.index`` + ``prefix.data-00000-of-00001``.

    ``tensors``: name -> numpy array, or name -> ("bfloat16", uint16 array) for bfloat16. Arrays
    are streamed to the data file one at a time (memory-mapped inputs stay cheap). Both files are
    written atomically (temp + rename); the caller decides about overwriting by choosing ``prefix``.
    """
    from nbutils.core.io import atomic_file

    prefix = Path(prefix)
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    entries: dict[str, bytes] = {}
    data_path = prefix.with_name(prefix.name + ".data-00000-of-00001")
    with atomic_file(data_path) as tmp, open(tmp, "wb") as fh:
        offset = 0
        for name, value in items:
            if name in entries or not name:
                raise NbutilsError(f"tensor name {name!r} is empty or repeated")
            dtype, array = _as_storage(name, value)
            buf = memoryview(array).cast("B") if array.size else b""
            fh.write(buf)
            entries[name] = _entry_proto(dtype, array.shape, offset, array.nbytes, masked_crc32c(buf))
            offset += array.nbytes
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))  # num_shards=1, version{producer=1}
    table = [(b"", header)] + [(k.encode("utf-8"), entries[k]) for k in sorted(entries)]
    with atomic_file(prefix.with_name(prefix.name + ".index")) as tmp:
        tmp.write_bytes(_TableWriter().build(table))
    return prefix
