"""The llama.cpp engine (llama-cpp-python): chat, completions and embeddings for GGUF models.

One context serves one request at a time (a lock); choices of `n > 1` run one after the other and
reuse the prompt's KV cache. Logits are read for the newest token only, so logprobs never keep
the whole context's logits. Defaults: the context is the model's training context capped at
DEFAULT_CTX (set `ctx_size` to go higher); embedding models use their full training context.
Chat models embed by mean-pooling the last hidden states (the context switches to embeddings
mode for the call).
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from runtime.engines.base import ModelSpec, SamplingParams, TextDelta, TokenLogprob, Usage
from runtime.engines.chat_template import ChatTemplate
from runtime.engines.options import EngineOptions
from runtime.errors import EngineError, InvalidRequestError

DEFAULT_CTX = 8192
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}


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


def llama_kwargs(options: EngineOptions, n_ctx: int, embedding: bool) -> dict[str, Any]:
    """Llama() keyword arguments for the engine options that are set."""
    import llama_cpp

    layers = options.n_gpu_layers or "auto"
    if layers == "auto":
        layers = "all" if llama_cpp.llama_supports_gpu_offload() else "0"
    kwargs: dict[str, Any] = {
        "n_ctx": n_ctx,
        "n_gpu_layers": -1 if layers == "all" else int(layers),
        "embedding": embedding,
        "use_mmap": not options.no_mmap,
        "flash_attn": options.flash_attn == "on",  # this binding takes a bool: "auto" means off
        "verbose": False,
    }
    if embedding:  # non-causal models must see each input in one micro-batch
        kwargs.update(n_batch=n_ctx, n_ubatch=n_ctx)
    if options.main_gpu is not None:
        kwargs["main_gpu"] = options.main_gpu
    if options.tensor_split:
        kwargs["tensor_split"] = list(options.tensor_split)
    if options.split_mode:
        kwargs["split_mode"] = SPLIT_MODES[options.split_mode]
    if options.threads:
        kwargs.update(n_threads=options.threads, n_threads_batch=options.threads)
    for name in ("cache_type_k", "cache_type_v"):
        value = getattr(options, name)
        if value:
            kwargs["type_" + name[-1]] = getattr(llama_cpp, "GGML_TYPE_" + value.upper())
    return kwargs


class LlamaEngine:
    def __init__(self, spec: ModelSpec) -> None:
        import llama_cpp

        from runtime.store.ggufinfo import read_header

        self._lib = llama_cpp
        self.spec = spec
        path = spec.files["model"]
        trained = int(read_header(path).arch_value("context_length") or DEFAULT_CTX)
        self.is_embedding_model = spec.kind == "embedding"
        default_ctx = trained if self.is_embedding_model else min(trained, DEFAULT_CTX)
        self.context_length = spec.options.ctx_size or default_ctx
        try:
            self._llm = llama_cpp.Llama(str(path), **llama_kwargs(spec.options, self.context_length,
                                                                  self.is_embedding_model))
        except (ValueError, RuntimeError) as exc:
            raise EngineError(f"Could not load {path.name}: {exc}") from None
        self._vocab = self._llm._model.vocab
        self.n_vocab = self._llm.n_vocab()
        self.capabilities = frozenset({"embeddings"} if self.is_embedding_model
                                      else {"chat", "completions", "embeddings"})
        metadata = self._llm.metadata
        self._template = ChatTemplate(metadata.get("tokenizer.chat_template"), self._piece(self._llm.token_bos()),
                                      self._piece(self._llm.token_eos()))
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {"engine": "llama", "kind": self.spec.kind, "context_length": self.context_length,
                "embedding_length": self._llm.n_embd(), "vocab_size": self.n_vocab,
                "chat_template": "model" if self._template.has_own else "chatml",
                "options": self.spec.options.as_dict()}

    def close(self) -> None:
        with self._lock:
            self._llm.close()

    # Tokens

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        tokens = self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)
        bos = self._llm.token_bos()
        if add_special and len(tokens) > 1 and tokens[0] == tokens[1] == bos:
            tokens = tokens[1:]  # the template already wrote the BOS token
        return tokens

    def detokenize(self, tokens: list[int]) -> str:
        self._check_ids(tokens)
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

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
        return self._llm.detokenize([token], special=special).decode("utf-8", errors="replace")

    def _check_ids(self, tokens: list[int], param: str = "prompt") -> None:
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise InvalidRequestError(f"Token id {bad[0]} is out of range: this model's vocabulary has "
                                      f"{self.n_vocab} tokens.", param=param)

    # Generation

    def generate(self, prompt: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> Iterator[TextDelta]:
        self._check_ids(prompt)
        if not prompt:
            raise InvalidRequestError("The prompt is empty: send at least one token.", param="prompt")
        if self.is_embedding_model:
            raise InvalidRequestError("This is an embedding model; it cannot generate text.", param="model")
        usage.prompt_tokens = len(prompt)
        with self._lock:
            for index in range(n):
                if cancel.is_set():
                    return
                seed = None if params.seed is None else params.seed + index
                yield from self._choice(prompt, params, index, seed, usage, cancel)

    def _choice(self, prompt: list[int], params: SamplingParams, index: int, seed: int | None, usage: Usage,
                cancel: threading.Event) -> Iterator[TextDelta]:
        llm, lib = self._llm, self._lib
        cached = self._prefill(prompt)
        if index == 0:
            usage.cached_tokens = cached
        room = self.context_length - len(prompt)
        limit = room if params.max_tokens is None else min(params.max_tokens, room)
        sampler = self._sampler(params, seed)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopScanner(params.stop)
        for _ in range(limit):
            if cancel.is_set():
                return
            token = sampler.sample(llm._ctx, -1)
            logprobs = [self._logprob(token, params.logprobs)] if params.logprobs is not None else []
            if lib.llama_vocab_is_eog(self._vocab, token):
                yield TextDelta(index, stops.flush() + decoder.decode(b"", final=True), logprobs, "stop")
                return
            usage.completion_tokens += 1
            text, stopped = stops.feed(decoder.decode(llm.detokenize([token])))
            if stopped:
                yield TextDelta(index, text, logprobs, "stop")
                return
            yield TextDelta(index, text, logprobs)
            llm.eval([token])
        yield TextDelta(index, stops.flush() + decoder.decode(b"", final=True), finish_reason="length")

    def _prefill(self, prompt: list[int]) -> int:
        """Evaluate the prompt, reusing the cached prefix; returns how many tokens were reused."""
        llm = self._llm
        same = 0
        for have, want in zip(llm.input_ids[: llm.n_tokens].tolist(), prompt, strict=False):
            if have != want:
                break
            same += 1
        reuse = min(same, len(prompt) - 1)  # re-evaluate at least one token for fresh logits
        if reuse > 0 and llm._ctx.kv_cache_seq_rm(-1, reuse, -1):
            llm.n_tokens = reuse
        else:
            llm.reset()
            reuse = 0
        llm.eval(prompt[reuse:])
        return reuse

    def _sampler(self, params: SamplingParams, seed: int | None) -> Any:
        from llama_cpp import _internals

        sampler = _internals.LlamaSampler()
        if params.logit_bias:
            self._check_ids(list(params.logit_bias), param="logit_bias")
            sampler.add_logit_bias(self.n_vocab, params.logit_bias)
        if params.presence_penalty or params.frequency_penalty:
            sampler.add_penalties(self.n_vocab, self.context_length, 1.0, params.frequency_penalty,
                                  params.presence_penalty)
        if params.grammar:
            grammar = self._lib.llama_sampler_init_grammar(self._vocab, params.grammar.encode(), b"root")
            if not grammar:  # llama.cpp could not parse it; adding NULL to the chain would crash
                raise InvalidRequestError("The output schema could not be turned into a grammar. Simplify the "
                                          "schema.", param="response_format")
            self._lib.llama_sampler_chain_add(sampler.sampler, grammar)
        if params.temperature == 0:
            sampler.add_greedy()
            return sampler
        if params.top_p < 1.0:
            sampler.add_top_p(params.top_p, 1)
        sampler.add_temp(params.temperature)
        sampler.add_dist(self._lib.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF)
        return sampler

    def _logprob(self, token: int, top: int) -> TokenLogprob:
        """The model's log-probability of `token` (before sampling settings), with `top` alternatives."""
        raw = np.ctypeslib.as_array(self._llm._ctx.get_logits_ith(-1), shape=(self.n_vocab,))
        logits = raw.astype(np.float64)
        logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        alternatives = []
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            for alt in best[np.argsort(-logprobs[best])]:
                alternatives.append(self._token_logprob(int(alt), float(logprobs[alt])))
        main = self._token_logprob(token, float(logprobs[token]))
        return TokenLogprob(main.token, main.logprob, main.bytes, [(a.token, a.logprob, a.bytes) for a in alternatives])

    def _token_logprob(self, token: int, logprob: float) -> TokenLogprob:
        data = self._llm.detokenize([token])
        return TokenLogprob(data.decode("utf-8", errors="replace"), logprob, list(data))

    # Embeddings

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        for tokens in inputs:
            self._check_ids(tokens, param="input")
        with self._lock:
            if self.is_embedding_model:
                vectors = self._embed_pooled(inputs, cancel)
            else:
                vectors = [self._embed_mean(tokens, cancel) for tokens in inputs]
        return [_normalize(v) for v in vectors]

    def _embed_pooled(self, inputs: list[list[int]], cancel: threading.Event) -> list[np.ndarray]:
        """Embedding models: as many inputs per decode as fit, pooled by llama.cpp per sequence."""
        llm, lib = self._llm, self._lib
        n_embd, room, max_seqs = llm.n_embd(), llm.n_batch, llm.context_params.n_seq_max
        vectors: list[np.ndarray] = []
        start = 0
        while start < len(inputs):
            if cancel.is_set():
                raise EngineError("Cancelled.")
            group, used = [], 0
            while start + len(group) < len(inputs) and len(group) < max_seqs:
                size = len(inputs[start + len(group)])
                if group and used + size > room:
                    break
                group.append(inputs[start + len(group)])
                used += size
            llm._ctx.kv_cache_clear()
            llm._batch.reset()
            for seq, tokens in enumerate(group):
                llm._batch.add_sequence(tokens, seq, True)
            llm._ctx.decode(llm._batch)
            for seq in range(len(group)):
                pointer = lib.llama_get_embeddings_seq(llm._ctx.ctx, seq)
                vectors.append(np.ctypeslib.as_array(pointer, shape=(n_embd,)).astype(np.float64))
            start += len(group)
        llm._ctx.kv_cache_clear()
        return vectors

    def _embed_mean(self, tokens: list[int], cancel: threading.Event) -> np.ndarray:
        """Chat models: the mean of the last hidden states over the input's tokens."""
        llm, lib = self._llm, self._lib
        if cancel.is_set():
            raise EngineError("Cancelled.")
        n_embd = llm.n_embd()
        total = np.zeros(n_embd, dtype=np.float64)
        llm.reset()
        llm._ctx.kv_cache_clear()
        lib.llama_set_embeddings(llm._ctx.ctx, True)
        try:
            for start in range(0, len(tokens), llm.n_batch):
                part = tokens[start : start + llm.n_batch]
                llm._batch.set_batch(part, n_past=start, logits_all=True)
                llm._ctx.decode(llm._batch)
                rows = np.ctypeslib.as_array(lib.llama_get_embeddings(llm._ctx.ctx), shape=(len(part) * n_embd,))
                total += rows.reshape(len(part), n_embd).astype(np.float64).sum(axis=0)
        finally:
            lib.llama_set_embeddings(llm._ctx.ctx, False)
            llm._ctx.kv_cache_clear()
            llm.reset()
        return total / max(len(tokens), 1)


def _normalize(vector: np.ndarray) -> list[float]:
    norm = float(np.linalg.norm(vector)) or 1.0
    return (vector / norm).tolist()
