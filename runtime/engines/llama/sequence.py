"""One generation request and its choices as the generation loop sees them.

A `Choice` is one generated sequence: the tokens it holds (prompt, then sampled tokens), how
many of them are in the KV cache (`n_past`), its own llama.cpp sampler chain, and the text
filter that holds back anything that may be the start of a stop string. A request's images are
spans of its prompt that are fed as embeddings (vision.py).
"""

from __future__ import annotations

import codecs
import ctypes
import threading
from dataclasses import dataclass, field
from typing import Any

import llama_cpp.llama_cpp as ll
import numpy as np

from runtime.engines.base import SamplingParams, TextDelta, TokenLogprob, Usage
from runtime.engines.llama.stops import StopScanner
from runtime.engines.llama.vision import ImageSpan
from runtime.engines.llama.vocab import Vocab
from runtime.errors import InvalidRequestError
from runtime.http.bridge import DONE, Mailbox

NEGLIGIBLE_P = 1e-6


class SamplerChain:
    """A llama.cpp sampler chain built from OpenAI-style parameters; owns the native object."""

    def __init__(self, vocab: Vocab, params: SamplingParams, seed: int | None, penalty_window: int) -> None:
        n_vocab = vocab.n_tokens
        self.ptr = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        if params.grammar:
            grammar = ll.llama_sampler_init_grammar(vocab.ptr, params.grammar.encode(), b"root")
            if not grammar:  # llama.cpp could not parse it; adding NULL to the chain would crash
                ll.llama_sampler_free(self.ptr)
                raise InvalidRequestError("The output schema could not be turned into a grammar. Simplify the "
                                          "schema.", param="response_format")
            self._add(grammar)
        if params.logit_bias:
            biases = (ll.llama_logit_bias * len(params.logit_bias))(
                *(ll.llama_logit_bias(token, bias) for token, bias in params.logit_bias.items()))
            self._add(ll.llama_sampler_init_logit_bias(n_vocab, len(biases), biases))
        if params.presence_penalty or params.frequency_penalty:
            self._add(ll.llama_sampler_init_penalties(
                n_vocab, penalty_window, 1.0, params.frequency_penalty, params.presence_penalty))
        if params.temperature <= 0:
            self._add(ll.llama_sampler_init_greedy())
            return
        # Tokens whose probability at this temperature is under a millionth of the likeliest one's are
        # practically never sampled; dropping them first spares the rest of the chain the whole vocabulary
        # (sampling takes a third of the time). p_i / p_max = (raw ratio) ** (1 / temperature), so the
        # threshold on the raw distribution is NEGLIGIBLE_P ** temperature.
        self._add(ll.llama_sampler_init_min_p(NEGLIGIBLE_P ** params.temperature, 1))
        if params.top_p < 1.0:
            self._add(ll.llama_sampler_init_top_p(params.top_p, 1))
        self._add(ll.llama_sampler_init_temp(params.temperature))
        self._add(ll.llama_sampler_init_dist(ll.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF))

    def _add(self, sampler: Any) -> None:
        ll.llama_sampler_chain_add(self.ptr, sampler)

    def free(self) -> None:
        if self.ptr:
            ll.llama_sampler_free(self.ptr)
            self.ptr = None


@dataclass(eq=False)
class Choice:
    index: int
    request: GenerationRequest
    tokens: list[int]  # prompt, then sampled tokens; the cache holds the first n_past
    chain: SamplerChain
    stops: StopScanner
    n_past: int = 0
    seq: int = -1  # KV sequence id while admitted
    n_generated: int = 0
    finished: bool = False
    decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    held_logprobs: list[TokenLogprob] = field(default_factory=list)

    @property
    def pending(self) -> int:
        """Tokens still to feed to the model before this choice can sample again."""
        return len(self.tokens) - self.n_past


@dataclass(eq=False)
class GenerationRequest:
    prompt: list[int]
    params: SamplingParams
    usage: Usage
    cancel: threading.Event
    age: int  # submission order: the youngest is pre-empted first
    choices: list[Choice] = field(default_factory=list)
    events: Mailbox = field(default_factory=Mailbox)
    forked: bool = False  # choices beyond the first share the prompt once it is evaluated
    admitted_before: bool = False
    abandoned: threading.Event = field(default_factory=threading.Event)  # the caller stopped reading
    images: list[ImageSpan] = field(default_factory=list)  # in prompt order

    def image_at(self, pos: int) -> ImageSpan | None:
        """The image whose embeddings hold prompt position `pos`, if any."""
        return next((image for image in self.images if image.start <= pos < image.end), None)

    def next_image(self, pos: int) -> int | None:
        """Where the first image at or after `pos` starts, if one does."""
        return next((image.start for image in self.images if image.start >= pos), None)

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set()

    @property
    def done(self) -> bool:
        return all(c.finished for c in self.choices)

    def fail(self, error: Exception) -> None:
        for choice in self.choices:
            choice.finished = True
        self.events.put(error)
        self.events.put(DONE)


def token_logprob(logits: Any, vocab: Vocab, token: int, top: int) -> TokenLogprob:
    """Log-softmax of one output row: the chosen token and the `top` most likely alternatives."""
    row = np.ctypeslib.as_array(ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), shape=(vocab.n_tokens,))
    peak = float(row.max())
    log_total = peak + float(np.log(np.exp(row - peak).sum()))
    alternatives = []
    if top > 0:
        best = np.argpartition(-row, top - 1)[:top]
        for alt in best[np.argsort(-row[best])]:
            data = vocab.piece(int(alt))
            alternatives.append((data.decode("utf-8", "replace"), float(row[alt]) - log_total, list(data)))
    data = vocab.piece(token)
    return TokenLogprob(data.decode("utf-8", "replace"), float(row[token]) - log_total, list(data),
                        alternatives)


def emit(choice: Choice, text: str, finish_reason: str | None = None) -> None:
    if not text and finish_reason is None:
        return
    matched = choice.stops.matched if finish_reason else None
    choice.request.events.put(TextDelta(choice.index, text, choice.held_logprobs, finish_reason, matched))
    choice.held_logprobs = []
