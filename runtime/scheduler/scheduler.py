"""The scheduler: one worker process per loaded model, loaded on demand, kept alive, evicted LRU.

Each model has a slot: its worker (if loaded), a bounded queue of waiting requests and a gate
that lets as many requests run as the engine can serve in parallel. Loads and evictions happen
one at a time, so the memory accounting never races.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from runtime.config import Settings
from runtime.errors import QueueFullError, StackletError, WorkerError
from runtime.options import EngineOptions, check_context_size, first_keep_alive, parse_keep_alive
from runtime.scheduler.gate import Gate
from runtime.scheduler.memory import check_budget, default_budget, estimate, seeded_context_bytes
from runtime.scheduler.process import WorkerProcess, socket_dir
from runtime.spec import KINDS, ModelSpec, WorkerLimits
from runtime.store.registry import ModelRecord, Registry

log = logging.getLogger("stacklet.scheduler")

TICK_S = 0.5  # housekeeping period: keep_alive expiry
STATUS_EVERY_TICKS = 4  # poll workers' token counters every this many ticks
EVICTION_POLL_S = 0.2  # how often a load waiting for room re-checks for an idle model
RETRY_AFTER_S = 2
MAX_BACKOFF_S = 10.0


@dataclass(eq=False)
class Slot:
    name: str
    gate: Gate = field(default_factory=Gate)
    worker: WorkerProcess | None = None
    state: str = "unloaded"  # "loading", "ready" or "unloaded"
    loading: asyncio.Future[WorkerProcess] | None = None
    load_options: EngineOptions | None = None  # per-load options, kept until the model unloads
    load_keep_alive: float | None = None
    model_keep_alive: float | None = None  # stored with the model; refreshed on every request and load
    memory: int = 0  # estimate for the loaded worker
    seeded_memory: int = 0  # what it adds once its engine has made a context for seeded requests
    waiting: int = 0  # admitted requests that have not started yet
    last_used: float = 0.0
    expires_at: float | None = None
    loaded_at: float | None = None
    failures: int = 0  # consecutive crashes or failed loads, for the restart backoff
    retry_at: float = 0.0
    requests: int = 0
    loads: int = 0
    crashes: int = 0
    prompt_tokens: int = 0  # counted by workers that have stopped
    completion_tokens: int = 0

    @property
    def idle(self) -> bool:
        return self.gate.active == 0 and self.waiting == 0 and self.loading is None

    @property
    def memory_in_use(self) -> int:
        """The estimate, and the seeded context once the worker's last status says it was made."""
        seeded = self.worker is not None and self.worker.status.get("info", {}).get("seeded_context")
        return self.memory + (self.seeded_memory if seeded else 0)


class ModelLease:
    """One admitted request's claim on its model: `acquire` waits for the load and a free slot and gives
    the worker's socket; `release` hands the slot back once the answer is out."""

    def __init__(self, scheduler: Scheduler, slot: Slot, keep_alive: float | None) -> None:
        self.scheduler = scheduler
        self.slot = slot
        self.keep_alive = keep_alive

    async def acquire(self) -> Path:
        try:
            while True:
                worker = await self.scheduler.ready_worker(self.slot)
                await self.slot.gate.acquire()
                if self.slot.worker is worker and worker.running:
                    return worker.socket_path
                self.slot.gate.release()  # it crashed or was replaced while we queued
        finally:
            self.slot.waiting -= 1

    def release(self, ok: bool) -> None:
        self.slot.gate.release()
        self.slot.requests += 1
        self.scheduler.touch(self.slot, self.keep_alive)
        if ok:
            self.slot.failures = 0


WorkerFactory = Callable[[ModelSpec, Path], WorkerProcess]


