"""Continuous batching for generation: each step is one `llama_decode` over a batch holding one
token for every generating sequence plus chunks of pending prompts.

Admission is by free KV cells; only active sequences hold cells (finished ones wait in the host
cache). When a step needs cells that are not free, the youngest request is pre-empted: its state
moves to the host cache and it waits at the head of the queue with everything it generated, to be
restored and continued without losing a token.

A repeatable loop (`repeatable=True`, where seeded requests run) takes one request at a time into an emptied
cache and never starts from a cached prefix, so the same request always meets the same computation: the
same cells, the same micro-batches, the same kernels. In the shared pool the cells a sequence gets, how
many cells are in use and what else is in the batch all change llama.cpp's summation order (its attention
splits the cells in use among the threads for one-token steps), and a near-tie can then flip a token.

A prompt's images (vision.py) are fed as embeddings in a decode of their own within the same step:
llama.cpp takes either tokens or embeddings in one batch, so a step may run one image chunk
besides the batch of tokens, and image requests still advance alongside text ones.
"""

from __future__ import annotations

import bisect
import ctypes
from typing import Any

import llama_cpp.llama_cpp as ll

from runtime.engines.llama.kv import KVLedger, Prefix
from runtime.engines.llama.sequence import Choice, GenerationRequest, emit, token_logprob
from runtime.engines.llama.vocab import Vocab
from runtime.errors import ContextLengthExceededError, EngineError
from runtime.http.bridge import DONE

DECODE_NO_SLOT = 1  # llama_decode: no room in the KV cache; the cache is left as it was


