"""A GGUF header reader: key/values and tensor shapes, never tensor data.

gguf's GGUFReader builds numpy views of every token-list entry (seconds for a 49k-token vocabulary);
this reads the same header in a few milliseconds and skips arrays nobody summarises.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from runtime.errors import StoreError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_KEEP_ARRAYS = ("general.languages", "general.tags")  # small arrays worth keeping; token lists are skipped


@dataclass
class GGUFHeader:
    values: dict[str, Any] = field(default_factory=dict)
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
            if f.read(4) != b"GGUF":
                raise StoreError(f"{path.name} is not a GGUF file.")
            version, tensor_count, kv_count = struct.unpack("<IQQ", f.read(20))
            if version < 2:
                raise StoreError(f"{path.name} is GGUF version {version}; only version 2 and later are supported.")
            header = GGUFHeader()
            for _ in range(kv_count):
                key = _string(f)
                kind = _u32(f)
                value = _value(f, kind, keep=key in _KEEP_ARRAYS)
                if value is not _SKIPPED:
                    header.values[key] = value
            for _ in range(tensor_count):
                name = _string(f)
                dims = _u32(f)
                shape = struct.unpack(f"<{dims}Q", f.read(8 * dims))
                f.read(12)  # ggml type (u32) and data offset (u64)
                header.tensors[name] = shape
            return header
    except (struct.error, UnicodeDecodeError, MemoryError) as exc:
        raise StoreError(f"{path.name} has a damaged GGUF header ({exc}).") from None


_SKIPPED = object()


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", f.read(4))[0]


def _string(f: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", f.read(8))
    return f.read(length).decode("utf-8")


def _value(f: BinaryIO, kind: int, *, keep: bool = True) -> Any:
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item_kind = _u32(f)
        (count,) = struct.unpack("<Q", f.read(8))
        if item_kind in _SCALARS and not keep:
            f.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
            return _SKIPPED
        if item_kind == _STRING and not keep:
            for _ in range(count):
                f.seek(struct.unpack("<Q", f.read(8))[0], 1)
            return _SKIPPED
        items = [_value(f, item_kind) for _ in range(count)]
        return items if keep else _SKIPPED
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    raise struct.error(f"unknown value type {kind}")
