"""The llama.cpp engine (llama-cpp-python): chat, completions and embeddings for GGUF models.

Generation and embeddings run on `BatchEngine` (batch.py): continuous batching of all concurrent
requests, prefix reuse and shared decodes for embeddings. Defaults (defaults.py): the context is
the model's training context capped at DEFAULT_CTX (set `ctx_size` to go higher); embedding models
use their full training context. Chat models embed through a second, lazily loaded context in
embeddings mode, mean-pooled, as long as their chat context.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama.chat_template import ChatTemplate
from runtime.engines.llama.stream import DeltaStream
from runtime.errors import InvalidRequestError
from runtime.spec import ModelSpec


class LlamaEngine:
    def __init__(self, spec: ModelSpec) -> None:
        from runtime.engines.llama.batch import BatchEngine

        self.spec = spec
        self.is_embedding_model = spec.kind == "embedding"
        self._batch = BatchEngine(spec.files["model"], spec.options, embedding=self.is_embedding_model)
        self._embedder: Any = None  # a chat model's embeddings context, loaded on first use
        self.context_length = self._batch.context_length
        self._vocab = self._batch.vocab
        self.n_vocab = self._vocab.n_tokens
        self.capabilities = frozenset({"embeddings"} if self.is_embedding_model
                                      else {"chat", "completions", "embeddings"})
        self._template = ChatTemplate(self._batch.metadata("tokenizer.chat_template"),
                                      self._vocab.text(self._vocab.bos), self._vocab.text(self._vocab.eos))
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"engine": "llama", "kind": self.spec.kind, "context_length": self.context_length,
                "embedding_length": self._batch.n_embd, "vocab_size": self.n_vocab,
                "chat_template": "model" if self._template.has_own else "chatml",
                "options": self.spec.options.as_dict(), **self._batch.stats()}

    def close(self) -> None:
        with self._lock:
            self._batch.close()
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

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> DeltaStream:
        self._check_ids(prompt)
        if not prompt:
            raise InvalidRequestError("The prompt is empty: send at least one token.", param="prompt")
        if self.is_embedding_model:
            raise InvalidRequestError("This is an embedding model; it cannot generate text.", param="model")
        self._check_ids(list(params.logit_bias), param="logit_bias")
        return self._batch.generate(prompt, params, n, usage, cancel)

    # Embeddings

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        for tokens in inputs:
            self._check_ids(tokens, param="input")
        return self._embeddings_engine().embed(inputs, cancel)

    def _embeddings_engine(self) -> Any:
        if self.is_embedding_model:
            return self._batch
        with self._lock:
            if self._embedder is None:
                from runtime.engines.llama.batch import BatchEngine

                options = replace(self.spec.options, ctx_size=self.context_length)
                self._embedder = BatchEngine(self.spec.files["model"], options, embedding=True)
            return self._embedder
