"""A GGUF header reader: key/values and tensor shapes, never tensor data.

gguf's GGUFReader builds numpy views of every token-list entry (seconds for a 49k-token vocabulary);
this reads the same header in a few milliseconds and skips the arrays (token lists) nobody summarises.

A header is untrusted input: every count and length is checked against what is left of the file and
against limits far above any real model's, nested arrays have a depth limit, and the strings kept have a
total size limit, so a damaged or hostile file costs a few reads and one clear error.
"""

from __future__ import annotations

import io
import struct
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runtime.errors import StoreError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
VERSIONS = (2, 3)
MAX_KEYS = 1 << 16  # real models have a few dozen
MAX_TENSORS = 1 << 20  # the largest mixture-of-experts models have a few thousand
MAX_ARRAY_ITEMS = 1 << 24  # token lists have up to a few hundred thousand
MAX_DEPTH = 4  # arrays of arrays
MAX_DIMS = 8  # ggml has 4
MAX_NAME_BYTES = 1 << 16  # key and tensor names
MAX_KEPT_BYTES = 1 << 26  # all string values kept together (a chat template is a few KB)
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, the smallest value
_MIN_TENSOR_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, ggml type, data offset
_MIN_ITEM_BYTES = {_STRING: 8, _ARRAY: 12}


@dataclass
class GGUFHeader:
    values: dict[str, Any] = field(default_factory=dict)  # scalars and strings; arrays are skipped
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> shape

    @property
    def architecture(self) -> str:
        return str(self.values.get("general.architecture", ""))

    def arch_value(self, key: str) -> Any:
        return self.values.get(f"{self.architecture}.{key}")

    @property
    def parameter_count(self) -> int:
        total = 0
        for shape in self.tensors.values():
            count = 1
            for dim in shape:
                count *= dim
            total += count
        return total


def read_header(path: Path) -> GGUFHeader:
    try:
        with path.open("rb") as f:
            return _Reader(f, path.stat().st_size).header()
    except _Damaged as exc:
        raise StoreError(f"{path.name} is not a usable GGUF file: {exc}. Check it or download it again.") from None


def read_prefix(data: bytes) -> GGUFHeader:
    """The key/values at the start of a header that `data` (a file's first bytes) cuts short: those read
    before the data ran out or stopped making sense. Enough for the model's dimensions, which GGUF writers
    put before the token lists; empty when `data` is no GGUF at all."""
    header = GGUFHeader()
    reader = _Reader(io.BytesIO(data), len(data))
    with suppress(_Damaged):
        _, kv_count = reader.counts()
        reader.read_values(min(kv_count, MAX_KEYS), header.values)
    return header


class _Damaged(Exception):
    pass


class _Reader:
    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.kept = 0

    def header(self) -> GGUFHeader:
        tensor_count, kv_count = self.counts()
        self.check_count(kv_count, MAX_KEYS, _MIN_KV_BYTES, "key/value")
        header = GGUFHeader()
        self.read_values(kv_count, header.values)
        self.check_count(tensor_count, MAX_TENSORS, _MIN_TENSOR_BYTES, "tensor")
        for _ in range(tensor_count):
            name = self.name()
            dims = self.u32()
            if dims > MAX_DIMS:
                raise _Damaged(f"tensor {name[:64]!r} has {dims} dimensions (at most {MAX_DIMS})")
            header.tensors[name] = struct.unpack(f"<{dims}Q", self.read(8 * dims))
            self.skip(12)  # ggml type (u32) and data offset (u64)
        return header

    def counts(self) -> tuple[int, int]:
        """The magic and version checked; (tensor count, key/value count)."""
        if self.size < 4 or self.f.read(4) != b"GGUF":
            raise _Damaged("it does not start with the GGUF magic bytes")
        version = self.u32()
        if version not in VERSIONS:
            raise _Damaged(f"GGUF version {version} is not supported (only {' and '.join(map(str, VERSIONS))})")
        return self.u64(), self.u64()

    def read_values(self, count: int, into: dict[str, Any]) -> None:
        for _ in range(count):
            key = self.name()
            value = self.value(self.u32())
            if value is not _SKIPPED:
                into[key] = value

    def value(self, kind: int, depth: int = 0) -> Any:
        """A scalar or string; arrays (and strings too long to keep) are skipped and give _SKIPPED."""
        if kind in _SCALARS:
            fmt = _SCALARS[kind]
            return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]
        if kind == _STRING:
            length = self.length()
            if length > MAX_KEPT_BYTES - self.kept:
                self.skip(length)
                return _SKIPPED
            self.kept += length
            return self.text(length)
        if kind == _ARRAY:
            if depth >= MAX_DEPTH:
                raise _Damaged(f"arrays are nested more than {MAX_DEPTH} deep")
            item_kind = self.u32()
            if item_kind not in _SCALARS and item_kind not in _MIN_ITEM_BYTES:
                raise _Damaged(f"unknown value type {item_kind}")
            item_bytes = struct.calcsize(_SCALARS[item_kind]) if item_kind in _SCALARS else _MIN_ITEM_BYTES[item_kind]
            count = self.u64()
            self.check_count(count, MAX_ARRAY_ITEMS, item_bytes, "array item")
            if item_kind in _SCALARS:
                self.skip(item_bytes * count)
            elif item_kind == _STRING:
                for _ in range(count):
                    self.skip(self.length())
            else:
                for _ in range(count):
                    self.value(_ARRAY, depth + 1)
            return _SKIPPED
        raise _Damaged(f"unknown value type {kind}")

    def name(self) -> str:
        length = self.length()
        if length > MAX_NAME_BYTES:
            raise _Damaged(f"a name is {length} bytes long (at most {MAX_NAME_BYTES})")
        return self.text(length)

    def text(self, length: int) -> str:
        try:
            return self.read(length).decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged("a string in its header is not UTF-8") from None

    def check_count(self, count: int, limit: int, item_bytes: int, what: str) -> None:
        if count > limit or count * item_bytes > self.left():
            raise _Damaged(f"its {what} count {count} is more than the file holds")

    def length(self) -> int:
        length = self.u64()
        if length > self.left():
            raise _Damaged(f"a length of {length} bytes runs past the end of the file")
        return length

    def left(self) -> int:
        return self.size - self.f.tell()

    def read(self, count: int) -> bytes:
        data = self.f.read(count) if count <= self.left() else b""
        if len(data) != count:
            raise _Damaged("the header is cut short (truncated file)")
        return data

    def skip(self, count: int) -> None:
        if count > self.left():
            raise _Damaged("the header is cut short (truncated file)")
        self.f.seek(count, 1)

    def u32(self) -> int:
        return struct.unpack("<I", self.read(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self.read(8))[0]


_SKIPPED = object()
