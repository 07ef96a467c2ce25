"""A deterministic engine with no weights, for plumbing tests only.

It implements every capability interface; `spec.kind` decides which ones it advertises.
`spec.metadata` tunes it for tests:
  fake_delay: seconds to sleep per decode step / chunk (so a test can disconnect mid-stream)
  fake_crash_after: exit the whole process (os._exit) after this many generated tokens
  fake_load_error: raise EngineError with this message while loading
  context_length, embedding_length: sizes it reports

Text streams the way the llama engine's do (runtime/engines/llama/batch.py), so plumbing tests take
the path real text takes: `generate` validates up front and returns a DeltaStream over a per-request
Mailbox; one decode thread steps every running choice of every request together, one token each per
step. Its "model" prefers one word per step, drawn from a seeded generator; logit_bias moves that
choice and logprobs are a log-softmax over its ten words. It cannot follow a GBNF grammar (`grammar`
is ignored) and ignores temperature, top_p and the penalties: it is for plumbing, not for output.
"""

from __future__ import annotations

import hashlib
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from runtime.engines.base import (
    ImageParams,
    SamplingParams,
    SpeechChunk,
    TextDelta,
    TokenLogprob,
    TranscriptionInfo,
    TranscriptionParams,
    TranscriptSegment,
    TranscriptWord,
    Usage,
    check_generation,
)
from runtime.engines.llama.stops import StopScanner
from runtime.engines.llama.stream import DeltaStream
from runtime.errors import EngineError, InvalidRequestError
from runtime.http.bridge import DONE, Mailbox
from runtime.spec import KINDS, ModelSpec

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
TOKEN_OFFSET = 10  # ids below this are special tokens
BOS = 1
WORD_TOKEN_BASE = TOKEN_OFFSET + 0x110000  # generated words have ids past every character's
PARALLEL = 4  # choices decoded at once when --parallel is unset
NATURAL_LENGTH = 12  # tokens a choice runs to when max_tokens is unset
SAMPLE_RATE = 16000
FAKE_SEGMENTS = ("Hello from the fake engine.", "This is the second segment.")


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def word_token(word: str) -> int:
    """The token id the fake generates for one of WORDS (it detokenizes to " " + word)."""
    return WORD_TOKEN_BASE + WORDS.index(word)


@dataclass(eq=False)
class _Choice:
    index: int
    rng: random.Random  # picks the word the fake "model" prefers at each step
    stops: StopScanner
    generated: int = 0
    finished: bool = False
    held_logprobs: list[TokenLogprob] = field(default_factory=list)  # for text the stop scanner holds


@dataclass(eq=False)
class _Request:
    prompt_tokens: int
    params: SamplingParams
    usage: Usage
    cancel: threading.Event
    choices: list[_Choice]
    events: Mailbox = field(default_factory=Mailbox)
    abandoned: threading.Event = field(default_factory=threading.Event)  # the caller stopped reading

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()

    def running(self) -> list[_Choice]:
        return [c for c in self.choices if not c.finished]


class FakeEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.capabilities = KINDS[spec.kind].capabilities
        self.delay = float(spec.metadata.get("fake_delay", 0.0))
        self.crash_after = spec.metadata.get("fake_crash_after")
        self.context_length = spec.options.ctx_size or int(spec.metadata.get("context_length", 2048))
        self.embedding_length = int(spec.metadata.get("embedding_length", 8))
        self.parallel = spec.options.parallel or PARALLEL
        self.voices = ["fake"]
        self._generated = 0
        self._seeded = False  # whether a seeded request came, for which the llama engine makes a context of its own
        self._lock = threading.Lock()
        if spec.metadata.get("fake_load_error"):
            raise EngineError(str(spec.metadata["fake_load_error"]))
        # Owned by the decode thread; other threads only submit to the inbox (and read lengths in stats).
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._waiting: list[_Request] = []  # submitted, oldest first, until their choices fit in `parallel`
        self._running: list[_Request] = []
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="fake-decode", daemon=True)
        self._thread.start()

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"engine": "fake", "kind": self.spec.kind, "options": self.spec.options.as_dict()}
        if self.spec.kind in ("llm", "embedding"):
            facts.update(context_length=self.context_length, parallel=self.parallel,
                         embedding_length=self.embedding_length, seeded_context=self._seeded)
        if self.spec.kind == "speech":
            facts["voices"] = self.voices
        return facts

    def stats(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "waiting_requests": len(self._waiting),
                "active_sequences": sum(len(r.running()) for r in list(self._running))}

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._inbox.put(DONE)
        self._thread.join()

    def _pace(self) -> None:
        if self.delay:
            time.sleep(self.delay)

    def _count(self) -> None:
        """Count one generated token (image, chunk); crashes the process when the spec asks for it."""
        with self._lock:
            self._generated += 1
            if self.crash_after is not None and self._generated > int(self.crash_after):
                os._exit(1)

    def _step(self, cancel: threading.Event) -> bool:
        """Pace one image / audio chunk; False once cancelled."""
        self._pace()
        self._count()
        return not cancel.is_set()

    # Text

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special else []) + [ord(c) + TOKEN_OFFSET for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(" " + WORDS[t - WORD_TOKEN_BASE] if t >= WORD_TOKEN_BASE else chr(t - TOKEN_OFFSET)
                       for t in tokens if t >= TOKEN_OFFSET)

    def document_start(self) -> list[int]:
        return [BOS]

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        parts = []
        for message in messages:
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"<|im_start|>{message.get('role', 'user')}\n{content}<|im_end|>\n")
        return "".join(parts) + "<|im_start|>assistant\n"

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> DeltaStream:
        """Deltas for `n` choices of one prompt, decoded together with every other request."""
        self._check_generate(prompt, n)
        self._seeded = self._seeded or params.seed is not None
        usage.prompt_tokens = len(prompt)
        choices = [_Choice(index, random.Random(_digest(prompt, params.seed or 0, index)), StopScanner(params.stop))
                   for index in range(n)]
        request = _Request(len(prompt), params, usage, cancel, choices)
        return DeltaStream(request.events, cancel, request.abandoned, lambda: self._inbox.put(request))

    def _check_generate(self, prompt: list[int], n: int) -> None:
        if self._closing:
            raise EngineError("The engine is closed.")
        check_generation(prompt, n, parallel=self.parallel, context_length=self.context_length,
                         embedding_only=self.spec.kind == "embedding")

    # The decode thread

    def _run(self) -> None:
        while True:
            try:
                while True:  # block for work only when there is none
                    item = self._inbox.get(block=not (self._waiting or self._running))
                    if item is DONE:
                        for request in self._waiting + self._running:
                            request.events.put(DONE)
                        return
                    self._waiting.append(item)
            except queue.Empty:
                pass
            self._decode_step()

    def _decode_step(self) -> None:
        """Drop what was cancelled or abandoned, admit what fits, then one token for every running choice."""
        for request in [r for r in self._waiting + self._running if r.cancelled]:
            self._end(request)
        while self._waiting and self._slots_used() + len(self._waiting[0].choices) <= self.parallel:
            self._running.append(self._waiting.pop(0))
        if not self._running:
            return
        self._pace()  # one step takes `delay`, however many choices it advances (as a batched decode does)
        for request in list(self._running):
            for choice in request.running():
                self._advance(request, choice)
            if not request.running():
                self._end(request)

    def _slots_used(self) -> int:
        return sum(len(r.running()) for r in self._running)

    def _end(self, request: _Request) -> None:
        for choice in request.choices:
            choice.finished = True
        for pool in (self._waiting, self._running):
            if request in pool:
                pool.remove(request)
        request.events.put(DONE)

    def _advance(self, request: _Request, choice: _Choice) -> None:
        params = request.params
        if params.max_tokens is None and choice.generated >= NATURAL_LENGTH:
            self._finish(request, choice, "stop", choice.stops.flush())  # the fake's end-of-generation token
            return
        token, logprob = self._sample(params, choice)
        if logprob is not None:
            choice.held_logprobs.append(logprob)
        self._count()
        choice.generated += 1
        request.usage.completion_tokens += 1
        text, stopped = choice.stops.feed(self.detokenize([token]))
        if stopped:
            self._finish(request, choice, "stop", text)
        elif choice.generated == params.max_tokens or request.prompt_tokens + choice.generated >= self.context_length:
            self._finish(request, choice, "length", text + choice.stops.flush())
        else:
            self._emit(request, choice, text)

    def _sample(self, params: SamplingParams, choice: _Choice) -> tuple[int, TokenLogprob | None]:
        """The next word: the one the seeded generator prefers unless logit_bias moves the choice.
        Logits fall by one per place after the preferred word, so logprobs are a fixed log-softmax;
        like llama.cpp's, they are of the model's logits, before the bias."""
        favourite = choice.rng.randrange(len(WORDS))
        logits = [-float((i - favourite) % len(WORDS)) for i in range(len(WORDS))]
        biased = [logit + params.logit_bias.get(WORD_TOKEN_BASE + i, 0.0) for i, logit in enumerate(logits)]
        picked = max(range(len(WORDS)), key=lambda i: (biased[i], logits[i]))
        if params.logprobs is None:
            return WORD_TOKEN_BASE + picked, None
        log_total = math.log(sum(math.exp(logit) for logit in logits))

        def entry(i: int) -> tuple[str, float, list[int]]:
            piece = " " + WORDS[i]
            return piece, logits[i] - log_total, list(piece.encode())

        ranked = sorted(range(len(WORDS)), key=lambda i: -logits[i])[: params.logprobs]
        return WORD_TOKEN_BASE + picked, TokenLogprob(*entry(picked), top=[entry(i) for i in ranked])

    def _finish(self, request: _Request, choice: _Choice, reason: str, text: str) -> None:
        self._emit(request, choice, text, reason)
        choice.finished = True

    def _emit(self, request: _Request, choice: _Choice, text: str, finish_reason: str | None = None) -> None:
        if not text and finish_reason is None:
            return  # the stop scanner holds it; its logprobs go out with the text
        matched = choice.stops.matched if finish_reason else None
        request.events.put(TextDelta(choice.index, text, choice.held_logprobs, finish_reason, matched))
        choice.held_logprobs = []

    def infill(self, prefix: str, suffix: str) -> list[int]:
        raise InvalidRequestError("This model does not support 'suffix' (it has no fill-in-the-middle tokens).",
                                  param="suffix")

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        vectors = []
        for tokens in inputs:
            if cancel.is_set():
                raise EngineError("Cancelled.")
            rng = random.Random(_digest(tokens))
            raw = [rng.uniform(-1, 1) for _ in range(self.embedding_length)]
            norm = math.sqrt(sum(v * v for v in raw)) or 1.0
            vectors.append([v / norm for v in raw])
        return vectors

    # Images

    def resolve(self, params: ImageParams) -> ImageParams:
        width, height = (params.width, params.height) if params.width and params.height else (64, 64)
        return replace(params, width=width, height=height, seed=params.seed or 0, steps=params.steps or 1)

    def generate_images(self, params: ImageParams, cancel: threading.Event,
                        on_preview: Callable[[int, Any], None] | None = None) -> Iterator[Any]:
        from PIL import Image

        params = self.resolve(params)
        for index in range(params.n):
            if not self._step(cancel):
                return
            colour = _digest(params.prompt, params.seed, index).to_bytes(8, "big")[:3]
            image = Image.new("RGB", (params.width, params.height), tuple(colour))
            for _ in range(params.previews if on_preview else 0):
                on_preview(index, image)
            yield image

    # Audio

    def synthesize(self, text: str, voice: str | None, speed: float,
                   cancel: threading.Event) -> Iterator[SpeechChunk]:
        import numpy as np

        if voice not in (None, *self.voices):
            raise InvalidRequestError(f"Unknown voice '{voice}'. Available: {', '.join(self.voices)}.",
                                      param="voice")
        sentences = [s for s in text.replace("!", ".").replace("?", ".").split(".") if s.strip()] or [text]
        for number, _ in enumerate(sentences):
            if not self._step(cancel):
                return
            seconds = 0.2 / max(speed, 0.25)
            times = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
            wave = 0.3 * np.sin(2 * np.pi * (440 + 110 * number) * times)
            yield SpeechChunk((wave * 32767).astype(np.int16), SAMPLE_RATE)

    def transcribe(self, audio: Any, params: TranscriptionParams,
                   cancel: threading.Event) -> tuple[TranscriptionInfo, Iterator[TranscriptSegment]]:
        duration = len(audio) / SAMPLE_RATE
        info = TranscriptionInfo(language=params.language or "en", duration=duration)
        return info, self._segments(duration, params, cancel)

    def _segments(self, duration: float, params: TranscriptionParams,
                  cancel: threading.Event) -> Iterator[TranscriptSegment]:
        span = duration / len(FAKE_SEGMENTS)
        for number, text in enumerate(FAKE_SEGMENTS):
            if not self._step(cancel):
                return
            start, end = number * span, (number + 1) * span
            words = _words(text, start, end) if params.word_timestamps else []
            yield TranscriptSegment(number, start, end, " " + text, tokens=self.tokenize(text, add_special=False),
                                    avg_logprob=-0.1, compression_ratio=1.0, words=words)


def _words(text: str, start: float, end: float) -> list[TranscriptWord]:
    words = text.split()
    step = (end - start) / len(words)
    return [TranscriptWord(" " + w, start + i * step, start + (i + 1) * step, 0.9) for i, w in enumerate(words)]
