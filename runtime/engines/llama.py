"""The llama.cpp engine (llama-cpp-python): chat, completions and embeddings for GGUF models.

Generation and embeddings run on `BatchEngine` (runtime/engines/llama_batch.py): continuous
batching of all concurrent requests, prefix reuse and shared decodes for embeddings. Defaults: the
context is the model's training context capped at DEFAULT_CTX (set `ctx_size` to go higher);
embedding models use their full training context. Chat models embed through a second, lazily
loaded context in embeddings mode, mean-pooled.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

from runtime.engines.base import ModelSpec, SamplingParams, Usage
from runtime.engines.chat_template import ChatTemplate
from runtime.engines.llama_stream import DeltaStream
from runtime.errors import InvalidRequestError

DEFAULT_CTX = 8192  # a chat model's context when --ctx-size is unset (capped by the model's own)


class StopScanner:
    """Cuts text at the first stop string, holding back any tail that could still become one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to emit, whether a stop string was hit)."""
        text = self.held + text
        hits = [at for at in (text.find(s) for s in self.stops) if at >= 0]
        if hits:
            self.held = ""
            return text[: min(hits)], True
        keep = self._partial(text)
        self.held = text[len(text) - keep:]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        text, self.held = self.held, ""
        return text

    def _partial(self, text: str) -> int:
        for size in range(min(len(text), max((len(s) for s in self.stops), default=0)), 0, -1):
            if any(s.startswith(text[-size:]) for s in self.stops):
                return size
        return 0


class LlamaEngine:
    def __init__(self, spec: ModelSpec) -> None:
        import llama_cpp

        from runtime.engines.llama_batch import BatchEngine
        from runtime.store.ggufinfo import read_header

        self._lib = llama_cpp
        self.spec = spec
        path = spec.files["model"]
        trained = int(read_header(path).arch_value("context_length") or DEFAULT_CTX)
        self.is_embedding_model = spec.kind == "embedding"
        default_ctx = trained if self.is_embedding_model else min(trained, DEFAULT_CTX)
        self._options = replace(spec.options, ctx_size=spec.options.ctx_size or default_ctx)
        self._batch = BatchEngine(path, self._options, embedding=self.is_embedding_model)
        self._embedder: Any = None  # a chat model's embeddings context, loaded on first use
        self.context_length = self._batch.context_length
        self._vocab = self._batch.vocab
        self.n_vocab = self._batch.n_vocab
        self.capabilities = frozenset({"embeddings"} if self.is_embedding_model
                                      else {"chat", "completions", "embeddings"})
        self._template = ChatTemplate(self._batch.metadata("tokenizer.chat_template"),
                                      self._piece(llama_cpp.llama_vocab_bos(self._vocab)),
                                      self._piece(llama_cpp.llama_vocab_eos(self._vocab)))
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
        tokens = self._batch.tokenize(text, add_special=add_special, parse_special=True)
        bos = self._lib.llama_vocab_bos(self._vocab)
        if add_special and len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            tokens = tokens[1:]  # the template already wrote the BOS token
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        self._check_ids(tokens)
        return self._batch.detokenize(tokens)

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        return self._template.render(messages, tools)

    def infill(self, prefix: str, suffix: str) -> list[int]:
        lib, vocab = self._lib, self._vocab
        pre, suf, mid = lib.llama_vocab_fim_pre(vocab), lib.llama_vocab_fim_suf(vocab), lib.llama_vocab_fim_mid(vocab)
        if min(pre, suf, mid) < 0:
            raise InvalidRequestError("This model does not support 'suffix' (it has no fill-in-the-middle tokens).",
                                      param="suffix")
        head = self.tokenize("")
        return (head + [pre] + self.tokenize(prefix, add_special=False) + [suf]
                + self.tokenize(suffix, add_special=False) + [mid])

    def _piece(self, token: int, special: bool = True) -> str:
        if token < 0:
            return ""
        return self._batch.piece(token, special=special).decode("utf-8", errors="replace")

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
                from runtime.engines.llama_batch import BatchEngine

                self._embedder = BatchEngine(self.spec.files["model"], self._options, embedding=True)
            return self._embedder
