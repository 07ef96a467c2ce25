"""A deterministic engine with no weights, for plumbing tests only.

It implements every capability interface; `spec.kind` decides which ones it advertises.
`spec.metadata` tunes it for tests:
  fake_delay: seconds to sleep per token / chunk (so a test can disconnect mid-stream)
  fake_crash_after: exit the whole process (os._exit) after this many generated tokens
  fake_load_error: raise EngineError with this message while loading
  context_length, embedding_length: sizes it reports
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from runtime.engines.base import (
    KIND_CAPABILITIES,
    ImageParams,
    ModelSpec,
    SamplingParams,
    SpeechChunk,
    TextDelta,
    TranscriptionInfo,
    TranscriptionParams,
    TranscriptSegment,
    TranscriptWord,
    Usage,
)
from runtime.errors import EngineError, InvalidRequestError

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet")
TOKEN_OFFSET = 10  # ids below this are special tokens
BOS = 1
NATURAL_LENGTH = 12  # tokens a choice runs to when max_tokens is unset
SAMPLE_RATE = 16000
FAKE_SEGMENTS = ("Hello from the fake engine.", "This is the second segment.")


def _digest(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


class FakeEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.capabilities = KIND_CAPABILITIES[spec.kind]
        self.delay = float(spec.metadata.get("fake_delay", 0.0))
        self.crash_after = spec.metadata.get("fake_crash_after")
        self.context_length = spec.options.ctx_size or int(spec.metadata.get("context_length", 2048))
        self.embedding_length = int(spec.metadata.get("embedding_length", 8))
        self.voices = ["fake"]
        self._generated = 0
        self._lock = threading.Lock()
        if spec.metadata.get("fake_load_error"):
            raise EngineError(str(spec.metadata["fake_load_error"]))

    def info(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"engine": "fake", "kind": self.spec.kind, "options": self.spec.options.as_dict()}
        if self.spec.kind in ("llm", "embedding"):
            facts.update(context_length=self.context_length, parallel=self.spec.options.parallel or 4,
                         embedding_length=self.embedding_length)
        if self.spec.kind == "speech":
            facts["voices"] = self.voices
        return facts

    def close(self) -> None:
        pass

    def _step(self, cancel: threading.Event) -> bool:
        """Pace one token; False once cancelled. Crashes the process when the spec asks for it."""
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self._generated += 1
            if self.crash_after is not None and self._generated > int(self.crash_after):
                os._exit(1)
        return not cancel.is_set()

    # Text

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special else []) + [ord(c) + TOKEN_OFFSET for c in text]

    def detokenize(self, tokens: list[int]) -> str:
        return "".join(chr(t - TOKEN_OFFSET) for t in tokens if t >= TOKEN_OFFSET)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        parts = []
        for message in messages:
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            parts.append(f"<|im_start|>{message.get('role', 'user')}\n{content}<|im_end|>\n")
        return "".join(parts) + "<|im_start|>assistant\n"

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> Iterator[TextDelta]:
        usage.prompt_tokens = len(prompt)
        room = max(0, self.context_length - len(prompt))
        limit = min(params.max_tokens if params.max_tokens is not None else NATURAL_LENGTH, room)
        for index in range(n):
            rng = random.Random(_digest(prompt, params.seed or 0, index))
            text = ""
            for _ in range(limit):
                if not self._step(cancel):
                    return
                piece = " " + rng.choice(WORDS)
                usage.completion_tokens += 1
                stop_at = _first_stop(text + piece, params.stop)
                if stop_at is not None:
                    yield TextDelta(index, (text + piece)[len(text):stop_at], finish_reason="stop")
                    break
                text += piece
                yield TextDelta(index, piece)
            else:
                hit_limit = params.max_tokens is not None or limit < NATURAL_LENGTH
                yield TextDelta(index, "", finish_reason="length" if hit_limit else "stop")

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


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def _words(text: str, start: float, end: float) -> list[TranscriptWord]:
    words = text.split()
    step = (end - start) / len(words)
    return [TranscriptWord(" " + w, start + i * step, start + (i + 1) * step, 0.9) for i, w in enumerate(words)]
