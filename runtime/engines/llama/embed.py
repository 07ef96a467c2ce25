"""Embeddings in shared decodes: inputs of every waiting request are packed into one batch, one
sequence each, up to the batch's token and sequence limits, and pooled by llama.cpp."""

from __future__ import annotations

import ctypes
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import llama_cpp.llama_cpp as ll
import numpy as np

from runtime.errors import EngineError


@dataclass(eq=False)
class EmbedJob:
    inputs: list[list[int]]
    cancel: threading.Event
    vectors: list[list[float]] = field(default_factory=list)
    error: Exception | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    next_input: int = 0  # the first input not yet handed to a decode
    n_done: int = 0

    def __post_init__(self) -> None:
        self.vectors = [[] for _ in self.inputs]


class EmbeddingBatcher:
    def __init__(self, ctx: Any, model: Any, batch_tokens: int, n_seqs: int) -> None:
        self._ctx = ctx
        self._memory = ll.llama_get_memory(ctx)  # None for encoder-only models such as BERT
        # Rank pooling leaves the classification head's raw outputs instead of a vector: scores, not normalised.
        self._rank = ll.llama_pooling_type(ctx) == ll.LLAMA_POOLING_TYPE_RANK
        self._n_embd = (ll.llama_model_n_cls_out(model) if self._rank
                        else ll.llama_model_n_embd_out(model) or ll.llama_model_n_embd(model))
        self._batch_tokens = batch_tokens
        self._n_seqs = n_seqs
        self._batch = ll.llama_batch_init(batch_tokens, 0, 1)
        self._jobs: deque[EmbedJob] = deque()
        self._embedded = 0

    @property
    def idle(self) -> bool:
        return not self._jobs

    def submit(self, job: EmbedJob) -> None:
        self._jobs.append(job)

    def stats(self) -> dict[str, Any]:
        return {"waiting_requests": len(self._jobs), "inputs_embedded": self._embedded}

    def close(self) -> None:
        for job in self._jobs:
            job.error = EngineError("The model was unloaded.")
            job.finished.set()
        ll.llama_batch_free(self._batch)

    def step(self) -> None:
        for job in [j for j in self._jobs if j.cancel.is_set()]:
            self._jobs.remove(job)
            job.finished.set()
        items = self._pack()
        if not items:
            return
        if self._memory:
            ll.llama_memory_clear(self._memory, True)
        status = ll.llama_decode(self._ctx, self._batch)
        for seq, (job, index) in enumerate(items):
            if status != 0:
                job.error = EngineError(f"llama.cpp failed to embed (status {status}).")
            else:
                job.vectors[index] = self._vector(seq)
            job.n_done += 1
            if job.n_done == len(job.inputs) or job.error:
                job.finished.set()
                if job in self._jobs:
                    self._jobs.remove(job)
        self._embedded += len(items)

    def _pack(self) -> list[tuple[EmbedJob, int]]:
        """Fill the batch with whole inputs, oldest request first."""
        batch, n, items = self._batch, 0, []
        for job in self._jobs:
            while job.next_input < len(job.inputs) and len(items) < self._n_seqs:
                tokens = job.inputs[job.next_input]
                if n + len(tokens) > self._batch_tokens:
                    break
                for pos, token in enumerate(tokens):
                    batch.token[n] = token
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = len(items)
                    batch.logits[n] = 1
                    n += 1
                items.append((job, job.next_input))
                job.next_input += 1
            else:
                continue
            break
        batch.n_tokens = n
        return items

    def _vector(self, seq: int) -> list[float]:
        pointer = ll.llama_get_embeddings_seq(self._ctx, seq)
        raw = np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(ctypes.c_float)), shape=(self._n_embd,))
        if self._rank:
            return raw.tolist()
        norm = float(np.linalg.norm(raw))
        return (raw / norm if norm > 0 else raw).tolist()
