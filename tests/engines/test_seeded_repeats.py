"""Seeded requests repeat exactly on a warm engine: whatever ran before, whatever runs beside them, and whatever
the prefix cache holds, the same seeded request gives the same tokens with the same logprobs, to the last bit.

The prompt is longer than 512 tokens: from there llama.cpp's attention splits the cells in use among the
threads for one-token steps, where the summation order depends on the cells the sequence got and on how many
are in use; in the shared pool that changes with every request that ran before (generation.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama.batch import BatchEngine
from runtime.options import EngineOptions

STORY = ("The river ran past the old mill where the miller kept his accounts in a leather book, and every "
         "evening the children of the village came to hear him read the numbers aloud as if they were poems. ")


@pytest.fixture(scope="module")
def engine(smollm_gguf: Path) -> Iterator[BatchEngine]:
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=4096, parallel=4), embedding=False)
    yield engine
    engine.close()


def story(engine: BatchEngine, tag: str, repeats: int = 16) -> list[int]:
    return engine.vocab.tokenize(f"[{tag}] " + STORY * repeats + "\nContinue the story:")


def run(engine: BatchEngine, tokens: list[int], seed: int | None, max_tokens: int = 32,
        usage: Usage | None = None) -> list[tuple[str, float]]:
    params = SamplingParams(temperature=0.9, max_tokens=max_tokens, seed=seed, logprobs=2)
    out = []
    for delta in engine.generate(tokens, params, 1, usage or Usage(), threading.Event()):
        out += [(lp.token, lp.logprob) for lp in (delta.logprobs or [])]
    return out


def in_background(engine: BatchEngine, prompts: list[list[int]], max_tokens: int = 48) -> list[threading.Thread]:
    workers = [threading.Thread(target=run, args=(engine, p, None, max_tokens)) for p in prompts]
    for worker in workers:
        worker.start()
    return workers


def test_a_seeded_request_repeats_exactly_on_a_warm_engine(engine: BatchEngine) -> None:
    prompt = story(engine, "mill")
    assert len(prompt) > 512
    first = run(engine, prompt, seed=7)
    assert len(first) == 32
    assert engine.stats()["seeded_context"]  # the scheduler counts its memory from then on
    # Unseeded requests fill the pool, leave prefixes in the host cache (this very prompt among them) and
    # run beside the repeats.
    others = [story(engine, f"note {i}", repeats=8 + 4 * i) for i in range(3)] + [prompt]
    workers = in_background(engine, others)
    beside = run(engine, prompt, seed=7)
    for worker in workers:
        worker.join()
    usage = Usage()
    after = run(engine, prompt, seed=7, usage=usage)
    assert beside == first
    assert after == first
    assert usage.cached_tokens == 0  # a cached prefix was computed another way: seeded requests start afresh
    assert run(engine, prompt, seed=8) != first


def test_seeded_requests_queue_and_unseeded_ones_go_on_beside_them(engine: BatchEngine) -> None:
    prompts = [story(engine, "lane a", 4), story(engine, "lane b", 4)]
    alone = [run(engine, p, seed=3, max_tokens=96) for p in prompts]
    finished: list[str] = []

    def seeded(index: int) -> None:
        assert run(engine, prompts[index], seed=3, max_tokens=96) == alone[index]
        finished.append(f"seeded {index}")

    workers = [threading.Thread(target=seeded, args=(i,)) for i in range(2)]
    for worker in workers:
        worker.start()
    while engine.stats()["seeded_requests"] < 2:
        time.sleep(0.01)
    run(engine, story(engine, "quick", 1), seed=None, max_tokens=4)
    finished.append("unseeded")
    for worker in workers:
        worker.join()
    # The seeded requests take 192 steps one after the other; the unseeded one needs 4 of them.
    assert finished[0] == "unseeded" and sorted(finished[1:]) == ["seeded 0", "seeded 1"]
    assert engine.stats()["seeded_requests"] == 0
