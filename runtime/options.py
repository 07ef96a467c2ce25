"""Options a model is served with: engine options (GPU offload, runtime knobs) and keep_alive.

Both are layered serve < model < load (< request, for keep_alive). A field left as None is "not
set at this layer"; `merge` lets a later layer win, and each engine applies its own default
(engines/llama/defaults.py) for anything still unset. Every value comes through `from_dict` (flags, the
config file, the environment, the API, the registry) and is refused there outside the ranges llama.cpp
runs with; what depends on the model (its training context, the memory it needs) is checked at load.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from runtime.errors import InvalidRequestError

FLASH_ATTN = ("auto", "on", "off")
SPLIT_MODES = ("none", "layer", "row")
TOKEN_ID_VOCABULARIES = ("model", "cl100k_base")  # how /embeddings reads integer inputs (protocol/openai_ids.py)
# Ranges llama.cpp runs with; past them it asserts, segfaults or (through ctypes) silently wraps.
MIN_CTX_SIZE = 256  # it rounds contexts up to a multiple of 256, and one below its sequence count asserts
MAX_CTX_SIZE = 2**31 - 1  # the model's training context is checked at load (check_context_size)
MAX_PARALLEL = 256  # llama.cpp's most sequences per context
MAX_DEVICES = 16  # llama.cpp's most GPUs
MAX_GPU_LAYERS = 10_000  # more than any model has; llama.cpp offloads all of them
THREADS_PER_CPU = 2

log = logging.getLogger("stacklet.options")


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
    kv_slots: bool | None = None  # text: a KV stream of ctx/parallel cells per sequence instead of one shared pool
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    threads: int | None = None
    no_mmap: bool | None = None
    vae_tiling: bool | None = None
    clip_on_cpu: bool | None = None
    vae_on_cpu: bool | None = None
    token_ids: str | None = None  # not the engine's: the server decodes OpenAI's ids before the worker sees them

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

    @classmethod
    def from_stored(cls, values: dict[str, Any] | None) -> EngineOptions:
        """Options read back from the registry: a value this version refuses (stored before it checked, or on
        a machine with more CPUs) is left out with a warning, so the model stays usable and `set` can fix it."""
        kept = {}
        for name, raw in (values or {}).items():
            try:
                cls.from_dict({name: raw})
                kept[name] = raw
            except InvalidRequestError as exc:
                log.warning("ignoring a stored engine option: %s", exc.message)
        return cls.from_dict(kept)

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
        return _PARSERS[name](raw)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"Invalid value {_shown(raw)} for '{name}': {exc}", param=name) from None


def _shown(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(raw: Any) -> int:
    """A whole number from JSON, TOML, a flag or the environment; never a bool, a fraction or a non-finite float."""
    if isinstance(raw, bool):
        raise ValueError("expected a whole number, not true or false")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if not math.isfinite(raw) or not raw.is_integer():
            raise ValueError("expected a whole number")
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", raw):
        return int(raw)
    raise ValueError("expected a whole number")


def _bounded(low: int, high: Callable[[], int], why: str = ""):
    """A whole number in [low, high()]: what llama.cpp and ctypes take without wrapping or asserting."""
    def parse(raw: Any) -> int:
        value = _whole(raw)
        top = high()
        if not low <= value <= top:
            raise ValueError(f"use {low} to {top}{why}")
        return value

    return parse


def _ctx_size(raw: Any) -> int:
    value = _whole(raw)
    if value < MIN_CTX_SIZE:
        raise ValueError(f"use at least {MIN_CTX_SIZE} (llama.cpp allocates contexts in steps of {MIN_CTX_SIZE})")
    if value > MAX_CTX_SIZE:
        raise ValueError("use at most the model's training context")
    return value


def max_threads() -> int:
    """More threads than a small multiple of the CPUs only slows llama.cpp down (and 100000 crashes it)."""
    return THREADS_PER_CPU * (os.cpu_count() or 1)


def _gpu_layers(raw: Any) -> str:
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in ("auto", "all"):
        return text
    try:
        return str(_bounded(0, lambda: MAX_GPU_LAYERS)(text if text is not None else raw))
    except ValueError:
        raise ValueError(f"expected auto, all or a layer count from 0 to {MAX_GPU_LAYERS}") from None


def _choice(allowed: tuple[str, ...]):
    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return text

    return parse


def _split(raw: Any) -> tuple[float, ...]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    if len(items) > MAX_DEVICES:
        raise ValueError(f"expected at most {MAX_DEVICES} shares, one per GPU")
    shares = tuple(float(i) for i in items if not isinstance(i, bool))
    if len(shares) != len(items) or not all(math.isfinite(s) and s >= 0 for s in shares):
        raise ValueError("expected non-negative numbers, one per GPU")
    return shares


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS = {
    "n_gpu_layers": _gpu_layers,
    "tensor_split": _split,
    "split_mode": _choice(SPLIT_MODES),
    "flash_attn": _choice(FLASH_ATTN),
    "cache_type_k": _choice(tuple(CACHE_TYPES)),
    "cache_type_v": _choice(tuple(CACHE_TYPES)),
    "no_mmap": _flag,
    "kv_slots": _flag,
    "vae_tiling": _flag,
    "clip_on_cpu": _flag,
    "vae_on_cpu": _flag,
    "token_ids": _choice(TOKEN_ID_VOCABULARIES),
    "main_gpu": _bounded(0, lambda: MAX_DEVICES - 1),
    "ctx_size": _ctx_size,
    "parallel": _bounded(1, lambda: MAX_PARALLEL),
    "threads": _bounded(1, max_threads, f" ({THREADS_PER_CPU} per CPU of this machine)"),
}


def check_context_size(options: EngineOptions, trained: Any) -> None:
    """ctx_size within the model's training context (from its GGUF metadata): llama.cpp uses no more, and
    a larger context only costs memory."""
    if options.ctx_size is not None and isinstance(trained, int) and 0 < trained < options.ctx_size:
        raise InvalidRequestError(f"Invalid value {options.ctx_size} for 'ctx_size': this model was trained with a "
                                  f"context of {trained} tokens; use at most {trained}.", param="ctx_size")


# keep_alive: seconds, or durations such as "30s", "5m", "1h"; negative = forever.

FOREVER = -1.0
_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_keep_alive(value: Any) -> float:
    """Seconds to stay loaded after the last request; FOREVER for any negative value."""
    seconds: float | None = None
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := _DURATION.match(value.strip().lower())):
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    except OverflowError:
        seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise InvalidRequestError(
            f"Invalid value for 'keep_alive': {_shown(value)}. Use seconds or a duration such as '30s', '5m' or "
            "'1h' (negative keeps the model loaded, 0 unloads it after the request).", param="keep_alive")
    return FOREVER if seconds < 0 else seconds


def first_keep_alive(*layers: float | None) -> float:
    """The keep_alive in effect: the first layer that sets one, most specific first."""
    return next(k for k in layers if k is not None)
