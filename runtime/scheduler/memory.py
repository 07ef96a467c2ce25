"""How much memory a model needs once loaded, and how much the machine lets us use."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runtime.engines.llama.defaults import chat_context, kv_cache_bytes
from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions

log = logging.getLogger("stacklet.scheduler")

MIB = 1024 * 1024
OVERHEAD = 256 * MIB  # interpreter, engine library, compute buffers
RAM_SHARE = 0.8  # leave the rest to the OS and the server itself
KV_COPIES = {"llm": 2, "embedding": 1}  # a chat model's host cache of idle prefixes matches its KV pool


def estimate(kind: str, file_size: int, metadata: dict[str, Any], options: EngineOptions) -> int:
    """Bytes a loaded model takes: its files, the KV cache for text models (twice for chat models: their
    host cache of idle prefixes holds as many tokens as the KV pool), and a fixed overhead."""
    kv_cache = kv_cache_bytes(metadata, options) * KV_COPIES.get(kind, 0)
    return file_size + kv_cache + OVERHEAD


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


def system_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gpu_memory() -> int:
    """Total memory of the NVIDIA GPUs nvidia-smi reports (0 without one)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        result = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=10, check=True)
        return sum(int(float(line)) for line in result.stdout.split()) * MIB
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("nvidia-smi failed (%s); the memory budget counts system RAM only", exc)
        return 0
