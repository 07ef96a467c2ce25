"""The fake engine streams text the way the llama engine does: validated up front, one decode thread,
choices interleaved, a DeltaStream readable blocking or on a loop, abandoned / cancelled requests dropped."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runtime.engines.base import SamplingParams, TextDelta, Usage
from runtime.engines.fake import WORDS, FakeEngine, word_token
from runtime.errors import ContextLengthExceededError, EngineError, InvalidRequestError
from runtime.http.bridge import read_on_loop
from runtime.options import EngineOptions
from runtime.spec import ModelSpec

PROMPT = [1, 20, 21, 22]


@pytest.fixture
def make() -> Iterator[Callable[..., FakeEngine]]:
    engines: list[FakeEngine] = []

    def make(parallel: int | None = None, **metadata: Any) -> FakeEngine:
        spec = ModelSpec("m", "llm", "fake", {"model": Path("none")}, metadata, EngineOptions(parallel=parallel))
        engines.append(FakeEngine(spec))
        return engines[-1]

    yield make
    for engine in engines:
        engine.close()


def generate(engine: FakeEngine, params: SamplingParams, n: int = 1, usage: Usage | None = None,
             cancel: threading.Event | None = None) -> list[TextDelta]:
    return list(engine.generate(PROMPT, params, n, usage or Usage(), cancel or threading.Event()))


def text_of(deltas: list[TextDelta], index: int = 0) -> str:
    return "".join(d.text for d in deltas if d.index == index)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_choices_interleave_one_token_per_step(make: Callable[..., FakeEngine]) -> None:
    engine = make()
    usage = Usage()
    deltas = generate(engine, SamplingParams(max_tokens=3, seed=5), n=2, usage=usage)
    assert [d.index for d in deltas] == [0, 1, 0, 1, 0, 1]
    assert [d.finish_reason for d in deltas[-2:]] == ["length", "length"]
    assert all(len(d.text.split()) == 1 and d.text.strip() in WORDS for d in deltas)
    assert usage.prompt_tokens == len(PROMPT) and usage.completion_tokens == 6
    assert deltas == generate(engine, SamplingParams(max_tokens=3, seed=5), n=2)  # deterministic


def test_concurrent_requests_share_the_decode_steps(make: Callable[..., FakeEngine]) -> None:
    engine = make(fake_delay=0.05)
    first = iter(engine.generate(PROMPT, SamplingParams(max_tokens=20), 1, Usage(), threading.Event()))
    second = iter(engine.generate(PROMPT, SamplingParams(max_tokens=20), 1, Usage(), threading.Event()))
    next(first), next(second)
    assert engine.stats()["active_sequences"] == 2  # both run at once, not one after the other
    first.close(), second.close()


def test_async_iteration_reads_on_the_loop_without_a_thread(make: Callable[..., FakeEngine]) -> None:
    engine = make()
    params = SamplingParams(max_tokens=4, seed=3)
    stream = engine.generate(PROMPT, params, 2, Usage(), threading.Event())
    assert isinstance(stream, AsyncIterable)
    before = {t.ident for t in threading.enumerate()}

    async def read() -> tuple[list[TextDelta], set[int | None]]:
        deltas = [d async for d in read_on_loop(stream, threading.Event())]
        return deltas, {t.ident for t in threading.enumerate()} - before

    deltas, new_threads = asyncio.run(read())
    assert new_threads == set()  # no engine-stream hand-over thread
    assert deltas == generate(engine, params, n=2)


def test_abandoning_a_stream_drops_its_request(make: Callable[..., FakeEngine]) -> None:
    engine = make(fake_delay=0.01)
    stream = iter(engine.generate(PROMPT, SamplingParams(max_tokens=1000), 1, Usage(), threading.Event()))
    next(stream)
    assert engine.stats()["active_sequences"] == 1
    stream.close()  # the reader stops early
    wait_until(lambda: engine.stats()["active_sequences"] == 0, "the decode thread to drop the request")
    produced = engine._generated
    time.sleep(0.1)
    assert engine._generated == produced


def test_abandoning_an_async_stream_drops_its_request(make: Callable[..., FakeEngine]) -> None:
    engine = make(fake_delay=0.01)

    async def read_one() -> None:
        stream = aiter(engine.generate(PROMPT, SamplingParams(max_tokens=1000), 1, Usage(), threading.Event()))
        await anext(stream)
        await stream.aclose()

    asyncio.run(read_one())
    wait_until(lambda: engine.stats()["active_sequences"] == 0, "the decode thread to drop the request")


def test_cancel_stops_the_request(make: Callable[..., FakeEngine]) -> None:
    engine = make(fake_delay=0.01)
    cancel, usage = threading.Event(), Usage()
    deltas = []
    for delta in engine.generate(PROMPT, SamplingParams(max_tokens=1000), 1, usage, cancel):
        deltas.append(delta)
        cancel.set()
    assert len(deltas) <= 2 and all(d.finish_reason is None for d in deltas)
    wait_until(lambda: engine.stats()["active_sequences"] == 0, "the decode thread to drop the request")
    assert usage.completion_tokens < 10


def test_requests_beyond_parallel_wait_for_a_slot(make: Callable[..., FakeEngine]) -> None:
    engine = make(parallel=2, fake_delay=0.01)
    first = iter(engine.generate(PROMPT, SamplingParams(max_tokens=1000), 2, Usage(), threading.Event()))
    next(first)
    waiting = engine.generate(PROMPT, SamplingParams(max_tokens=2), 1, Usage(), threading.Event())
    done: list[list[TextDelta]] = []
    reader = threading.Thread(target=lambda: done.append(list(waiting)))
    reader.start()
    wait_until(lambda: engine.stats()["waiting_requests"] == 1, "the second request to queue")
    assert not done
    first.close()
    reader.join(5)
    assert done and done[0][-1].finish_reason == "length"


def test_up_front_checks_match_the_llama_engine(make: Callable[..., FakeEngine]) -> None:
    engine = make(parallel=2, context_length=16)
    assert engine.info()["parallel"] == 2
    with pytest.raises(InvalidRequestError) as caught:
        engine.generate(PROMPT, SamplingParams(), 3, Usage(), threading.Event())
    assert caught.value.param == "n"
    assert str(caught.value) == "n is at most 2 for this model (its --parallel setting)."
    with pytest.raises(ContextLengthExceededError):
        engine.generate([1] * 16, SamplingParams(), 1, Usage(), threading.Event())
    with pytest.raises(InvalidRequestError):
        engine.generate([], SamplingParams(), 1, Usage(), threading.Event())
    assert make().info()["parallel"] == 4  # the default it reports is the limit it enforces
    make().generate(PROMPT, SamplingParams(), 4, Usage(), threading.Event())


def test_a_full_context_ends_with_length(make: Callable[..., FakeEngine]) -> None:
    engine = make(context_length=len(PROMPT) + 3)
    deltas = generate(engine, SamplingParams())
    assert len(text_of(deltas).split()) == 3 and deltas[-1].finish_reason == "length"


def test_natural_end_and_stop_strings(make: Callable[..., FakeEngine]) -> None:
    engine = make()
    natural = generate(engine, SamplingParams(seed=1))
    assert natural[-1].finish_reason == "stop" and len(text_of(natural).split()) == 12
    full = text_of(natural)
    words = full.split()
    stop = words[1][-2:] + " " + words[2][:2]  # spans a token boundary: held back until the next word decides
    stopped = generate(engine, SamplingParams(seed=1, stop=[stop]))
    assert text_of(stopped) == full[: full.find(stop)] and stopped[-1].finish_reason == "stop"
    assert all(d.text for d in stopped[:-1])  # the held-back tail never goes out as an empty delta


def test_logit_bias_bans_and_forces_words(make: Callable[..., FakeEngine]) -> None:
    engine = make()
    plain = text_of(generate(engine, SamplingParams(max_tokens=30, seed=2))).split()
    banned = plain[0]
    avoided = text_of(generate(engine, SamplingParams(max_tokens=30, seed=2,
                                                     logit_bias={word_token(banned): -100}))).split()
    assert len(avoided) == 30 and banned not in avoided
    forced = text_of(generate(engine, SamplingParams(max_tokens=5, logit_bias={word_token("golf"): 100})))
    assert forced.split() == ["golf"] * 5
    assert engine.detokenize([word_token("golf")]) == " golf"


def test_logprobs_have_the_requested_alternatives(make: Callable[..., FakeEngine]) -> None:
    engine = make()
    deltas = generate(engine, SamplingParams(max_tokens=6, seed=4, logprobs=3), n=2)
    for index in (0, 1):
        entries = [lp for d in deltas if d.index == index for lp in d.logprobs]
        assert "".join(lp.token for lp in entries) == text_of(deltas, index)
        assert len(entries) == 6
        for lp in entries:
            assert lp.logprob <= 0 and lp.bytes == list(lp.token.encode())
            assert len(lp.top) == 3 and [t[1] for t in lp.top] == sorted((t[1] for t in lp.top), reverse=True)
            assert all(t[1] <= 0 and t[2] == list(t[0].encode()) for t in lp.top)
            assert lp.top[0][0] == lp.token  # unbiased: the likeliest word is the one produced
            assert sum(math.exp(t[1]) for t in lp.top) <= 1
    assert deltas == generate(engine, SamplingParams(max_tokens=6, seed=4, logprobs=3), n=2)
    without = generate(engine, SamplingParams(max_tokens=6, seed=4), n=2)
    assert all(d.logprobs == [] for d in without)


def test_close_stops_the_decode_thread(make: Callable[..., FakeEngine]) -> None:
    engine = make(fake_delay=0.01)
    stream = iter(engine.generate(PROMPT, SamplingParams(max_tokens=1000), 1, Usage(), threading.Event()))
    next(stream)
    engine.close()
    assert not engine._thread.is_alive()
    assert all(d.finish_reason is None for d in stream)  # the reader is released, not left hanging
    with pytest.raises(EngineError, match="closed"):
        engine.generate(PROMPT, SamplingParams(), 1, Usage(), threading.Event())
