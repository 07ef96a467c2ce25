"""What exact repeats cost: seeded requests run one at a time in a context of their own and never start from a
cached prefix (runtime/engines/llama/generation.py). BatchEngine in-process, SmolLM2, on a quiet machine:

- tokens/s of one stream and of four concurrent streams, seeded and unseeded;
- time to first token of a ~1,000-token prompt sent a second time: unseeded it comes from the prefix cache,
  seeded it is evaluated again.

Rounds alternate seeded and unseeded. Run: python tests/bench/bench_seeded.py [rounds]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import testmodels  # noqa: E402

from runtime.engines.base import SamplingParams, Usage  # noqa: E402
from runtime.engines.llama.batch import BatchEngine  # noqa: E402
from runtime.options import EngineOptions  # noqa: E402

CHAT = "<|im_start|>user\n[{}] Write a long story about the sea.<|im_end|>\n<|im_start|>assistant\n"
FILLER = "The keeper of the lighthouse counted the ships that passed the rocks at night. " * 64
TOKENS = 128


def stream(engine: BatchEngine, prompt: str, seed: int | None, max_tokens: int = TOKENS) -> tuple[int, float]:
    """Tokens generated, and seconds to the first one."""
    usage, start, first = Usage(), time.perf_counter(), 0.0
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens, seed=seed)
    tokens = engine.vocab.tokenize(prompt, parse_special=True)
    for _ in engine.generate(tokens, params, 1, usage, threading.Event()):
        first = first or time.perf_counter() - start
    return usage.completion_tokens, first


def throughput(engine: BatchEngine, streams: int, seed: int | None, tag: str) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        seeds = [None if seed is None else seed + i for i in range(streams)]
        counts = pool.map(lambda i: stream(engine, CHAT.format(f"{tag} {i}"), seeds[i])[0], range(streams))
        total = sum(counts)
    return total / (time.perf_counter() - start)


def repeat_ttft(engine: BatchEngine, seed: int | None, tag: str) -> float:
    prompt = CHAT.format(f"{tag} {FILLER}")
    stream(engine, prompt, None, 1)  # leaves the prefix in the cache
    return stream(engine, prompt, seed, 1)[1]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    engine = BatchEngine(testmodels.smollm_gguf(), EngineOptions(ctx_size=8192, parallel=8), embedding=False)
    stream(engine, CHAT.format("warm-up"), 1, 8)
    stream(engine, CHAT.format("warm-up"), None, 8)
    cells: dict[str, list[float]] = {}
    for index in range(rounds):
        for seed, kind in ((None, "unseeded"), (100 * index, "seeded")):
            tag = f"{kind} {index}"
            cells.setdefault(f"1 stream tok/s, {kind}", []).append(throughput(engine, 1, seed, tag))
            cells.setdefault(f"4 streams tok/s, {kind}", []).append(throughput(engine, 4, seed, tag))
            cells.setdefault(f"TTFT of a repeated 1,000-token prompt s, {kind}", []).append(
                repeat_ttft(engine, seed, tag))
    engine.close()
    for name, values in cells.items():
        print(f"{name:48} median {statistics.median(values):8.3f}   rounds {' '.join(f'{v:.3f}' for v in values)}")


if __name__ == "__main__":
    main()