class Scheduler:
    def __init__(self, settings: Settings, registry: Registry, start_worker: WorkerFactory = WorkerProcess) -> None:
        """`start_worker` makes a worker for a spec and a socket path (tests pass one that runs in-process)."""
        self.settings = settings
        self.registry = registry
        self._start_worker = start_worker
        self.budget = settings.memory_budget
        self._slots: dict[str, Slot] = {}
        self._load_lock = asyncio.Lock()
        self._sockets = itertools.count(1)
        self._socket_dir = socket_dir(settings.paths.state)
        self._housekeeper: asyncio.Task[None] | None = None
        self._expiring: set[asyncio.Future[None]] = set()  # keep_alive unloads under way

    async def start(self) -> None:
        if not self.budget:
            self.budget = await asyncio.to_thread(default_budget, self.settings.engine)
        self._housekeeper = asyncio.create_task(self._housekeeping())

    async def shutdown(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL): nothing outlives the server."""
        if self._housekeeper:
            self._housekeeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeper
        await asyncio.gather(*self._expiring, return_exceptions=True)  # finish them: they own their workers
        loads = [slot.loading for slot in self._slots.values() if slot.loading is not None]
        for loading in loads:
            loading.cancel()  # a load still waiting for room must not start a worker after this
        await asyncio.gather(*loads, return_exceptions=True)
        await asyncio.gather(*(self._stop(slot) for slot in self._slots.values()), return_exceptions=True)

    # Requests

    def lease(self, model: str, keep_alive: float | None = None) -> ModelLease:
        """Queue a request for `model` (keep_alive already parsed); QueueFullError when its queue is full."""
        record = self.registry.get(model)
        slot = self._slot(record)
        if slot.waiting >= self.settings.max_queue:
            raise QueueFullError(f"Too many requests are waiting for the model '{record.name}'. Retry shortly.",
                                 retry_after=RETRY_AFTER_S)
        slot.waiting += 1
        return ModelLease(self, slot, keep_alive)

    async def ready_worker(self, slot: Slot) -> WorkerProcess:
        """The slot's running worker, loading it first (one shared load for all who wait)."""
        if slot.worker is not None and slot.state == "ready" and slot.worker.running:
            return slot.worker
        if slot.loading is None:
            slot.loading = asyncio.ensure_future(self._load(slot))
            slot.loading.add_done_callback(partial(_load_finished, slot))
        return await asyncio.shield(slot.loading)

    def touch(self, slot: Slot, keep_alive: float | None) -> None:
        """Restart the keep_alive clock: request value > per-load value > the model's > serve default."""
        slot.last_used = time.time()
        keep = first_keep_alive(keep_alive, slot.load_keep_alive, slot.model_keep_alive, self.settings.keep_alive)
        slot.expires_at = None if keep < 0 else slot.last_used + keep

    # Management

    async def load(self, model: str, options: EngineOptions | dict[str, Any] | None = None,
                   keep_alive: Any = None) -> dict[str, Any]:
        """Load (or reload with different options) and return the worker's status. Options the model or the
        memory budget cannot take are refused before anything changes; a load that fails leaves the model
        with the options it had (unloaded when a reload stopped its worker first)."""
        record = self.registry.get(model)
        if isinstance(options, dict):
            options = EngineOptions.from_dict(options)
        keep = None if keep_alive is None else parse_keep_alive(keep_alive)
        slot = self._slot(record)
        if slot.loading is not None:
            with contextlib.suppress(StackletError):
                await asyncio.shield(slot.loading)
        wanted = self.spec_for(record, options).options
        self._admit(record, wanted)
        before = (slot.load_options, slot.load_keep_alive)
        if slot.worker is not None and slot.worker.spec.options != wanted:
            log.info("reloading %s with new options", record.name)
            await self._stop(slot)
        slot.load_options = options
        if keep is not None:
            slot.load_keep_alive = keep
        try:
            await self.ready_worker(slot)
        except Exception:  # not on cancellation: the shared load goes on, with these options
            if slot.worker is None:  # what later requests load with: the options it had, without a backoff
                slot.load_options, slot.load_keep_alive = before
                slot.failures, slot.retry_at = 0, 0.0
            raise
        self.touch(slot, None)
        return self._describe(slot)

    async def unload(self, model: str) -> bool:
        """Stop the model's worker and forget its per-load options; False when it was not loaded."""
        record = self.registry.get(model)
        slot = self._slots.get(record.name)
        if slot is None or slot.worker is None:
            if slot is not None and slot.loading is None:
                slot.load_options = slot.load_keep_alive = None
            return False
        await self._stop(slot)
        return True

    def status(self) -> list[dict[str, Any]]:
        return [self._describe(slot) for slot in self._slots.values() if slot.worker is not None]

    def metrics(self) -> dict[str, Any]:
        tokens: dict[str, dict[str, int]] = {}
        for slot in self._slots.values():
            live = slot.worker.status if slot.worker else {}
            tokens[slot.name] = {"prompt": slot.prompt_tokens + live.get("prompt_tokens", 0),
                                 "completion": slot.completion_tokens + live.get("completion_tokens", 0)}
        return {
            "tokens": tokens,
            "requests": {slot.name: slot.requests for slot in self._slots.values()},
            "loads": {slot.name: slot.loads for slot in self._slots.values()},
            "crashes": {slot.name: slot.crashes for slot in self._slots.values()},
            "memory_budget": self.budget,
            "memory_used": sum(slot.memory_in_use for slot in self._slots.values()),
        }

    # Internals

    def _slot(self, record: ModelRecord) -> Slot:
        slot = self._slots.setdefault(record.name, Slot(record.name))
        slot.model_keep_alive = record.keep_alive
        return slot

    def spec_for(self, record: ModelRecord, load_options: EngineOptions | None) -> ModelSpec:
        """Engine options in effect: serve < stored with the model < this load; limits from the settings."""
        options = self.settings.engine.merge(record.options).merge(load_options)
        limits = WorkerLimits(self.settings.max_body_bytes, self.settings.paths.images, self.settings.image_url_ttl,
                              self.settings.image_fetch_private)
        return replace(record.spec(self.settings.paths), options=options, limits=limits)

    async def _load(self, slot: Slot) -> WorkerProcess:
        delay = slot.retry_at - time.time()
        if delay > 0:
            log.info("restarting %s in %.1fs", slot.name, delay)
            await asyncio.sleep(delay)
        async with self._load_lock:
            record = self.registry.get(slot.name)
            spec = self.spec_for(record, slot.load_options)
            memory = self._admit(record, spec.options)
            slot.seeded_memory = seeded_context_bytes(record.kind, record.metadata, spec.options)
            await self._make_room(slot, memory)
            worker = self._start_worker(spec, self._socket_dir / f"w{os.getpid()}-{next(self._sockets)}.sock")
            slot.worker, slot.state, slot.memory = worker, "loading", memory
            slot.loads += 1
            try:
                status = await worker.start()
            except BaseException as exc:
                slot.worker, slot.state, slot.memory = None, "unloaded", 0
                self._back_off(slot)
                if isinstance(exc, Exception) and not isinstance(exc, StackletError):
                    log.exception("starting the worker for %s failed", slot.name)
                    raise WorkerError(f"The model '{slot.name}' could not be started; see the server log.") from exc
                raise
        slot.state, slot.loaded_at = "ready", time.time()
        slot.gate.resize(_capacity(spec, status))
        assert worker.exited is not None
        worker.exited.add_done_callback(partial(self._worker_exited, slot, worker))
        self.touch(slot, None)
        log.info("loaded %s (worker pid %s)", slot.name, worker.pid)
        return worker

    def _admit(self, record: ModelRecord, options: EngineOptions) -> int:
        """The memory a load with `options` takes; InvalidRequestError (400) saying why when the model's training
        context or the memory budget cannot take them."""
        check_context_size(options, record.metadata.get("context_length"))
        need = estimate(record.kind, record.size, record.metadata, options)
        check_budget(record.name, need, self.budget, record.size, options, record.metadata)
        return need

    async def _make_room(self, slot: Slot, need: int) -> None:
        """Evict idle models, least recently used first, until `need` fits; wait while all are busy."""
        while True:
            others = [s for s in self._slots.values() if s is not slot and s.worker is not None]
            limit = self.settings.max_loaded_models
            fits = (not limit or len(others) < limit) and sum(s.memory_in_use for s in others) + need <= self.budget
            if fits or not others:
                return
            idle = [s for s in others if s.idle and s.state == "ready"]
            if idle:
                victim = min(idle, key=lambda s: s.last_used)
                log.info("evicting %s to make room for %s", victim.name, slot.name)
                await self._stop(victim)
            else:
                await asyncio.sleep(EVICTION_POLL_S)

    async def _stop(self, slot: Slot) -> None:
        worker = slot.worker
        if worker is None:
            return
        slot.worker, slot.state, slot.memory, slot.expires_at = None, "unloaded", 0, None
        slot.load_options = slot.load_keep_alive = None
        slot.failures = 0
        await worker.poll_status()
        _bank_tokens(slot, worker)
        await worker.stop()
        log.info("unloaded %s", slot.name)

    def _worker_exited(self, slot: Slot, worker: WorkerProcess, exited: asyncio.Task[int]) -> None:
        if worker.stopping or slot.worker is not worker:
            return
        log.warning("the worker for %s (pid %s) exited with code %s; it restarts on the next request",
                    slot.name, worker.pid, exited.result())
        slot.worker, slot.state, slot.memory = None, "unloaded", 0
        slot.crashes += 1
        self._back_off(slot)
        _bank_tokens(slot, worker)
        asyncio.ensure_future(worker.stop())

    def _back_off(self, slot: Slot) -> None:
        slot.failures += 1
        slot.retry_at = time.time() + min(MAX_BACKOFF_S, 0.5 * 2 ** (slot.failures - 1))

    async def _housekeeping(self) -> None:
        for tick in itertools.count():
            await asyncio.sleep(TICK_S)
            now = time.time()
            for slot in list(self._slots.values()):
                expired = slot.expires_at is not None and now >= slot.expires_at
                if slot.state == "ready" and slot.idle and expired:
                    log.info("keep_alive of %s expired", slot.name)
                    try:
                        await self._unload_expired(slot)
                    except Exception:  # keep housekeeping alive for the other models
                        log.exception("unloading %s failed", slot.name)
            if tick % STATUS_EVERY_TICKS == 0:
                workers = [s.worker for s in self._slots.values() if s.worker and s.state == "ready"]
                await asyncio.gather(*(w.poll_status() for w in workers))

    async def _unload_expired(self, slot: Slot) -> None:
        """Shielded from the housekeeper's cancellation at shutdown, which waits for it instead: `_stop`
        detaches the worker from its slot first, so nothing else would stop it."""
        unload = asyncio.ensure_future(self._stop(slot))
        self._expiring.add(unload)
        unload.add_done_callback(self._expiring.discard)
        await asyncio.shield(unload)

    def _describe(self, slot: Slot) -> dict[str, Any]:
        worker = slot.worker
        assert worker is not None
        return {
            "model": slot.name,
            "state": slot.state,
            "pid": worker.pid,
            "memory": slot.memory_in_use,
            "rss": worker.rss(),
            "queue_depth": slot.waiting,
            "active": slot.gate.active,
            "parallel": slot.gate.capacity,
            "loaded_at": slot.loaded_at,
            "last_used": slot.last_used,
            "expires_at": slot.expires_at,
            "options": worker.spec.options.as_dict(),
            "engine": worker.status.get("info", {}),
        }


def _load_finished(slot: Slot, loading: asyncio.Future[WorkerProcess]) -> None:
    slot.loading = None
    if not loading.cancelled():
        loading.exception()  # the waiters got it; mark it seen


def _bank_tokens(slot: Slot, worker: WorkerProcess) -> None:
    slot.prompt_tokens += worker.status.get("prompt_tokens", 0)
    slot.completion_tokens += worker.status.get("completion_tokens", 0)
    worker.status = {**worker.status, "prompt_tokens": 0, "completion_tokens": 0}


def _capacity(spec: ModelSpec, status: dict[str, Any]) -> int:
    """Requests one worker runs at once: what the engine reports, else --parallel, else a default."""
    reported = status.get("info", {}).get("parallel")
    return max(1, int(reported or spec.options.parallel or KINDS[spec.kind].parallel))
