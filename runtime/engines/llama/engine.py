"""The llama.cpp engine (llama-cpp-python): chat, completions, embeddings and reranking for GGUF models.

Generation and embeddings run on `BatchEngine` (batch.py): continuous batching of all concurrent
requests, prefix reuse and shared decodes for embeddings. Defaults (defaults.py): the context is
the model's training context capped at DEFAULT_CTX (set `ctx_size` to go higher); embedding models
use their full training context. Chat models embed through a second, lazily loaded context in
embeddings mode, mean-pooled, as long as their chat context. Rerankers (cross-encoders) load in
embeddings mode with rank pooling and score (query, document) pairs (rank.py).
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama.chat_template import ChatTemplate
from runtime.engines.llama.stream import DeltaStream
from runtime.errors import InvalidRequestError
from runtime.spec import KINDS, ModelSpec

# A chat model's embeddings context and image encoder compute on threads of their own. With llama.cpp's
# OpenMP build, a second thread that runs multi-threaded graphs gets a second OpenMP team, and libgomp then
# stops spinning at barriers (more threads than cores): one stream on 2 cores fell from 90 to 32 tok/s for
# good after the first embeddings request. One thread never starts a team.
SECOND_CONTEXT_THREADS = 1


class LlamaEngine:
    def __init__(self, spec: ModelSpec) -> None:
        from runtime.engines.llama.batch import BatchEngine

        self.spec = spec
        self.is_embedding_model = spec.kind in ("embedding", "rerank")  # an encoder: no text generation
        self.is_reranker = spec.kind == "rerank"
        self._batch = BatchEngine(spec.files["model"], spec.options, embedding=self.is_embedding_model,
                                  rank=self.is_reranker)
        self._embedder: Any = None  # a chat model's embeddings context, loaded on first use
        self.context_length = self._batch.context_length
        self.parallel = self._batch.parallel
        self._vocab = self._batch.vocab
        self.n_vocab = self._vocab.n_tokens
        self.capabilities = KINDS[spec.kind].capabilities
        self._pairs: Any = None  # a reranker's (query, document) layout (rank.py)
        if self.is_reranker:
            from runtime.engines.llama.rank import PairFormat

            self._pairs = PairFormat(self._vocab, self._batch.metadata("tokenizer.chat_template.rerank"))
        self._vision: Any = None  # the mmproj's image encoder (vision.py)
        if "mmproj" in spec.files and not self.is_embedding_model:
            from runtime.engines.llama.vision import Vision

            self._vision = Vision(spec.files["mmproj"], self._batch.model, SECOND_CONTEXT_THREADS)
            self.capabilities |= {"vision"}
        self._template = ChatTemplate(self._batch.metadata("tokenizer.chat_template"),
                                      self._vocab.text(self._vocab.bos), self._vocab.text(self._vocab.eos))
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"engine": "llama", "kind": self.spec.kind, "context_length": self.context_length,
                "embedding_length": self._batch.n_embd, "vocab_size": self.n_vocab,
                "chat_template": "model" if self._template.has_own else "chatml", "vision": self._vision is not None,
                "options": self.spec.options.as_dict(), **self._batch.stats()}

    def close(self) -> None:
        with self._lock:
            self._batch.close()
            if self._vision is not None:
                self._vision.close()
            if self._embedder is not None:
                self._embedder.close()

    # Tokens

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        tokens = self._vocab.tokenize(text, add_special=add_special, parse_special=True)
        bos = self._vocab.bos
        if add_special and len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            tokens = tokens[1:]  # the template already wrote the BOS token
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        self._check_ids(tokens)
        return self._vocab.detokenize(tokens)

    def pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's text as llama-server shows it, special tokens included; bytes, since a piece may be
        part of a character."""
        self._check_ids(tokens, param="tokens")
        return [self._vocab.piece(token, special=True) for token in tokens]

    def document_start(self) -> list[int]:
        return [self._vocab.bos if self._vocab.bos >= 0 else self._vocab.eos]

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return self._template.render(messages, tools)

    def infill(self, prefix: str, suffix: str) -> list[int]:
        tokens = self._vocab.fill_in_middle()
        if tokens is None:
            raise InvalidRequestError("This model does not support 'suffix' (it has no fill-in-the-middle tokens).",
                                      param="suffix")
        pre, suf, mid = tokens
        head = self.tokenize("")
        return (head + [pre] + self.tokenize(prefix, add_special=False) + [suf]
                + self.tokenize(suffix, add_special=False) + [mid])

    def _check_ids(self, tokens: list[int], param: str = "prompt") -> None:
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise InvalidRequestError(f"Token id {bad[0]} is out of range: this model's vocabulary has "
                                      f"{self.n_vocab} tokens.", param=param)

    # Generation

    def image_prompt(self, text: str, marker: str, images: list[Any]) -> tuple[list[int], list[Any]]:
        """Tokens for a rendered chat whose `marker`s stand for PIL RGB images, and the images' spans."""
        from runtime.engines.llama.vision import image_prompt

        if self._vision is None:
            raise InvalidRequestError("This model does not accept image input.", param="messages")
        return image_prompt(self._vision, lambda piece, special: self.tokenize(piece, add_special=special),
                            text, marker, images)

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event, images: list[Any] | None = None) -> DeltaStream:
        self._check_ids([t for t in prompt if t >= 0] if images else prompt)  # images are negative ids
        if not prompt:
            raise InvalidRequestError("The prompt is empty: send at least one token.", param="prompt")
        if self.is_embedding_model:
            raise InvalidRequestError("This is an embedding model; it cannot generate text.", param="model")
        self._check_ids(list(params.logit_bias), param="logit_bias")
        return self._batch.generate(prompt, params, n, usage, cancel, images)

    # Embeddings

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        if self.is_reranker:
            raise InvalidRequestError("This model is a reranker; it scores pairs and has no embeddings. "
                                      "Use /v1/rerank.", param="model")
        for tokens in inputs:
            self._check_ids(tokens, param="input")
        return self._embeddings_engine().embed(inputs, cancel)

    def _embeddings_engine(self) -> Any:
        if self.is_embedding_model:
            return self._batch
        with self._lock:
            if self._embedder is None:
                from runtime.engines.llama.batch import BatchEngine

                options = replace(self.spec.options, ctx_size=self.context_length, threads=SECOND_CONTEXT_THREADS)
                self._embedder = BatchEngine(self.spec.files["model"], options, embedding=True)
            return self._embedder

    # Reranking

    def rank_pair(self, query: str, document: str) -> list[int]:
        """The tokens of one (query, document) pair, laid out as this cross-encoder reads them."""
        if self._pairs is None:
            raise InvalidRequestError("This model is not a reranker (a cross-encoder GGUF with a classification "
                                      "head).", param="model")
        return self._pairs.tokens(query, document)

    def rank(self, pairs: list[list[int]], cancel: threading.Event) -> list[float]:
        """A relevance score in [0, 1] per pair; the pairs of every caller share decodes."""
        from runtime.engines.llama.rank import relevance

        for tokens in pairs:
            self._check_ids(tokens, param="documents")
        return [relevance(outputs) for outputs in self._batch.embed(pairs, cancel)]
