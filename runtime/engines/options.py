"""Engine options: GPU offload and runtime knobs, layered serve < model < load.

A field left as None is "not set at this layer"; `merge` lets a later layer win, and each engine
applies its own default for anything still unset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from runtime.errors import InvalidRequestError

FLASH_ATTN = ("auto", "on", "off")
SPLIT_MODES = ("none", "layer", "row")
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


@dataclass(frozen=True)
class EngineOptions:
    n_gpu_layers: str | None = None  # "auto", "all" or a layer count
    main_gpu: int | None = None
    tensor_split: tuple[float, ...] | None = None
    split_mode: str | None = None
    flash_attn: str | None = None
    ctx_size: int | None = None
    parallel: int | None = None
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    threads: int | None = None
    no_mmap: bool | None = None
    vae_tiling: bool | None = None
    clip_on_cpu: bool | None = None
    vae_on_cpu: bool | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> EngineOptions:
        """Build from loose input (CLI strings, JSON, env); raises InvalidRequestError naming the field."""
        out: dict[str, Any] = {}
        for name, raw in (values or {}).items():
            name = name.replace("-", "_")
            if name not in cls.field_names():
                raise InvalidRequestError(f"Unknown engine option '{name}'.", param=name)
            if raw is not None:
                out[name] = _parse(name, raw)
        return cls(**out)

    def merge(self, later: EngineOptions) -> EngineOptions:
        return replace(self, **{k: v for k, v in asdict(later).items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """Only the fields that are set, JSON-ready."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items() if v is not None}


def _parse(name: str, raw: Any) -> Any:
    try:
        return _PARSERS.get(name, int)(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"Invalid value {raw!r} for '{name}': {exc}", param=name) from None


def _gpu_layers(raw: Any) -> str:
    text = str(raw).strip().lower()
    if text in ("auto", "all") or (text.isdigit() and int(text) >= 0):
        return text
    raise ValueError("expected auto, all or a layer count")


def _choice(allowed: tuple[str, ...]):
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def _split(raw: Any) -> tuple[float, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    return tuple(float(i) for i in items)


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _count(raw: Any) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


_PARSERS = {
    "n_gpu_layers": _gpu_layers,
    "tensor_split": _split,
    "split_mode": _choice(SPLIT_MODES),
    "flash_attn": _choice(FLASH_ATTN),
    "cache_type_k": _choice(CACHE_TYPES),
    "cache_type_v": _choice(CACHE_TYPES),
    "no_mmap": _flag,
    "vae_tiling": _flag,
    "clip_on_cpu": _flag,
    "vae_on_cpu": _flag,
    "main_gpu": _count,
    "ctx_size": _count,
    "parallel": _count,
    "threads": _count,
}
