"""The continuous-batching engine under concurrency, on the real SmolLM2 and MiniLM models.

Correctness only, never timings. At temperature 0 a request decoded in a batch with others gives
the same text as the same request alone, except in the last bits: llama.cpp's CPU flash attention
takes a tiled path for 64 or more query rows in a micro-batch and a row-by-row path below that,
and sums over cache cells in cell order. A request alone fills cells in order; in a batch, cells
that finished requests free are reused by the ones still running, so their later tokens may sit
before earlier ones. A greedy choice can then flip at a near-tie, exactly as in llama-server; the
concurrency test shows that every difference is such a tie. Tests that compare texts keep
prompts under 64 tokens.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from greedy import agree_until_a_near_tie

from runtime.engines.base import SamplingParams, TextDelta, TokenLogprob, Usage
from runtime.engines.llama.batch import BatchEngine
from runtime.engines.llama.stream import merged
from runtime.errors import ContextLengthExceededError, InvalidRequestError
from runtime.http.bridge import DONE
from runtime.options import EngineOptions

CHAT = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
OPENINGS = ["The capital of France is", "Three colors are", "Hamlet was written by",
            "Two plus two equals", "Bob, say hello to"]


@pytest.fixture(scope="module")
def engine(smollm_gguf: Path) -> Iterator[BatchEngine]:
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=4096, parallel=4), embedding=False)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def embedder(minilm_gguf: Path) -> Iterator[BatchEngine]:
    engine = BatchEngine(minilm_gguf, EngineOptions(), embedding=True)
    yield engine
    engine.close()


def prompt(engine: BatchEngine, question: str) -> list[int]:
    return engine.vocab.tokenize(CHAT.format(question), parse_special=True)


def greedy(max_tokens: int = 24, **extra: object) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **extra)  # type: ignore[arg-type]


def collect(engine: BatchEngine, tokens: list[int], params: SamplingParams, n: int = 1,
            usage: Usage | None = None, cancel: threading.Event | None = None) -> list[list[TextDelta]]:
    choices: list[list[TextDelta]] = [[] for _ in range(n)]
    for delta in engine.generate(tokens, params, n, usage or Usage(), cancel or threading.Event()):
        choices[delta.index].append(delta)
    return choices


def text(deltas: list[TextDelta]) -> str:
    return "".join(d.text for d in deltas)


def finish(deltas: list[TextDelta]) -> str | None:
    reasons = [d.finish_reason for d in deltas if d.finish_reason]
    assert len(reasons) == 1, reasons
    assert deltas[-1].finish_reason == reasons[0]
    return reasons[0]


def test_concurrent_requests_each_get_their_own_answer(engine: BatchEngine, smollm_gguf: Path) -> None:
    params = greedy(logprobs=2)
    alone = [tokens_of(collect(engine, engine.vocab.tokenize(o), params)[0]) for o in OPENINGS]
    cold = BatchEngine(smollm_gguf, EngineOptions(ctx_size=4096, parallel=4), embedding=False)
    try:
        with ThreadPoolExecutor(len(OPENINGS)) as pool:
            together = list(pool.map(lambda o: tokens_of(collect(cold, cold.vocab.tokenize(o), params)[0]), OPENINGS))
    finally:
        cold.close()
    assert "Paris" in "".join(t.token for t in alone[0][:3])
    for mine, own in zip(together, alone, strict=True):
        # A crossed stream would not pick the runner-up of this prompt's own distribution at nearly its
        # probability: "Two plus two equals five" has "." and "," 0.06 apart next.
        agree_until_a_near_tie(mine, own)


def tokens_of(deltas: list[TextDelta]) -> list[TokenLogprob]:
    return [lp for d in deltas for lp in d.logprobs]


def test_n_choices_share_the_prompt_and_sample_independently(engine: BatchEngine) -> None:
    tokens = prompt(engine, "Tell me a story.")
    usage = Usage()
    sampled = collect(engine, tokens, SamplingParams(temperature=1.0, max_tokens=12, seed=7), n=3, usage=usage)
    assert [finish(c) for c in sampled] == ["length"] * 3
    assert len({text(c) for c in sampled}) > 1  # each choice has its own seed
    assert usage.prompt_tokens == len(tokens) and usage.completion_tokens == 36
    greedy_choices = collect(engine, tokens, greedy(12), n=2)
    assert text(greedy_choices[0]) == text(greedy_choices[1])


def test_same_seed_same_text(smollm_gguf: Path) -> None:
    # Cold engines, so this holds apart from the separate context seeded requests get (test_seeded_repeats.py).
    def sample(seed: int) -> list[str]:
        cold = BatchEngine(smollm_gguf, EngineOptions(ctx_size=512, parallel=2), embedding=False)
        try:
            params = SamplingParams(temperature=0.9, top_p=0.9, max_tokens=16, seed=seed)
            return [text(c) for c in collect(cold, prompt(cold, "Write a poem about the sea."), params, n=2)]
        finally:
            cold.close()

    first = sample(42)
    assert sample(42) == first
    assert sample(43) != first


def test_stop_string_split_across_tokens_is_not_emitted(engine: BatchEngine) -> None:
    tokens = prompt(engine, "What is the capital of France?")
    full = text(collect(engine, tokens, greedy())[0])
    start = full.index("Paris")
    stop = full[start + 2:start + 7]  # "ris" plus what follows: starts inside a token
    deltas = collect(engine, tokens, greedy(stop=[stop, "never-seen"]))[0]
    assert text(deltas) == full[:start + 2]
    assert finish(deltas) == "stop"


def test_length_and_logprobs(engine: BatchEngine) -> None:
    deltas = collect(engine, prompt(engine, "Count to ten."), greedy(5, logprobs=2))[0]
    assert finish(deltas) == "length"
    logprobs = [lp for d in deltas for lp in d.logprobs]
    assert len(logprobs) == 5
    assert "".join(lp.token for lp in logprobs) == text(deltas)
    for lp in logprobs:
        assert lp.logprob <= 0 and len(lp.top) == 2
        assert lp.top[0][0] == lp.token and math.isclose(lp.top[0][1], lp.logprob)
    assert not collect(engine, prompt(engine, "Count to ten."), greedy(3))[0][0].logprobs


def test_cached_prefix_is_reused_and_gives_the_same_answer(smollm_gguf: Path) -> None:
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=2048, parallel=2), embedding=False)
    try:
        first = prompt(engine, "What is the capital of Italy?")
        cold, warm = Usage(), Usage()
        answer = text(collect(engine, first, greedy(), usage=cold)[0])
        assert text(collect(engine, first, greedy(), usage=warm)[0]) == answer
        assert cold.cached_tokens == 0 and warm.cached_tokens == len(first) - 1
        turn = engine.vocab.tokenize(CHAT.format("What is the capital of Italy?") + answer + "<|im_end|>\n"
                               + CHAT.format("And of Spain?"), parse_special=True)
        next_turn = Usage()
        collect(engine, turn, greedy(4), usage=next_turn)
        assert next_turn.cached_tokens >= len(first) + 3
        stats = engine.stats()  # finished sequences wait in RAM, not in the KV pool
        assert stats["cached_prefixes"] >= 1 and stats["kv_cells_used"] == 0
        assert not stats["seeded_context"]  # greedy requests never make the second context
    finally:
        engine.close()


def test_a_cached_prefix_that_cannot_be_restored_is_evaluated_again(smollm_gguf: Path) -> None:
    import ctypes

    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=1024, parallel=1), embedding=False)
    try:
        question = prompt(engine, "Name a color.")
        answer = text(collect(engine, question, greedy(8))[0])
        for entry in engine._work._ledger.host._entries:  # damage what the first request left in RAM
            entry.state = (ctypes.c_uint8 * 16)()
        usage = Usage()
        assert text(collect(engine, question, greedy(8), usage=usage)[0]) == answer
        assert usage.cached_tokens == 0
    finally:
        engine.close()


def test_cancelled_request_frees_its_sequence(smollm_gguf: Path) -> None:
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=1024, parallel=1), embedding=False)
    try:
        cancel = threading.Event()
        stream = iter(engine.generate(prompt(engine, "Tell me a long story."), greedy(500), 1, Usage(), cancel))
        next(stream)
        cancel.set()
        assert list(stream) == []
        second = collect(engine, prompt(engine, "What is 2+2?"), greedy(8))[0]
        assert finish(second) in ("stop", "length")
        assert engine.stats()["active_sequences"] == 0
    finally:
        engine.close()


def test_preempted_request_loses_no_tokens(smollm_gguf: Path) -> None:
    # 256 cells hold one request of ~15 prompt + 200 generated tokens, never two at once. The
    # pre-empted request re-evaluates 100+ tokens in one chunk (the tiled kernel), so its text
    # may drift from the text alone (see the module docstring); every token still arrives.
    engine = BatchEngine(smollm_gguf, EngineOptions(ctx_size=256, parallel=2), embedding=False)
    try:
        questions = ["Tell me about dogs.", "Tell me about cats."]
        ends = engine.vocab.tokenize("<|im_end|><|endoftext|>", add_special=False, parse_special=True)
        params = SamplingParams(temperature=0.0, max_tokens=200, frequency_penalty=0.5,
                                logit_bias={token: -100.0 for token in ends})  # always all 200 tokens
        alone = [text(collect(engine, prompt(engine, q), params)[0]) for q in questions]
        usages = [Usage(), Usage()]
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(lambda i: collect(engine, prompt(engine, questions[i]), params,
                                                       usage=usages[i])[0], range(2)))
        assert engine.stats()["preemptions"] >= 1
        assert [finish(d) for d in together] == ["length", "length"]
        assert [u.completion_tokens for u in usages] == [200, 200]
        for deltas, expected in zip(together, alone, strict=True):
            assert text(deltas)[:60] == expected[:60]  # its own answer, not the other's
            assert abs(len(engine.vocab.tokenize(text(deltas))) - 200) <= 5
        assert engine.stats()["kv_cells_used"] <= 256
    finally:
        engine.close()


def test_request_that_can_never_fit_is_a_clear_error(engine: BatchEngine) -> None:
    too_long = engine.vocab.tokenize("hello " * 5000)
    with pytest.raises(ContextLengthExceededError, match="maximum context length is 4096 tokens"):
        collect(engine, too_long, greedy())
    with pytest.raises(InvalidRequestError, match="n is at most 4"):
        collect(engine, prompt(engine, "Hi"), greedy(), n=5)


def test_grammar_constrains_the_output(engine: BatchEngine) -> None:
    deltas = collect(engine, prompt(engine, "Is the sky blue?"), greedy(8, grammar='root ::= "yes" | "no"'))[0]
    assert text(deltas) in ("yes", "no") and finish(deltas) == "stop"
    with pytest.raises(InvalidRequestError):
        collect(engine, prompt(engine, "Hi"), greedy(grammar="root ::= ("))


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_batched_equal_embeddings_alone(embedder: BatchEngine) -> None:
    sentences = [f"Sentence number {i} is about {topic}." for i, topic in
                 enumerate(["cats", "the weather", "stock markets", "football", "music"] * 8)]
    inputs = [embedder.vocab.tokenize(s) for s in sentences]
    alone = [embedder.embed([tokens], threading.Event())[0] for tokens in inputs[:5]]
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(lambda part: embedder.embed(part, threading.Event()),
                                [inputs[i:i + 10] for i in range(0, 40, 10)]))
    together = [v for batch in batches for v in batch]
    assert len(together) == 40 and len(together[0]) == 384
    for a, b in zip(alone, together[:5], strict=True):
        assert cosine(a, b) > 0.9999
    assert math.isclose(sum(x * x for x in together[7]), 1.0, rel_tol=1e-5)
    reference = embedder.embed([embedder.vocab.tokenize("This is an example sentence")], threading.Event())[0]
    assert [round(x, 3) for x in reference[:2]] == [0.068, 0.063]
    cat, kitten = (embedder.embed([embedder.vocab.tokenize(s)], threading.Event())[0]
                   for s in ("The cat sits on the mat", "The kitten rests on the rug"))
    assert cosine(cat, kitten) == pytest.approx(0.67, abs=0.02)


def test_deltas_that_queued_up_are_merged_per_choice_until_each_finishes() -> None:
    failure = RuntimeError("decode failed")
    events = [TextDelta(0, "a", []), TextDelta(0, "b", [], "stop"), TextDelta(0, "c", []),
              TextDelta(1, "x", []), TextDelta(1, "y", []), failure, DONE]
    assert merged(events) == [TextDelta(0, "ab", [], "stop"), TextDelta(0, "c", []), TextDelta(1, "xy", []),
                              failure, DONE]
