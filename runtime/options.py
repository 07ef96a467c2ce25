"""Options a model is served with: engine options (GPU offload, runtime knobs) and keep_alive.

Both are layered serve < model < load (< request, for keep_alive). A field left as None is "not
set at this layer"; `merge` lets a later layer win, and each engine applies its own default
(engines/llama/defaults.py) for anything still unset.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from runtime.errors import InvalidRequestError

FLASH_ATTN = ("auto", "on", "off")
SPLIT_MODES = ("none", "layer", "row")


@dataclass(frozen=True)
class CacheType:
    """A KV cache element type llama.cpp takes: ggml's number for it, and its size (the memory estimate)."""

    ggml_type: int
    bytes_per_element: float


CACHE_TYPES = {"f32": CacheType(0, 4.0), "f16": CacheType(1, 2.0), "bf16": CacheType(30, 2.0),
               "q8_0": CacheType(8, 1.0625), "q4_0": CacheType(2, 0.5625), "q4_1": CacheType(3, 0.625),
               "iq4_nl": CacheType(20, 0.5625), "q5_0": CacheType(6, 0.6875), "q5_1": CacheType(7, 0.75)}


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

    def merge(self, later: EngineOptions | None) -> EngineOptions:
        """These options with every field `later` sets replaced."""
        if later is None:
            return self
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
    "cache_type_k": _choice(tuple(CACHE_TYPES)),
    "cache_type_v": _choice(tuple(CACHE_TYPES)),
    "no_mmap": _flag,
    "vae_tiling": _flag,
    "clip_on_cpu": _flag,
    "vae_on_cpu": _flag,
    "main_gpu": _count,
    "ctx_size": _count,
    "parallel": _count,
    "threads": _count,
}


# keep_alive: seconds, or durations such as "30s", "5m", "1h"; negative = forever.

FOREVER = -1.0
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value: Any) -> float:
    """Seconds to stay loaded after the last request; FOREVER for any negative value."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip().lower())):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds is None:
        raise InvalidRequestError(
            f"Invalid value for 'keep_alive': {value!r}. Use seconds or a duration such as '30s', '5m' or '1h' "
            "(negative keeps the model loaded, 0 unloads it after the request).", param="keep_alive")
    return FOREVER if seconds < 0 else seconds


def first_keep_alive(*layers: float | None) -> float:
    """The keep_alive in effect: the first layer that sets one, most specific first."""
    return next(k for k in layers if k is not None)
