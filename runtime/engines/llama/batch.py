"""A continuous-batching llama.cpp engine on llama-cpp-python's low-level API.

One decode thread owns the llama.cpp context. Callers submit work from any thread and read
results from a per-request mailbox: `generate` streams `TextDelta`s, `embed` returns vectors.

KV cache layout: one unified pool of `ctx_size` cells shared by all sequences (llama.cpp's
`kv_unified`), so a single request may use the whole pool and running sequences share prefixes
without copying. Only running sequences hold cells: a finished one moves to the host cache in RAM
(hostcache.py), from where the next request with the same prefix copies it back.
`parallel` sequences generate at once. With `kv_slots` each sequence has a stream of ctx/parallel
cells instead: in the pool every token's attention walks the cells of all running sequences (masked,
not skipped), and with several long prompts that costs more than the flexibility gives.

Seeded requests repeat exactly, whatever ran before or runs beside them: they run one at a time in a
context of their own, made on the first one, at a fixed thread count (generation.py says why).
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

from runtime.engines.base import SamplingParams, Usage, check_generation
from runtime.engines.llama.defaults import DEFAULT_CACHE_TYPE, chat_context, default_parallel
from runtime.engines.llama.embed import EmbeddingBatcher, EmbedJob
from runtime.engines.llama.generation import GenerationLoop
from runtime.engines.llama.sequence import Choice, GenerationRequest, SamplerChain
from runtime.engines.llama.stops import StopScanner
from runtime.engines.llama.stream import DeltaStream
from runtime.engines.llama.threads import ThreadBudget, usable_cpus
from runtime.engines.llama.vision import ImageSpan
from runtime.engines.llama.vocab import Vocab
from runtime.errors import EngineError, InvalidRequestError, check_context
from runtime.http.bridge import DONE, POLL_S
from runtime.options import CACHE_TYPES, EngineOptions

BATCH_TOKENS = 512  # tokens per decode: bounds how long one prefill chunk stalls the other streams
SPLIT_MODES = {"none": 0, "layer": 1, "row": 2}
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
SLOT_ROUNDING = 256  # llama.cpp pads a KV stream's cells to a multiple of this


class BatchEngine:
    def __init__(self, model_path: Path | str, options: EngineOptions, *, embedding: bool,
                 rank: bool = False) -> None:
        """`rank`: score (query, document) pairs with the model's classification head (embedding too)."""
        logging.getLogger("llama-cpp-python").setLevel(logging.WARNING)  # llama.cpp logs every load step
        ll.llama_backend_init()  # idempotent: it only initialises tables and loads backends once
        self.embedding = embedding
        self.rank = rank
        self._model = _load_model(Path(model_path), options)
        self.vocab = Vocab(self._model)
        self.n_embd = ll.llama_model_n_embd(self._model)
        n_ctx_train = ll.llama_model_n_ctx_train(self._model)
        # A count the user chose is kept; otherwise it follows the cores other processes leave free (threads.py).
        self._most = options.threads or min(physical_cores(), usable_cpus())
        self._budget = None if options.threads else ThreadBudget(self._most)
        self._threads = self._most
        self._options, self._n_ctx_train = options, n_ctx_train
        self._ctx = self._new_context(options, n_ctx_train)
        self.context_length = min(ll.llama_n_ctx_seq(self._ctx), n_ctx_train)
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._ages = itertools.count()
        if embedding:
            self._work: Any = EmbeddingBatcher(self._ctx, self._model, self._batch_tokens, self._n_seqs)
        else:
            self._work = GenerationLoop(self.vocab, self._ctx, self.parallel, self.context_length,
                                        slots=bool(options.kv_slots))
        self._seeded: tuple[Any, GenerationLoop] | None = None  # (context, loop), made on the first seeded request
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._thread.start()

    def _new_context(self, options: EngineOptions, n_ctx_train: int) -> Any:
        params = ll.llama_context_default_params()
        # llama-server's default: one thread per physical core, for one-token steps and prompts alike
        params.n_threads = params.n_threads_batch = self._most
        params.flash_attn_type = FLASH_ATTN[options.flash_attn or "auto"]
        params.type_k = CACHE_TYPES[options.cache_type_k or DEFAULT_CACHE_TYPE].ggml_type
        params.type_v = CACHE_TYPES[options.cache_type_v or DEFAULT_CACHE_TYPE].ggml_type
        if self.embedding:
            # Non-causal models need each input whole inside one micro-batch.
            n_ctx = options.ctx_size or n_ctx_train
            self._batch_tokens = max(BATCH_TOKENS, n_ctx)
            self.parallel = 0
            self._n_seqs = min(256, max(64, options.parallel or 0))
            params.embeddings = True
            # Rerankers converted without pooling metadata still rank (llama-server needs --reranking for them).
            params.pooling_type = ll.LLAMA_POOLING_TYPE_RANK if self.rank else self._pooling_type()
            params.kv_unified = True  # causal models used to embed: any input may take the whole cache
        else:
            n_ctx = chat_context(n_ctx_train, options)
            self._batch_tokens = BATCH_TOKENS
            self.parallel = options.parallel or default_parallel(n_ctx)
            self._n_seqs = self.parallel  # one sequence per generating choice; idle ones live in the host cache
            params.kv_unified = not options.kv_slots
            if options.kv_slots:
                n_ctx = self.parallel * slot_cells(n_ctx, self.parallel)
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

    # Model

    def metadata(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        size = ll.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return None if size < 0 else buf.value.decode("utf-8", "replace")

    # Work

    @property
    def model(self) -> Any:
        """The llama.cpp model, for the projector that feeds it images (vision.py)."""
        return self._model

    def generate(self, prompt_tokens: list[int], params: SamplingParams, n: int, usage: Usage,
                 cancel: threading.Event, images: list[ImageSpan] | None = None) -> DeltaStream:
        """Deltas for `n` choices of one prompt, decoded together with every other request."""
        check_generation(prompt_tokens, n, parallel=self.parallel, context_length=self.context_length,
                         embedding_only=self.embedding)
        usage.prompt_tokens = len(prompt_tokens)
        request = GenerationRequest(list(prompt_tokens), params, usage, cancel, next(self._ages),
                                    images=list(images or []))
        window = self.context_length
        for index in range(n):
            seed = None if params.seed is None else params.seed + index
            chain = SamplerChain(self.vocab, params, seed, window)
            request.choices.append(Choice(index, request, list(prompt_tokens), chain,
                                          StopScanner(params.stop)))
        return DeltaStream(request.events, cancel, request.abandoned, lambda: self._inbox.put(request))

    def embed(self, inputs: list[list[int]], cancel: threading.Event) -> list[list[float]]:
        """One normalised vector per input; inputs of all callers share decodes."""
        if not self.embedding:
            raise InvalidRequestError("This model is not loaded for embeddings.")
        for tokens in inputs:
            check_context(self._batch_tokens, len(tokens), param="input", generating=False)
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
        seeded = self._seeded[1].stats() if self._seeded else {"active_sequences": 0, "waiting_requests": 0}
        return {"parallel": self.parallel, "queue_depth": self._inbox.qsize(), "threads": self._threads,
                **self._work.stats(), "seeded_context": self._seeded is not None,
                "seeded_requests": min(seeded["active_sequences"], 1) + seeded["waiting_requests"]}

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._inbox.put(DONE)
        self._thread.join()
        self._work.close()
        if self._seeded:
            self._seeded[1].close()
            ll.llama_free(self._seeded[0])
        ll.llama_free(self._ctx)
        ll.llama_model_free(self._model)

    # The decode thread

    def _run(self) -> None:
        while not self._closing:
            block = self._work.idle and (self._seeded is None or self._seeded[1].idle)
            try:
                while True:
                    item = self._inbox.get(block=block)
                    block = False
                    if item is DONE:
                        return
                    self._submit(item)
            except queue.Empty:
                pass
            self._fit_threads()
            self._work.step()
            if self._seeded:
                self._seeded[1].step()

    def _submit(self, item: Any) -> None:
        if not isinstance(item, GenerationRequest) or item.params.seed is None:
            self._work.submit(item)
            return
        if self._seeded is None:
            try:
                ctx = self._new_context(self._options, self._n_ctx_train)
            except EngineError as exc:
                item.fail(exc)
                for choice in item.choices:
                    choice.chain.free()
                return
            self._seeded = ctx, GenerationLoop(self.vocab, ctx, self.parallel, self.context_length, repeatable=True,
                                               slots=bool(self._options.kv_slots))
        self._seeded[1].submit(item)

    def _fit_threads(self) -> None:
        threads = self._threads if self._budget is None else self._budget.threads()
        if threads != self._threads:
            ll.llama_set_n_threads(self._ctx, threads, threads)
            self._threads = threads


def slot_cells(n_ctx: int, parallel: int) -> int:
    """Cells per slot: ctx / parallel, rounded down to llama.cpp's 256 (it would round up, past the budget)."""
    cells = n_ctx // parallel // SLOT_ROUNDING * SLOT_ROUNDING
    if not cells:
        raise InvalidRequestError(f"--kv-slots gives each of the {parallel} slots {n_ctx // parallel} cells of the "
                                  f"{n_ctx}-token context; llama.cpp needs {SLOT_ROUNDING}: raise --ctx-size to "
                                  f"{parallel * SLOT_ROUNDING} or lower --parallel.", param="kv_slots")
    return cells


def physical_cores() -> int:
    """Cores without their SMT siblings, counted the way llama.cpp's own tools count them."""
    siblings = {path.read_text().strip()
                for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings")}
    return len(siblings) or os.cpu_count() or 1


def amx_kernels() -> bool:
    """Whether this llama.cpp build runs matrix products on Intel AMX (built with GGML_NATIVE on Sapphire Rapids
    and later). Those kernels crash in ggml_backend_amx_mul_mat on the second sequence of a batch
    (ggml-org/llama.cpp#20824, still open), so weights are not handed to them."""
    return b"AMX_INT8 = 1" in ll.llama_print_system_info()


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
    if amx_kernels():
        params.use_extra_bufts = False  # weights stay in plain CPU buffers, out of the AMX kernels' reach
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise EngineError(f"llama.cpp could not load {path.name}.")
    return model