class GenerationLoop:
    """Runs on the engine's decode thread: `submit` queues a request, each `step` advances them all."""

    def __init__(self, vocab: Vocab, ctx: Any, parallel: int, context_length: int, *,
                 repeatable: bool = False, slots: bool = False) -> None:
        """`slots`: the context keeps a KV stream per sequence (batch.py)."""
        self._vocab = vocab
        self._repeatable = repeatable
        self._context_length = context_length
        self._ctx = ctx
        self._parallel = parallel
        self._batch_size = ll.llama_n_batch(ctx)
        self._batch = ll.llama_batch_init(self._batch_size, 0, 1)
        n_cells = ll.llama_n_ctx(ctx)
        # One sequence id per generating choice. A repeatable loop keeps no prefixes: each request starts afresh.
        self._ledger = KVLedger(ctx, n_cells, parallel, cache_tokens=0 if repeatable else n_cells, slots=slots)
        self._pending: list[GenerationRequest] = []  # oldest first
        self._active: list[GenerationRequest] = []  # in admission order
        self._preemptions = 0
        self._image_batch: Any = None  # an embeddings batch, made for the first image
        self._image_width = 0

    @property
    def idle(self) -> bool:
        return not self._pending and not self._active

    def submit(self, request: GenerationRequest) -> None:
        bisect.insort(self._pending, request, key=lambda r: r.age)

    def stats(self) -> dict[str, Any]:
        return {
            "active_sequences": self._slots_used(),
            "waiting_requests": len(self._pending),
            "kv_cells_used": self._ledger.used,
            "kv_cells_total": self._ledger.n_cells,
            "cached_prefixes": len(self._ledger.host),
            "preemptions": self._preemptions,
        }

    def close(self) -> None:
        for request in self._pending + self._active:
            self._close(request)
        ll.llama_batch_free(self._batch)
        if self._image_batch is not None:
            ll.llama_batch_free(self._image_batch)

    def step(self) -> None:
        self._drop_cancelled()
        self._admit()
        plan, image = self._plan()
        if image is not None and not self._decode_image(*image):
            return
        outputs = self._decode(plan) if plan else None
        if outputs:
            self._sample(outputs)

    # Admission and pre-emption

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._pending if r.cancelled]:
            self._pending.remove(request)
            self._close(request)
        for request in [r for r in self._active if r.cancelled]:
            self._active.remove(request)
            self._release(request, keep=True)
            self._close(request)

    def _admit(self) -> None:
        while self._pending:
            if self._repeatable and self._active:
                return
            request = self._pending[0]
            choices = [c for c in request.choices if not c.finished]
            if self._slots_used() + len(choices) > self._parallel:
                return
            starters = choices if request.forked else choices[:1]
            prefixes = self._room_for(starters, len(choices))
            if prefixes is None:
                if self._active:
                    return
                self._pending.pop(0)
                request.fail(ContextLengthExceededError(self._ledger.n_cells, len(request.prompt)))
                self._close(request)
                continue
            self._pending.pop(0)
            if self._repeatable:
                self._ledger.clear()
            for choice in choices:
                choice.seq = self._ledger.acquire()
            for choice, prefix in zip(starters, prefixes, strict=True):
                choice.n_past = self._ledger.start(choice.seq, prefix)
            if not request.admitted_before:
                request.usage.cached_tokens = starters[0].n_past
                request.admitted_before = True
            self._active.append(request)

    def _room_for(self, starters: list[Choice], n_choices: int) -> list[Prefix] | None:
        """The prefixes the starting choices begin from, or None if they do not fit in the free cells.
        A cached prefix that needs more cells than starting afresh (a long host entry) is given up."""
        found = [self._match(c) for c in starters]
        for prefixes in (found, [Prefix()] * len(starters)):
            need = sum(p.cells_needed(len(c.tokens)) for c, p in zip(starters, prefixes, strict=True))
            if self._ledger.free_cells >= need + n_choices + self._reserved():
                return prefixes
        return None

    def _match(self, choice: Choice) -> Prefix:
        """The cached prefix to start from; at least the last token is always evaluated again."""
        prefix = self._ledger.best_prefix(choice.tokens)
        prefix.length = min(prefix.length, len(choice.tokens) - 1)
        image = choice.request.image_at(prefix.length)
        if image is not None and image.non_causal:
            prefix.length = image.start  # its cells attend to the whole image: never start in the middle
        return prefix

    def _reserved(self) -> int:
        """Cells that admitted prompts still need."""
        return sum(max(c.pending - 1, 0) for r in self._active for c in r.choices if not c.finished)

    def _slots_used(self) -> int:
        return sum(1 for r in self._active for c in r.choices if not c.finished)

    def _free_cells_by_preempting(self) -> bool:
        """Pre-empt the youngest request; a request alone ends its newest choice instead."""
        if len(self._active) > 1:
            victim = max(self._active, key=lambda r: r.age)
            self._active.remove(victim)
            self._release(victim, keep=True)  # its state waits in the host cache
            self.submit(victim)
            self._preemptions += 1
            return True
        if self._active:
            choice = [c for c in self._active[0].choices if not c.finished][-1]
            self._finish(choice, "length", choice.stops.flush())
            return True
        return False

    def _release(self, request: GenerationRequest, *, keep: bool) -> None:
        for choice in request.choices:
            if choice.seq >= 0:
                self._ledger.release(choice.seq, keep=keep)
                choice.seq, choice.n_past = -1, 0

    def _close(self, request: GenerationRequest) -> None:
        for choice in request.choices:
            choice.finished = True
            choice.chain.free()
        request.events.put(DONE)

    # One step

    def _plan(self) -> tuple[list[tuple[Choice, int]], tuple[Choice, int] | None]:
        """(choice, tokens to feed) for this step: every generating choice, then prompt chunks; and at
        most one chunk of image embeddings. Text chunks stop where an image starts."""
        while True:
            ready = [c for r in self._active for c in r.choices
                     if not c.finished and (r.forked or c.index == 0)]
            decoding = [c for c in ready if c.pending == 1]
            if self._ledger.free_cells >= len(decoding):
                break
            self._free_cells_by_preempting()
        plan = [(c, 1) for c in decoding]
        image_chunk = None
        prefilling = [c for c in ready if c.pending > 1]
        room = min(self._batch_size, self._ledger.free_cells) - len(plan)
        for choice in prefilling:
            if room <= 0:
                break
            request = choice.request
            image = request.image_at(choice.n_past)
            if image is not None:
                take = min(image.end - choice.n_past, room)
                if image_chunk is None and (take == image.end - choice.n_past or not image.non_causal):
                    image_chunk = (choice, take)
                    room -= take
                continue
            following = request.next_image(choice.n_past)
            take = min(choice.pending if following is None else following - choice.n_past, room)
            plan.append((choice, take))
            room -= take
        if not plan and image_chunk is None and self._active:
            self._free_cells_by_preempting()
        return plan, image_chunk

    def _decode(self, plan: list[tuple[Choice, int]]) -> list[tuple[Choice, int]] | None:
        """Decode the plan; the choices that completed their input, with their output rows."""
        batch, n, outputs = self._batch, 0, []
        # By sequence id: with slots llama.cpp splits a batch into micro-batches of consecutive ids, each
        # another pass over the weights, so a step in admission order could take one pass per sequence.
        plan = sorted(plan, key=lambda item: item[0].seq)
        for choice, take in plan:
            for pos in range(choice.n_past, choice.n_past + take):
                batch.token[n] = choice.tokens[pos]
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = choice.seq
                batch.logits[n] = 0
                n += 1
            if take == choice.pending:
                batch.logits[n - 1] = 1
                outputs.append((choice, n - 1))
        batch.n_tokens = n
        status = ll.llama_decode(self._ctx, batch)
        if status == DECODE_NO_SLOT:
            self._free_cells_by_preempting()
            return None
        if status != 0:
            self._fail_all(EngineError(f"llama.cpp failed to decode (status {status})."))
            return None
        for choice, take in plan:
            self._ledger.append(choice.seq, choice.tokens[choice.n_past:choice.n_past + take])
            choice.n_past += take
        return outputs

    def _decode_image(self, choice: Choice, take: int) -> bool:
        """Feed `take` of the image embeddings at the choice's position; False if the step must stop."""
        image = choice.request.image_at(choice.n_past)
        assert image is not None
        offset = choice.n_past - image.start
        rows = image.embeddings[offset:offset + take]
        batch = self._embeddings_batch(rows.shape[1])
        ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)
        for i in range(take):
            batch.pos[i] = choice.n_past + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = choice.seq
            batch.logits[i] = 0
        batch.n_tokens = take
        if image.non_causal:
            ll.llama_set_causal_attn(self._ctx, False)
        status = ll.llama_decode(self._ctx, batch)
        if image.non_causal:
            ll.llama_set_causal_attn(self._ctx, True)
        if status == DECODE_NO_SLOT:
            self._free_cells_by_preempting()
            return False
        if status != 0:
            self._fail_all(EngineError(f"llama.cpp failed to decode an image (status {status})."))
            return False
        self._ledger.append(choice.seq, choice.tokens[choice.n_past:choice.n_past + take])
        choice.n_past += take
        return True

    def _embeddings_batch(self, width: int) -> Any:
        if self._image_width != width:
            if self._image_batch is not None:
                ll.llama_batch_free(self._image_batch)
            self._image_batch = ll.llama_batch_init(self._batch_size, width, 1)
            self._image_width = width
        return self._image_batch

    def _fail_all(self, error: Exception) -> None:
        for request in self._active:
            self._release(request, keep=False)
            request.fail(error)
            self._close(request)
        self._active.clear()

    def _sample(self, outputs: list[tuple[Choice, int]]) -> None:
        for choice, row in outputs:
            request = choice.request
            if not request.forked:
                request.forked = True
                for sibling in request.choices[1:]:
                    if self._ledger.share(choice.seq, sibling.seq, choice.n_past):
                        sibling.n_past = choice.n_past
                        self._sample_one(sibling, row)  # else it evaluates the prompt itself in later steps
            if not choice.finished:
                self._sample_one(choice, row)

    def _sample_one(self, choice: Choice, row: int) -> None:
        vocab, params = self._vocab, choice.request.params
        token = ll.llama_sampler_sample(choice.chain.ptr, self._ctx, row)
        if vocab.is_eog(token):
            tail, _ = choice.stops.feed(choice.decoder.decode(b"", final=True))
            self._finish(choice, "stop", tail + choice.stops.flush())
            return
        if params.logprobs is not None:
            logits = ll.llama_get_logits_ith(self._ctx, row)
            choice.held_logprobs.append(
                token_logprob(logits, vocab, token, params.logprobs))
        choice.tokens.append(token)
        choice.n_generated += 1
        choice.request.usage.completion_tokens += 1
        text, stopped = choice.stops.feed(choice.decoder.decode(vocab.piece(token)))
        if stopped:
            self._finish(choice, "stop", text)
        elif choice.n_generated == params.max_tokens or len(choice.tokens) >= self._context_length:
            rest, _ = choice.stops.feed(choice.decoder.decode(b"", final=True))
            self._finish(choice, "length", text + rest + choice.stops.flush())
        else:
            emit(choice, text)

    def _finish(self, choice: Choice, reason: str, text: str) -> None:
        emit(choice, text, reason)
        choice.finished = True
        if choice.seq >= 0:
            self._ledger.release(choice.seq, keep=True)
            choice.seq = -1
        choice.chain.free()
        request = choice.request
        if request.done:
            if request in self._active:
                self._active.remove(request)
            request.events.put(DONE)
