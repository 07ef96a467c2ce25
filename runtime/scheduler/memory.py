"""How much memory the machine lets the server use (the estimate itself is runtime.store.footprint's)."""

from __future__ import annotations

from typing import Any

from runtime.engines.llama.defaults import chat_context
from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions
from runtime.store.footprint import OVERHEAD, estimate, gpu_memory, seeded_context_bytes, system_ram

__all__ = ["OVERHEAD", "check_budget", "default_budget", "estimate", "gpu_memory", "seeded_context_bytes", "system_ram"]

RAM_SHARE = 0.8  # leave the rest to the OS and the server itself


def check_budget(name: str, need: int, budget: int, file_size: int, options: EngineOptions,
                 metadata: dict[str, Any]) -> None:
    """Refuse (400) a load that needs more than the whole budget: evicting every other model would not make
    room, and the machine would swap or kill the worker instead."""
    if need <= budget:
        return
    kv_cache = need - file_size - OVERHEAD
    kv_bound = file_size + OVERHEAD <= budget  # a smaller context would fit
    context = f", {kv_cache >> 20} MiB of KV cache for {chat_context(metadata.get('context_length'), options)} " \
              "tokens" if kv_cache else ""
    detail = f"{file_size >> 20} MiB of files{context} and {OVERHEAD >> 20} MiB of overhead"
    advice = ("Use a smaller ctx_size or cache_type_k/cache_type_v, or raise the server's --memory-budget."
              if kv_bound else "Raise the server's --memory-budget, or use a smaller quantization of the model.")
    raise InvalidRequestError(f"The model '{name}' needs about {need >> 20} MiB ({detail}), over this server's "
                              f"memory budget of {budget >> 20} MiB. {advice}",
                              param="ctx_size" if kv_bound else "model", code="memory_budget_exceeded")


def default_budget(engine: EngineOptions) -> int:
    """A share of system RAM, plus the GPUs' memory when layers may be offloaded."""
    budget = int(system_ram() * RAM_SHARE)
    if engine.n_gpu_layers != "0":
        budget += gpu_memory()
    return budget
