"""`kv_slots`: a KV stream of ctx/parallel cells per sequence instead of one shared pool. Sequences then share
no cells, so whatever moves between them is a copy of their state into another stream: the choices of one
prompt, a prefix a running request holds, a prefix from the host cache. Each copy must carry the real cells:
the next token after it has the distribution a fresh evaluation gives (a copy that lost its cells, or landed
in the wrong stream, gives another one).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama.batch import BatchEngine
from runtime.errors import ContextLengthExceededError, InvalidRequestError
from runtime.options import EngineOptions

LIGHTHOUSE = ("The keeper climbed the stairs of the lighthouse every night, trimmed the wick, wound the clock "
              "of the lamp and watched the ships pass the reef until morning came over the water. ")


@pytest.fixture(scope="module")
def slots(smollm_gguf: Path) -> Iterator[BatchEngine]:
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=4096, parallel=4, kv_slots=True), embedding=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def fresh(smollm_gguf: Path) -> Iterator[BatchEngine]:
    """The reference: the shared pool, where nothing is copied and each prompt here is evaluated afresh."""
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=4096, parallel=4), embedding=False)
    yield engine
    engine.close()


def prompt(engine: BatchEngine, tag: str, repeats: int = 4) -> list[int]:
    question = f"[{tag}] {LIGHTHOUSE * repeats}\nWhat did the keeper see?"
    text = f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    return engine.vocab.tokenize(text, parse_special=True)


def tops(engine: BatchEngine, tokens: list[int], usage: Usage | None = None, n: int = 1,
         max_tokens: int = 1) -> list[list[dict[str, float]]]:
    """Each choice's top-5 distribution at each greedy token."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens, logprobs=5)
    found: dict[int, list[dict[str, float]]] = {i: [] for i in range(n)}
    for delta in engine.generate(tokens, params, n, usage or Usage(), threading.Event()):
        found[delta.index] += [{token: logprob for token, logprob, _ in lp.top} for lp in delta.logprobs]
    return [found[i] for i in range(n)]


def first_top(engine: BatchEngine, tokens: list[int], usage: Usage | None = None) -> dict[str, float]:
    return tops(engine, tokens, usage)[0][0]


def assert_same_distribution(got: dict[str, float], want: dict[str, float]) -> None:
    """Within what evaluating a prompt in two parts instead of one moves it (a few hundredths here, in the
    shared pool too); a copy without its cells moves the distribution by whole units."""
    best = max(want, key=want.__getitem__)
    assert best in got and got[best] == pytest.approx(want[best], abs=0.1), (got, want)


def long_running(engine: BatchEngine, tokens: list[int]) -> tuple[threading.Thread, threading.Event]:
    """A request that holds its slot while the test goes on; the event is set once its prompt is evaluated."""
    started = threading.Event()

    def run() -> None:
        params = SamplingParams(temperature=0.7, max_tokens=96)
        for _ in engine.generate(tokens, params, 1, Usage(), threading.Event()):
            started.set()

    worker = threading.Thread(target=run)
    worker.start()
    return worker, started


def test_each_request_is_limited_to_its_slot(slots: BatchEngine) -> None:
    assert slots.context_length == 1024
    assert slots.stats()["kv_cells_total"] == 4096
    with pytest.raises(ContextLengthExceededError):
        slots.generate([1] * 1100, SamplingParams(max_tokens=4), 1, Usage(), threading.Event())


def test_slots_need_256_cells_each(smollm_gguf: Path) -> None:
    with pytest.raises(InvalidRequestError, match="raise --ctx-size to 2048"):
        BatchEngine(smollm_gguf, EngineOptions(ctx_size=1024, parallel=8, kv_slots=True), embedding=False)


def test_choices_copied_into_other_slots_continue_the_prompt(slots: BatchEngine) -> None:
    """The first token of every choice comes from the prompt's logits; from the second on, each choice reads
    its own slot, which for all but the first is a copy."""
    first, *others = tops(slots, prompt(slots, "choices"), n=3, max_tokens=3)
    assert len(first) == 3
    for other in others:
        assert len(other) == 3
        for got, want in zip(other, first, strict=True):
            assert_same_distribution(got, want)


def test_a_running_requests_prefix_is_copied_into_another_slot(slots: BatchEngine, fresh: BatchEngine) -> None:
    holder = prompt(slots, "running", repeats=6)
    worker, started = long_running(slots, holder)
    assert started.wait(60)
    follow_up = holder + slots.vocab.tokenize("The ships sailed past the", add_special=False)
    usage = Usage()
    got = first_top(slots, follow_up, usage)
    worker.join()
    assert usage.cached_tokens >= len(holder)  # and any of its answer the follow-up repeats
    assert_same_distribution(got, first_top(fresh, follow_up))


def test_a_cached_prefix_restores_into_another_slot(slots: BatchEngine, fresh: BatchEngine) -> None:
    earlier = prompt(slots, "cached")
    first_top(slots, earlier)  # ends in slot 0 and goes to the host cache
    worker, started = long_running(slots, prompt(slots, "other"))  # now holds slot 0
    assert started.wait(60)
    follow_up = earlier + slots.vocab.tokenize("The keeper saw the", add_special=False)
    usage = Usage()
    got = first_top(slots, follow_up, usage)
    worker.join()
    assert usage.cached_tokens == len(earlier)
    assert_same_distribution(got, first_top(fresh, follow_up))
