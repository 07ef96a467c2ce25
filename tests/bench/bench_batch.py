"""BatchEngine in-process, without HTTP: tokens/s for 1 and 8 concurrent streams, and inputs/s for
256 short embedding inputs. Separates the engine's speed from the server's (`stacklet bench`
measures both together, against any OpenAI-compatible server).

Run: python tests/bench/bench_batch.py [max_tokens]. Uses the real test models (tests/testmodels.py).
"""

from __future__ import annotations

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


def stream(engine: BatchEngine, tag: str, max_tokens: int) -> int:
    usage = Usage()
    tokens = engine.vocab.tokenize(CHAT.format(tag), parse_special=True)
    params = SamplingParams(temperature=0.7, max_tokens=max_tokens)  # unseeded: seeded requests run one at a time
    for _ in engine.generate(tokens, params, 1, usage, threading.Event()):
        pass
    return usage.completion_tokens


def generation(max_tokens: int) -> None:
    engine = BatchEngine(testmodels.smollm_gguf(), EngineOptions(parallel=8), embedding=False)
    try:
        stream(engine, "warm-up", 8)
        for concurrency in (1, 8):
            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                tags = [f"{concurrency}-{i}" for i in range(concurrency)]
                done = sum(pool.map(lambda tag: stream(engine, tag, max_tokens), tags))
            print(f"{concurrency} streams: {done / (time.perf_counter() - start):.1f} tok/s ({done} tokens)")
    finally:
        engine.close()


def embeddings() -> None:
    engine = BatchEngine(testmodels.minilm_gguf(), EngineOptions(), embedding=True)
    try:
        inputs = [engine.vocab.tokenize(f"Sentence {i} about the lighthouse by the sea.") for i in range(256)]
        best = min(_timed(lambda: engine.embed(inputs, threading.Event())) for _ in range(3))
        print(f"embeddings: {256 / best:.1f} inputs/s")
    finally:
        engine.close()


def _timed(call: object) -> float:
    start = time.perf_counter()
    call()  # type: ignore[operator]
    return time.perf_counter() - start


if __name__ == "__main__":
    generation(int(sys.argv[1]) if len(sys.argv) > 1 else 128)
    embeddings()
