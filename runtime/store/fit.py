"""Which quantisation of a GGUF repo a pull takes when none is named: by default the largest whose weights and
KV cache (at the default context) fit this machine's free VRAM, or RAM without a GPU, with headroom.

The memory estimate is the scheduler's (runtime.store.footprint). The KV cache needs the model's layer and
head dimensions, which the hub's file list does not give: the store reads them from the first bytes of one
GGUF file (one HTTP range request; every quantisation of a model shares them). When that header cannot be
read, the KV cache is guessed as a quarter of the smallest file, and the reason says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions
from runtime.store.footprint import OVERHEAD, available_ram, estimate, free_gpu_memory, kv_cache

POLICIES = ("fit", "smallest", "largest")
HEADROOM = 0.9  # of the free memory: the rest stays for the OS, other programs and compute buffers' peaks
# The fit stops at Q8_0 (close to lossless); unquantised weights take twice the memory and run at half the speed.
UNQUANTISED = ("F32", "BF16", "F16")
KV_GUESS_SHARE = 4  # without a readable header: the KV cache is guessed as 1/4 of the smallest file


@dataclass(frozen=True)
class Machine:
    memory: str  # "VRAM" or "RAM"
    free: int  # bytes


@dataclass(frozen=True)
class Choice:
    quant: str
    policy: str
    weights: int  # bytes of the chosen quant's files
    kv_cache: int  # bytes, the estimate at the default context
    need: int  # weights + KV cache + the engine's overhead
    free: int
    memory: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def this_machine() -> Machine:
    """Free VRAM when there is an NVIDIA GPU (layers go there first), else the RAM available now."""
    vram = free_gpu_memory()
    return Machine("VRAM", vram) if vram else Machine("RAM", available_ram())


def check_policy(policy: str | None) -> None:
    if policy is not None and policy not in POLICIES:
        raise InvalidRequestError(f"Unknown quant policy {policy[:32]!r}: use one of {', '.join(POLICIES)}, or "
                                  "name a quant as owner/repo:QUANT.", param="quant")


def choose(sizes: dict[str, int], policy: str, kind: str, metadata: dict[str, Any], machine: Machine) -> Choice:
    """The quant to pull out of `sizes` (quant -> bytes of its files), and why."""
    by_size = sorted(sizes, key=lambda q: (sizes[q], q))
    need = _needs(sizes, kind, metadata, machine.memory == "VRAM")
    guessed = kv_cache(kind, metadata, EngineOptions()) == 0 and kind in ("llm", "embedding")
    kv_note = " (guessed: the GGUF header could not be read)" if guessed else ""

    def made(quant: str, reason: str) -> Choice:
        weights = sizes[quant]
        return Choice(quant, policy, weights, need[quant] - weights - OVERHEAD, need[quant], machine.free,
                      machine.memory, reason)

    def parts(quant: str) -> str:
        return f"{gb(sizes[quant])} + {gb(need[quant] - sizes[quant] - OVERHEAD)} KV cache{kv_note}"

    if policy in ("smallest", "largest"):
        quant = by_size[0] if policy == "smallest" else by_size[-1]
        return made(quant, f"{quant}: the {policy} in the repo ({parts(quant)}, --quant {policy})")
    candidates = [q for q in by_size if q not in UNQUANTISED] or by_size
    budget = int(machine.free * HEADROOM)
    fitting = [q for q in candidates if need[q] <= budget]
    if not fitting:
        quant = by_size[0]
        return made(quant, f"{quant}: the smallest, and even it needs {gb(need[quant])} ({parts(quant)}) with "
                           f"{gb(machine.free)} free {machine.memory}; it will load only partly offloaded or not "
                           "at all. Set a smaller --ctx-size when serving it, or pull a smaller model.")
    quant = fitting[-1]
    reason = f"{quant}: {parts(quant)} fits {gb(machine.free)} free {machine.memory}"
    bigger = candidates[candidates.index(quant) + 1:]
    if bigger:
        reason += f"; {bigger[0]} would need {gb(need[bigger[0]])}"
    return made(quant, reason)


def _needs(sizes: dict[str, int], kind: str, metadata: dict[str, Any], on_gpu: bool) -> dict[str, int]:
    options = EngineOptions()
    needs = {q: estimate(kind, size, metadata, options, on_gpu) for q, size in sizes.items()}
    if kv_cache(kind, metadata, options) == 0 and kind in ("llm", "embedding"):
        guess = min(sizes.values()) // KV_GUESS_SHARE
        needs = {q: need + guess for q, need in needs.items()}
    return needs


def gb(size: int) -> str:
    return f"{size / 1e9:.1f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
