"""The llama engine's defaults, and the KV-cache size they imply (the scheduler's memory estimate).

The only home of these numbers: the engine applies them, the scheduler budgets with them. No
llama.cpp import here, so the scheduler can read them without loading the engine.
"""

from __future__ import annotations

from typing import Any

from runtime.options import CACHE_TYPES, EngineOptions

DEFAULT_CTX = 8192  # a chat model's context when --ctx-size is unset (capped by the model's own)
DEFAULT_CACHE_TYPE = "f16"
MIN_PARALLEL, MAX_PARALLEL = 4, 16
TOKENS_PER_SEQUENCE = 1024  # the default --parallel gives each running sequence about this much context


def chat_context(trained: int | None, options: EngineOptions) -> int:
    """A chat model's context: --ctx-size, else its training length capped at DEFAULT_CTX."""
    return options.ctx_size or min(trained or DEFAULT_CTX, DEFAULT_CTX)


def default_parallel(n_ctx: int) -> int:
    """Sequences that generate at once when --parallel is unset: ctx / 1024, from 4 to 16."""
    return max(MIN_PARALLEL, min(MAX_PARALLEL, n_ctx // TOKENS_PER_SEQUENCE))


def kv_cache_bytes(metadata: dict[str, Any], options: EngineOptions) -> int:
    """n_layers * ctx * (n_embd_k_gqa + n_embd_v_gqa) * bytes per element, from the registry's GGUF summary.

    Without head counts the estimate assumes no grouped-query attention (an overestimate).
    """
    layers = metadata.get("block_count")
    embedding = metadata.get("embedding_length")
    if not (layers and embedding):
        return 0
    heads = metadata.get("head_count") or 1
    kv_heads = metadata.get("head_count_kv") or heads
    key_length = metadata.get("key_length") or embedding // heads
    value_length = metadata.get("value_length") or embedding // heads
    ctx = chat_context(metadata.get("context_length"), options)
    key_bytes = CACHE_TYPES[options.cache_type_k or DEFAULT_CACHE_TYPE].bytes_per_element
    value_bytes = CACHE_TYPES[options.cache_type_v or DEFAULT_CACHE_TYPE].bytes_per_element
    per_token = kv_heads * (key_length * key_bytes + value_length * value_bytes)
    return int(layers * ctx * per_token)
