"""A continuous-batching llama.cpp engine on llama-cpp-python's low-level API.

One decode thread owns the llama.cpp context. Callers submit work from any thread and read
results from a per-request mailbox: `generate` streams `TextDelta`s, `embed` returns vectors.

KV cache layout: one unified pool of `ctx_size` cells shared by all sequences (llama.cpp's
`kv_unified`), so a single request may use the whole pool and running sequences share prefixes
without copying. Only running sequences hold cells: a finished one moves to the host cache in RAM
(llama_hostcache.py), from where the next request with the same prefix copies it back.
`parallel` sequences generate at once.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import queue
import threading
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as ll

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama import DEFAULT_CTX, StopScanner
from runtime.engines.llama_embed import EmbeddingBatcher, EmbedJob
from runtime.engines.llama_sched import GenerationScheduler
from runtime.engines.llama_seq import Choice, Request, SamplerChain
from runtime.engines.llama_stream import DONE, POLL_S, DeltaStream
from runtime.engines.options import EngineOptions
from runtime.errors import ContextLengthExceededError, EngineError, InvalidRequestError

BATCH_TOKENS = 512  # tokens per decode: bounds how long one prefill chunk stalls the other streams
CACHE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
               "iq4_nl": 20, "bf16": 30}
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


class BatchEngine:
    def __init__(self, model_path: Path | str, options: EngineOptions, *, embedding: bool) -> None:
        logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)  # llama.cpp logs every load step
        ll.llama_backend_init()  # idempotent: it only initialises tables and loads backends once
        self.embedding = embedding
        self._model = _load_model(Path(model_path), options)
        self.vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_embd = ll.llama_model_n_embd(self._model)
        n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        self._ctx = self._new_context(options, n_ctx_train)
        self.context_length = min(ll.llama_n_ctx(self._ctx), n_ctx_train)
        self._pieces: dict[int, bytes] = {}
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ages = itertools.count()
        if embedding:
            self._worker: Any = EmbeddingBatcher(self._ctx, self._model, self._batch_tokens, self._n_seqs)
        else:
            self._worker = GenerationScheduler(self, self._ctx, self.parallel)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def _new_context(self, options: EngineOptions, n_ctx_train: int) -> Any:
        params = ll.llama_context_default_params()
        # llama-server's default: one thread per physical core, for one-token steps and prompts alike
        params.n_threads = params.n_threads_batch = options.threads or physical_cores()
        params.flash_attn_type = FLASH_ATTN[options.flash_attn or "auto"]
        params.type_k = CACHE_TYPES[options.cache_type_k or "f16"]
        params.type_v = CACHE_TYPES[options.cache_type_v or "f16"]
        if self.embedding:
            # Non-causal models need each input whole inside one micro-batch.
            n_ctx = options.ctx_size or n_ctx_train
            self._batch_tokens = max(BATCH_TOKENS, n_ctx)
            self.parallel = 0
            self._n_seqs = min(256, max(64, options.parallel or 0))
            params.embeddings = True
            params.pooling_type = self._pooling_type()
            params.kv_unified = True  # causal models used to embed: any input may take the whole cache
        else:
            n_ctx = options.ctx_size or min(n_ctx_train, DEFAULT_CTX)
            self._batch_tokens = BATCH_TOKENS
            self.parallel = options.parallel or max(4, min(16, n_ctx // 1024))
            self._n_seqs = self.parallel  # one sequence per generating choice; idle ones live in the host cache
            params.kv_unified = True
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = self._batch_tokens
        params.n_seq_max = self._n_seqs
        ctx = ll.llama_init_from_model(self._model, params)
        if not ctx:
            raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens; "
                              "try a smaller --ctx-size.")
        return ctx

    def _pooling_type(self) -> int:
        """The model's pooling; mean for models that declare none (a chat model used to embed)."""
        arch = self.metadata("general.architecture")
        declared = self.metadata(f"{arch}.pooling_type")
        if declared is None or int(declared) == ll.LLAMA_POOLING_TYPE_NONE:
            return ll.LLAMA_POOLING_TYPE_MEAN
        return ll.LLAMA_POOLING_TYPE_UNSPECIFIED

    # Vocabulary

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        size = ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return None if size < 0 else buf.value.decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        data = text.encode()
        capacity = len(data) + 8
        while True:
            out = (ll.llama_token * capacity)()
            count = ll.llama_tokenize(self.vocab, data, len(data), out, capacity, add_special, parse_special)
            if count >= 0:
                return out[:count]
            capacity = -count

    def detokenize(self, tokens: list[int], *, special: bool = False) -> str:
        return b"".join(self.piece(t, special=special) for t in tokens).decode("utf-8", "replace")

    def piece(self, token: int, *, special: bool = False) -> bytes:
        if not special and token in self._pieces:
            return self._pieces[token]
        buf = ctypes.create_string_buffer(256)
        size = ll.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, special)
        data = buf.raw[:max(size, 0)]
        if not special:
            self._pieces[token] = data
        return data

    def is_eog(self, token: int) -> bool:
        return ll.llama_vocab_is_eog(self.vocab, token)

    # Work

    def generate(self, prompt_tokens: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event) -> DeltaStream:
        """Deltas for `n` choices of one prompt, decoded together with every other request."""
        self._check_generate(prompt_tokens, params, n)
        usage.prompt_tokens = len(prompt_tokens)
        request = Request(list(prompt_tokens), params, usage, cancel, next(self._ages))
        window = self.context_length
        for index in range(n):
            seed = None if params.seed is None else params.seed + index
            chain = SamplerChain(self.vocab, self.n_vocab, params, seed, window)
            request.choices.append(Choice(index, request, list(prompt_tokens), chain,
                                          StopScanner(params.stop)))
        return DeltaStream(request, self._inbox.put)

    def _check_generate(self, prompt: list[int], params: SamplingParams, n: int) -> None:
        if self.embedding:
            raise InvalidRequestError("This model serves embeddings only.")
        if not prompt:
            raise InvalidRequestError("The prompt is empty.", param="prompt")
        if n > self.parallel:
            raise InvalidRequestError(
                f"n is at most {self.parallel} for this model (its --parallel setting).", param="n")
        if len(prompt) >= self.context_length:
            raise ContextLengthExceededError(self.context_length, len(prompt))

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        """One normalised vector per input; inputs of all callers share decodes."""
        if not self.embedding:
            raise InvalidRequestError("This model is not loaded for embeddings.")
        for tokens in inputs:
            if len(tokens) > self._batch_tokens:
                raise ContextLengthExceededError(self._batch_tokens, len(tokens), param="input")
            if not tokens:
                raise InvalidRequestError("An input is empty.", param="input")
        job = EmbedJob(inputs, cancel)
        if inputs:
            self._inbox.put(job)
        while not job.finished.wait(POLL_S):
            if cancel.is_set():
                raise EngineError("The embedding request was cancelled.")
        if job.error is not None:
            raise job.error
        return job.vectors

    def stats(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "queue_depth": self._inbox.qsize(), **self._worker.stats()}

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._inbox.put(DONE)
        self._thread.join()
        self._worker.close()
        ll.llama_free(self._ctx)
        ll.llama_model_free(self._model)

    # The decode thread

    def _run(self) -> None:
        while not self._closing:
            block = self._worker.idle
            try:
                while True:
                    item = self._inbox.get(block=block)
                    block = False
                    if item is DONE:
                        return
                    self._worker.submit(item)
            except queue.Empty:
                pass
            self._worker.step()


def physical_cores() -> int:
    """Cores without their SMT siblings, counted the way llama.cpp's own tools count them."""
    siblings = {path.read_text().strip()
                for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings")}
    return len(siblings) or os.cpu_count() or 1


def _load_model(path: Path, options: EngineOptions) -> Any:
    params = ll.llama_model_default_params()
    layers = options.n_gpu_layers or "auto"
    params.n_gpu_layers = -1 if layers in ("auto", "all") else int(layers)
    if options.main_gpu is not None:
        params.main_gpu = options.main_gpu
    if options.split_mode:
        params.split_mode = SPLIT_MODES[options.split_mode]
    if options.tensor_split:
        split = list(options.tensor_split)[: ll.llama_max_devices()]
        params.tensor_split = (ctypes.c_float * ll.llama_max_devices())(*split)
    if options.no_mmap:
        params.load_mode = ll.LLAMA_LOAD_MODE_NONE
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise EngineError(f"llama.cpp could not load {path.name}.")
    return model
