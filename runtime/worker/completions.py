"""The legacy /v1/completions on a TextEngine: several prompts, echo, suffix and integer logprobs."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from runtime.engines.base import SamplingParams, TextDelta, TextEngine, Usage
from runtime.errors import check_context
from runtime.http.bridge import read_on_loop
from runtime.protocol import completions as wire
from runtime.protocol.chat import stop_list
from runtime.protocol.completions import CreateCompletionRequest
from runtime.worker.chat import sampling_params


@dataclass
class CompletionJob:
    request: CreateCompletionRequest
    prompts: list[list[int]]
    echoes: list[str]  # prompt text per prompt, when echo is on
    params: SamplingParams
    n: int  # choices returned per prompt
    candidates: int  # choices generated per prompt (best_of); the n best are returned
    fingerprint: str
    usages: list[Usage] = field(default_factory=list)
    completion_id: str = field(default_factory=lambda: "cmpl-" + uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    def token_counts(self) -> tuple[int, int]:
        """(prompt, completion) tokens so far, over every prompt."""
        return sum(u.prompt_tokens for u in self.usages), sum(u.completion_tokens for u in self.usages)

    def usage(self) -> dict[str, Any]:
        return wire.usage(*self.token_counts())


def prepare(engine: TextEngine, req: CreateCompletionRequest, fingerprint: str) -> CompletionJob:
    prompts, echoes = [], []
    for prompt in req.prompts():
        if req.suffix is not None:
            tokens = engine.infill(prompt if isinstance(prompt, str) else engine.detokenize(prompt), req.suffix)
        else:
            tokens = engine.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        tokens = tokens or engine.document_start()  # an empty prompt starts a document, as OpenAI's does
        check_context(engine.context_length, len(tokens), req.max_tokens, param="prompt")
        prompts.append(tokens)
        echoes.append((prompt if isinstance(prompt, str) else engine.detokenize(prompt)) if req.echo else "")
    params = sampling_params(req.temperature, req.top_p, req.seed, req.presence_penalty, req.frequency_penalty,
                             req.logit_bias, stop_list(req.stop), req.max_tokens)
    n = req.n or 1
    # Ranking best_of candidates needs each token's log-probability, asked for or not.
    params.logprobs = req.logprobs if req.logprobs is not None or req.candidates == n else 0
    return CompletionJob(req, prompts, echoes, params, n, req.candidates, fingerprint)


def generate_all(engine: TextEngine, job: CompletionJob, cancel: threading.Event) -> Iterator[tuple[int, TextDelta]]:
    """(choice index across all prompts, delta), prompt after prompt. More best_of candidates than the engine
    decodes at once are generated in rounds, each round's seeds following on from the last."""
    for number, prompt in enumerate(job.prompts):
        usage = Usage()
        job.usages.append(usage)
        at_once = max(1, engine.parallel)
        for first in range(0, job.candidates, at_once):
            count = min(at_once, job.candidates - first)
            seed = None if job.params.seed is None else job.params.seed + first
            for delta in engine.generate(prompt, replace(job.params, seed=seed), count, usage, cancel):
                yield number * job.candidates + first + delta.index, delta


async def stream_all(engine: TextEngine, job: CompletionJob,
                     cancel: threading.Event) -> AsyncIterator[tuple[int, TextDelta]]:
    """`generate_all` read on the event loop (see `read_on_loop`)."""
    for number, prompt in enumerate(job.prompts):
        usage = Usage()
        job.usages.append(usage)
        async for delta in read_on_loop(engine.generate(prompt, job.params, job.n, usage, cancel), cancel):
            yield number * job.n + delta.index, delta


class LegacyLogprobs:
    """The `{tokens, token_logprobs, top_logprobs, text_offset}` shape, built token by token."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.logprobs: list[float | None] = []
        self.top: list[dict[str, float] | None] = []
        self.offsets: list[int] = []

    def add(self, delta: TextDelta, offset: int) -> None:
        for lp in delta.logprobs:
            self.tokens.append(lp.token)
            self.logprobs.append(lp.logprob)
            self.top.append({token: logprob for token, logprob, _ in lp.top})
            self.offsets.append(offset)
            offset += len(lp.token)

    def mean(self) -> float:
        """Mean log-probability of the tokens (0 for none: an empty completion is certain)."""
        scored = [lp for lp in self.logprobs if lp is not None]
        return sum(scored) / len(scored) if scored else 0.0

    def dict(self) -> dict[str, Any]:
        return wire.legacy_logprobs(self.tokens, self.logprobs, self.top, self.offsets)


def collect(engine: TextEngine, job: CompletionJob, cancel: threading.Event) -> dict[str, Any]:
    total = len(job.prompts) * job.candidates
    texts = [job.echoes[i // job.candidates] for i in range(total)]
    finish: dict[int, str] = {}
    logprobs = [LegacyLogprobs() for _ in range(total)]
    for index, delta in generate_all(engine, job, cancel):
        logprobs[index].add(delta, len(texts[index]))
        texts[index] += delta.text
        if delta.finish_reason:
            finish[index] = delta.finish_reason
    wanted = job.request.logprobs is not None
    choices = [wire.choice(number, texts[i], finish.get(i, "stop"), logprobs[i].dict() if wanted else None)
               for number, i in enumerate(best(job, logprobs))]
    return wire.completion(job.completion_id, job.created, job.request.model, job.fingerprint, choices, job.usage())


def best(job: CompletionJob, logprobs: list[LegacyLogprobs]) -> list[int]:
    """The candidates returned, prompt by prompt: all of them, or the n with the highest mean log-probability."""
    if job.candidates == job.n:
        return list(range(len(logprobs)))
    chosen = []
    for first in range(0, len(logprobs), job.candidates):
        ranked = sorted(range(first, first + job.candidates), key=lambda i: -logprobs[i].mean())
        chosen += ranked[: job.n]
    return chosen


async def stream(engine: TextEngine, job: CompletionJob, cancel: threading.Event) -> AsyncIterator[dict[str, Any]]:
    wanted = job.params.logprobs is not None
    offsets: dict[int, int] = {}

    def chunk(index: int, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        choices = [wire.choice(index, text, finish_reason, logprobs)]
        return wire.completion(job.completion_id, job.created, job.request.model, job.fingerprint, choices, None)

    async for index, delta in stream_all(engine, job, cancel):
        if index not in offsets:
            echo = job.echoes[index // job.n]
            offsets[index] = len(echo)
            if echo:
                yield chunk(index, echo, None, None)
        if delta.text or delta.logprobs:
            logprobs = LegacyLogprobs()
            logprobs.add(delta, offsets[index])
            offsets[index] += len(delta.text)
            yield chunk(index, delta.text, None, logprobs.dict() if wanted else None)
        if delta.finish_reason:
            yield chunk(index, "", delta.finish_reason, None)
    options = job.request.stream_options
    if options is not None and options.include_usage:
        yield wire.completion(job.completion_id, job.created, job.request.model, job.fingerprint, [], job.usage())
