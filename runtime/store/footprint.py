"""How much memory a model takes once loaded, and how much this machine has.

The one home of the estimate: the scheduler budgets loads with it, and a pull chooses the quantisation
that fits with it. No engine import here (the KV-cache formula is the llama engine's defaults module).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runtime.engines.llama.defaults import kv_cache_bytes
from runtime.options import EngineOptions

log = logging.getLogger("stacklet.store")

MIB = 1024 * 1024
OVERHEAD = 256 * MIB  # interpreter, engine library, compute buffers
KV_COPIES = {"llm": 2, "embedding": 1}  # a chat model's host cache of idle prefixes matches its KV pool


def kv_cache(kind: str, metadata: dict[str, Any], options: EngineOptions, on_gpu: bool = False) -> int:
    """The KV cache a text model holds (twice for chat models in RAM: their host cache of idle prefixes holds
    as many tokens as the KV pool; on a GPU only the pool counts, the host cache stays in RAM); 0 for other
    kinds."""
    copies = min(KV_COPIES.get(kind, 0), 1) if on_gpu else KV_COPIES.get(kind, 0)
    return kv_cache_bytes(metadata, options) * copies


def seeded_context_bytes(kind: str, metadata: dict[str, Any], options: EngineOptions) -> int:
    """The KV pool once more, which a chat model takes once it has served a seeded request: those run in a
    context of their own (runtime/engines/llama/batch.py). Not in `estimate`, since most models never make one."""
    return kv_cache_bytes(metadata, options) if kind == "llm" else 0


def estimate(kind: str, file_size: int, metadata: dict[str, Any], options: EngineOptions,
             on_gpu: bool = False) -> int:
    """Bytes a loaded model takes (of VRAM when `on_gpu`): its files, its KV cache and a fixed overhead."""
    return file_size + kv_cache(kind, metadata, options, on_gpu) + OVERHEAD


def system_ram() -> int:
    return _meminfo("MemTotal:") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_ram() -> int:
    """RAM a new process can take without swapping (MemAvailable), else the total."""
    return _meminfo("MemAvailable:") or system_ram()


def gpu_memory() -> int:
    """Total memory of the NVIDIA GPUs nvidia-smi reports (0 without one)."""
    return _nvidia_smi("memory.total")


def free_gpu_memory() -> int:
    """Memory free on the NVIDIA GPUs now (0 without one): layers are split over all of them."""
    return _nvidia_smi("memory.free")


def _meminfo(field: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _nvidia_smi(query: str) -> int:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        result = subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=10, check=True)
        return sum(int(float(line)) for line in result.stdout.split()) * MIB
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.warning("nvidia-smi failed (%s); counting system RAM only", exc)
        return 0
