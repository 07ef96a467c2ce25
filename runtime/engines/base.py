"""The engine contract: one small interface per capability.

Engines never see OpenAI wire schemas (runtime/protocol); the worker adapters translate between
the two. Engines are synchronous and may block: the worker calls them from threads. Long-running
calls take a `cancel` event and stop at the next step once it is set. Engines raise
runtime.errors, never HTTP exceptions.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from runtime.errors import InvalidRequestError, check_context


class Engine(Protocol):
    capabilities: frozenset[str]  # subset of "chat", "completions", "embeddings", "images",
    #                               "image_edits", "speech", "transcriptions", "translations"

    def info(self) -> dict[str, Any]:
        """Facts for /models meta and `ps`: context length, voices, sizes, options in effect."""
        ...

    def close(self) -> None: ...


# Text (llama.cpp)


@dataclass
class SamplingParams:
    max_tokens: int | None = None  # None = until the context is full
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None  # None = no logprobs; N = this many alternatives per token
    grammar: str | None = None  # GBNF that constrains the output


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass
class TextDelta:
    """A step of one choice: new text (possibly empty) and, on the last step, a finish reason."""

    index: int
    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" or "length"
    stop_sequence: str | None = None  # the stop string that ended the choice, when one did


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


def check_generation(prompt: list[int], n: int, *, parallel: int, context_length: int, embedding_only: bool) -> None:
    """What a text engine checks before it takes a generation request."""
    if embedding_only:
        raise InvalidRequestError("This model serves embeddings only.")
    if not prompt:
        raise InvalidRequestError("The prompt is empty.", param="prompt")
    if n > parallel:
        raise InvalidRequestError(f"n is at most {parallel} for this model (its --parallel setting).", param="n")
    check_context(context_length, len(prompt))


@runtime_checkable
class TextEngine(Protocol):
    context_length: int
    parallel: int  # choices decoded at once (--parallel); 0 for an embedding model

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def document_start(self) -> list[int]:
        """The tokens a document starts with (BOS, else EOS): the prompt of a completion that sends none."""
        ...

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        """Apply the model's chat template (with the generation prompt)."""
        ...

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> Iterable[TextDelta]:
        """Stream deltas for n choices of one prompt; fills `usage` as it goes. The stream may also be
        async iterable, to be read on an event loop without a thread."""
        ...

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        """One normalised vector per input, pooled as the model's metadata says."""
        ...

    def infill(self, prefix: str, suffix: str) -> list[int]:
        """Prompt tokens for fill-in-the-middle; InvalidRequestError when the model cannot infill."""
        ...


# Images (stable-diffusion.cpp)


@dataclass
class ImageParams:
    """None means "the model's default" until `ImageEngine.resolve` fills it in."""

    prompt: str
    width: int | None = None  # None = the model's default size (edits: fitted to the input image)
    height: int | None = None
    n: int = 1
    quality: str = "auto"  # low, medium, high, standard, hd, auto: scales the default steps
    negative_prompt: str = ""
    seed: int | None = None  # image i uses seed + i
    steps: int | None = None
    cfg_scale: float | None = None
    sampler: str | None = None
    scheduler: str | None = None
    init_images: list[Any] = field(default_factory=list)  # PIL images for edits; the first is edited
    mask: Any = None  # PIL "L" image the size of the first init image, white = repaint
    strength: float | None = None
    previews: int = 0  # partial images wanted per image (streaming)


@runtime_checkable
class ImageEngine(Protocol):
    def resolve(self, params: ImageParams) -> ImageParams:
        """Fill in the model's defaults; InvalidRequestError when the request is outside its limits."""
        ...

    def generate_images(self, params: ImageParams, cancel: threading.Event,
                        on_preview: Callable[[int, Any], None] | None = None) -> Iterator[Any]:
        """PIL RGB images one by one (cancel is checked between images); `on_preview(index, image)`
        gets up to `params.previews` partial results per image."""
        ...


# Audio


@dataclass
class SpeechChunk:
    samples: Any  # numpy int16 mono at `sample_rate`
    sample_rate: int
    input_tokens: int = 0  # model input symbols (phoneme ids) this chunk was made from


@runtime_checkable
class SpeechEngine(Protocol):
    voices: list[str]

    def synthesize(self, text: str, voice: str | None, speed: float,
                   cancel: threading.Event) -> Iterator[SpeechChunk]:
        """Audio sentence by sentence, as soon as each is ready."""
        ...


@dataclass
class TranscriptWord:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class TranscriptSegment:
    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: list[TranscriptWord] = field(default_factory=list)
    seek: int = 0  # decoder window offset, in 10 ms frames


@dataclass
class TranscriptionParams:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    task: str = "transcribe"  # or "translate"
    word_timestamps: bool = False
    vad_filter: bool = False


@dataclass
class TranscriptionInfo:
    language: str
    duration: float


@runtime_checkable
class TranscriptionEngine(Protocol):
    def transcribe(self, audio: Any, params: TranscriptionParams,
                   cancel: threading.Event) -> tuple[TranscriptionInfo, Iterator[TranscriptSegment]]:
        """`audio` is float32 mono at 16 kHz; segments stream as they are decoded."""
        ...
