"""The scheduler's policies with in-process workers: eviction, restart backoff, keep_alive, queues.

Each worker is the real worker app on the fake engine, served by uvicorn on its Unix socket inside the
test's event loop (tests/inprocess_worker.py), so requests and status polls are real HTTP on the socket
but a load takes milliseconds instead of a Python start. test_scheduler.py keeps the tests that need
real processes (signals, the worker's stderr, the proxy in front).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from inprocess_worker import InProcessWorker, WorkerFarm
from test_scheduler import fake_models

from runtime.config import Settings
from runtime.errors import InvalidRequestError, QueueFullError, WorkerError
from runtime.scheduler import scheduler as scheduler_module
from runtime.scheduler.memory import OVERHEAD
from runtime.scheduler.scheduler import ModelLease, Scheduler
from runtime.scheduler.worker_client import WorkerResponse, WorkerUnreachable
from runtime.store.registry import Registry

MIB = 1024 * 1024
TEST_TIMEOUT_S = 20  # a hung scenario fails instead of blocking the run
WAIT_S = 5  # generous upper bound for "eventually", never a timing assertion
FIRST_BACKOFF_S = 0.5  # the scheduler's first restart delay; it doubles with each further failure
EARLY_S = 0.05  # how much sooner than asked a sleep may wake (clock granularity)

Scenario = Callable[[Scheduler], Awaitable[None]]


class Env:
    """Settings, a registry of fake models and a WorkerFarm; `run(scenario)` runs a scheduler on them."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        self.farm = WorkerFarm()

    def run(self, scenario: Scenario) -> None:
        async def main() -> None:
            scheduler = Scheduler(self.settings, self.registry, start_worker=self.farm)
            await scheduler.start()
            try:
                await asyncio.wait_for(scenario(scheduler), TEST_TIMEOUT_S)
            finally:
                await scheduler.shutdown()
            assert self.farm.running() == set(), "shutdown leaves no worker running"

        asyncio.run(main())


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Env]]:
    """setup({"name": {metadata}}, options=, kinds=, sizes=, **settings) -> Env. Housekeeping ticks every
    50 ms instead of 500 (keep_alive expiry is seen sooner; the policy is the same)."""
    monkeypatch.setattr(scheduler_module, "TICK_S", 0.05)
    monkeypatch.setattr(scheduler_module, "EVICTION_POLL_S", 0.02)

    def _setup(models: dict[str, dict[str, Any]], options: dict[str, dict[str, Any]] | None = None,
               kinds: dict[str, str] | None = None, sizes: dict[str, int] | None = None, **settings: Any) -> Env:
        return Env(*fake_models(tmp_path, models, options, kinds, sizes, **settings))

    yield _setup


# Requests: what the server's proxy does, over the worker's socket


async def chat(scheduler: Scheduler, model: str, keep_alive: float | None = None, max_tokens: int = 1,
               seed: int | None = None) -> str:
    """One chat completion through a lease; the reply's text."""
    lease = scheduler.lease(model, keep_alive)
    socket_path = await lease.acquire()
    ok = False
    try:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                           "max_tokens": max_tokens, "seed": seed}).encode()
        reply = await WorkerResponse.open(socket_path, "/v1/chat/completions", body,
                                          {"content-type": "application/json"})
        try:
            data = b"".join([chunk async for chunk in reply.chunks()])
        finally:
            reply.close()
        ok = reply.status < 500
        assert reply.status == 200, data
        return json.loads(data)["choices"][0]["message"]["content"]
    finally:
        lease.release(ok)


async def hold(scheduler: Scheduler, model: str) -> ModelLease:
    """A request that has its place on the model's worker and keeps it (busy) until released."""
    lease = scheduler.lease(model)
    await lease.acquire()
    return lease


async def eventually(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def crash(worker: InProcessWorker, code: int = 1) -> None:
    """Crash a worker and let the scheduler see it exit."""
    worker.crash(code)
    assert await worker.exited == code
    await asyncio.sleep(0)  # the scheduler's exit callback runs before us, but make sure


def loaded(scheduler: Scheduler) -> dict[str, dict[str, Any]]:
    return {entry["model"]: entry for entry in scheduler.status()}


def unloaded(scheduler: Scheduler, farm: WorkerFarm, model: str) -> bool:
    """The scheduler has let the model go and its worker has stopped (the scheduler forgets the worker
    first, then stops it)."""
    return model not in loaded(scheduler) and model not in farm.running()


def backoff(scheduler: Scheduler, model: str, since: float) -> float:
    """Seconds from `since` (a time.time()) until the model may be started again."""
    return scheduler._slots[model].retry_at - since


# Loading


def test_loads_on_first_request_over_the_socket(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        assert loaded(scheduler) == {}
        text = await chat(scheduler, "m", max_tokens=3)
        assert len(text.split()) == 3
        worker = env.farm.live("m")
        entry = loaded(scheduler)["m"]
        assert entry["state"] == "ready" and entry["engine"]["engine"] == "fake"
        assert entry["parallel"] == 4  # what the engine reported in /status
        assert worker.socket_path.exists()
        metrics = scheduler.metrics()
        assert metrics["loads"] == {"m": 1} and metrics["requests"] == {"m": 1}

    env.run(scenario)
    assert env.farm.stopped == ["m"]
    assert not env.farm.workers[0].socket_path.exists()


def test_concurrent_first_requests_share_one_load(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})
    env.farm.load_delay["m"] = 0.1

    async def scenario(scheduler: Scheduler) -> None:
        replies = await asyncio.gather(*(chat(scheduler, "m") for _ in range(4)))
        assert all(replies)
        assert scheduler.metrics()["loads"] == {"m": 1}
        assert len(env.farm.of("m")) == 1

    env.run(scenario)


def test_unload_and_reload_with_other_options(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        status = await scheduler.load("m", options={"ctx_size": 1234})
        assert status["engine"]["context_length"] == 1234
        first = env.farm.live("m")
        await scheduler.load("m", options={"ctx_size": 1234})
        assert env.farm.live("m") is first  # same options: no reload
        status = await scheduler.load("m", options={"ctx_size": 512})
        assert status["engine"]["context_length"] == 512 and env.farm.live("m") is not first
        assert await scheduler.unload("m") is True
        assert await scheduler.unload("m") is False
        assert loaded(scheduler) == {} and env.farm.running() == set()

    env.run(scenario)


# Eviction


def test_lru_eviction_by_max_loaded_models(setup: Callable[..., Env]) -> None:
    env = setup({"a": {}, "b": {}, "c": {}}, max_loaded_models=2)

    async def scenario(scheduler: Scheduler) -> None:
        for model in ("a", "b", "a"):
            await chat(scheduler, model)
        await chat(scheduler, "c")
        assert set(loaded(scheduler)) == {"a", "c"} == env.farm.running()
        assert env.farm.stopped == ["b"]
        await chat(scheduler, "b")  # now a is the least recently used
        assert set(loaded(scheduler)) == {"b", "c"}
        assert env.farm.stopped == ["b", "a"]
        assert scheduler.metrics()["loads"] == {"a": 1, "b": 2, "c": 1}

    env.run(scenario)


def test_a_busy_model_is_never_evicted(setup: Callable[..., Env]) -> None:
    env = setup({"a": {}, "b": {}, "c": {}}, max_loaded_models=2)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "a")
        await chat(scheduler, "b")
        busy = await hold(scheduler, "a")  # a is the least recently used, but busy
        await chat(scheduler, "c")
        assert set(loaded(scheduler)) == {"a", "c"}
        assert env.farm.stopped == ["b"]
        busy.release(ok=True)

    env.run(scenario)


def test_a_load_waits_while_every_other_model_is_busy(setup: Callable[..., Env]) -> None:
    env = setup({"a": {}, "b": {}}, max_loaded_models=1)

    async def scenario(scheduler: Scheduler) -> None:
        busy = await hold(scheduler, "a")
        waiting = asyncio.create_task(chat(scheduler, "b"))
        await asyncio.sleep(0.3)  # many eviction polls
        assert not waiting.done()
        assert set(loaded(scheduler)) == {"a"} and scheduler._slots["b"].loading is not None
        assert scheduler.metrics()["loads"] == {"a": 1, "b": 0}
        busy.release(ok=True)
        assert await waiting
        assert set(loaded(scheduler)) == {"b"} and env.farm.stopped == ["a"]

    env.run(scenario)


def test_eviction_by_memory_budget_lru_first(setup: Callable[..., Env]) -> None:
    small, big = 100 * MIB, 300 * MIB
    budget = 2 * (small + OVERHEAD)  # two small models fit, a third does not
    env = setup({"a": {}, "b": {}, "c": {}, "d": {}}, sizes={"a": small, "b": small, "c": small, "d": big},
                memory_budget=budget)

    async def scenario(scheduler: Scheduler) -> None:
        for model in ("a", "b", "a"):
            await chat(scheduler, model)
        assert scheduler.metrics()["memory_used"] == budget
        await chat(scheduler, "c")
        assert set(loaded(scheduler)) == {"a", "c"} and env.farm.stopped == ["b"]
        # d needs more than one small model's room: a goes (least recently used), then c
        await chat(scheduler, "d")
        assert set(loaded(scheduler)) == {"d"} and env.farm.stopped == ["b", "a", "c"]
        assert loaded(scheduler)["d"]["memory"] == big + OVERHEAD
        assert scheduler.metrics()["memory_used"] == big + OVERHEAD

    env.run(scenario)


def test_a_model_over_the_whole_budget_is_refused_and_nothing_is_evicted(setup: Callable[..., Env]) -> None:
    env = setup({"a": {}, "huge": {}}, sizes={"huge": 2048 * MIB}, memory_budget=1024 * MIB)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "a")
        for attempt in (chat(scheduler, "huge"), scheduler.load("huge")):
            with pytest.raises(InvalidRequestError) as refused:
                await attempt
            assert refused.value.status == 400 and refused.value.code == "memory_budget_exceeded"
            assert "needs about 2304 MiB" in refused.value.message and "1024 MiB" in refused.value.message
        assert set(loaded(scheduler)) == {"a"} and env.farm.stopped == [] and env.farm.of("huge") == []

    env.run(scenario)


def test_a_kv_cache_over_the_budget_is_refused_naming_ctx_size(setup: Callable[..., Env]) -> None:
    gqa = {"block_count": 30, "embedding_length": 576, "head_count": 9, "head_count_kv": 3, "context_length": 2**20}
    env = setup({"m": gqa}, memory_budget=1024 * MIB)

    async def scenario(scheduler: Scheduler) -> None:
        with pytest.raises(InvalidRequestError) as refused:
            await scheduler.load("m", options={"ctx_size": 100_000})
        assert refused.value.param == "ctx_size" and "KV cache for 100000 tokens" in refused.value.message
        assert env.farm.of("m") == []  # refused before a worker started
        await scheduler.load("m", options={"ctx_size": 4096})

    env.run(scenario)


def test_a_seeded_context_counts_once_made_and_makes_room(setup: Callable[..., Env]) -> None:
    gqa = {"block_count": 30, "embedding_length": 576, "head_count": 9, "head_count_kv": 3, "context_length": 2048}
    kv = 30 * 2048 * 3 * (64 * 2 + 64 * 2)  # one KV pool of 2048 f16 cells: a seeded context adds it once more
    base = 2 * kv + OVERHEAD  # the pool and the host cache of idle prefixes
    env = setup({"a": gqa, "b": gqa}, memory_budget=2 * base + kv // 2)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "a")
        assert loaded(scheduler)["a"]["memory"] == base
        await chat(scheduler, "a", seed=1)
        await eventually(lambda: loaded(scheduler)["a"]["memory"] == base + kv, "the seeded context counted")
        assert scheduler.metrics()["memory_used"] == base + kv
        await chat(scheduler, "b")  # both fit without the seeded context, not with it: a goes
        assert set(loaded(scheduler)) == {"b"} and env.farm.stopped == ["a"]
        await chat(scheduler, "a")  # a new worker has no seeded context yet
        assert set(loaded(scheduler)) == {"a", "b"} and scheduler.metrics()["memory_used"] == 2 * base

    env.run(scenario)


# Crashes and failed loads


def test_a_crashed_worker_restarts_on_the_next_request(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m")
        first = env.farm.live("m")
        await crash(first, code=1)
        assert loaded(scheduler) == {}
        assert scheduler.metrics()["crashes"] == {"m": 1}
        assert scheduler.metrics()["memory_used"] == 0
        await asyncio.sleep(FIRST_BACKOFF_S + 0.1)  # past the backoff: still nothing restarts by itself
        assert env.farm.of("m") == [first]
        await chat(scheduler, "m")
        assert env.farm.live("m") is not first
        assert scheduler.metrics()["loads"] == {"m": 2}
        assert scheduler.metrics()["crashes"] == {"m": 1}

    env.run(scenario)


def test_restart_backoff_grows_and_resets_after_a_success(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m")
        crashed_at = time.time()
        await crash(env.farm.live("m"))
        assert FIRST_BACKOFF_S <= backoff(scheduler, "m", crashed_at) < FIRST_BACKOFF_S + 0.2

        await chat(scheduler, "m")  # waits out the backoff, then succeeds
        assert time.time() - crashed_at >= FIRST_BACKOFF_S - EARLY_S
        crashed_at = time.time()
        await crash(env.farm.live("m"))
        assert FIRST_BACKOFF_S <= backoff(scheduler, "m", crashed_at) < FIRST_BACKOFF_S + 0.2  # reset

        await scheduler.load("m")  # restarted, but no request has succeeded on it yet
        assert time.time() - crashed_at >= FIRST_BACKOFF_S - EARLY_S
        crashed_at = time.time()
        await crash(env.farm.live("m"))
        assert 2 * FIRST_BACKOFF_S <= backoff(scheduler, "m", crashed_at) < 2 * FIRST_BACKOFF_S + 0.2  # doubled
        assert scheduler.metrics()["crashes"] == {"m": 3}
        assert scheduler.metrics()["loads"] == {"m": 3}

    env.run(scenario)


def test_a_crash_mid_request_fails_it_and_a_queued_request_gets_a_new_worker(setup: Callable[..., Env]) -> None:
    env = setup({"m": {"fake_delay": 0.02}}, options={"m": {"parallel": 1}})

    async def scenario(scheduler: Scheduler) -> None:
        lease = scheduler.lease("m")
        socket_path = await lease.acquire()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 500,
                           "stream": True}).encode()
        reply = await WorkerResponse.open(socket_path, "/v1/chat/completions", body,
                                          {"content-type": "application/json"})
        chunks = reply.chunks()
        assert (await chunks.__anext__()).startswith(b"data: {")
        queued = asyncio.create_task(chat(scheduler, "m"))
        await eventually(lambda: loaded(scheduler)["m"]["queue_depth"] == 1, "a queued request")
        first = env.farm.live("m")
        await crash(first)
        with pytest.raises(WorkerUnreachable):
            async for _ in chunks:
                pass
        reply.close()
        lease.release(ok=False)
        assert await queued  # it found the worker gone and started another
        assert env.farm.live("m") is not first
        assert loaded(scheduler)["m"]["active"] == 0
        assert scheduler.metrics()["crashes"] == {"m": 1}
        assert scheduler.metrics()["requests"] == {"m": 2}

    env.run(scenario)


def test_a_failed_load_is_reported_to_every_waiter_and_backed_off(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})
    env.farm.fail_next_load("m", "weights are corrupt", times=2)
    env.farm.load_delay["m"] = 0.05  # so that all three requests wait for the same load

    async def scenario(scheduler: Scheduler) -> None:
        results = await asyncio.gather(*(chat(scheduler, "m") for _ in range(3)), return_exceptions=True)
        failed_at = time.time()
        assert all(isinstance(r, WorkerError) and "weights are corrupt" in r.message for r in results), results
        assert scheduler.metrics()["loads"] == {"m": 1}
        assert loaded(scheduler) == {} and scheduler.metrics()["memory_used"] == 0
        assert FIRST_BACKOFF_S - 0.1 <= backoff(scheduler, "m", failed_at) <= FIRST_BACKOFF_S

        with pytest.raises(WorkerError, match="weights are corrupt"):
            await chat(scheduler, "m")  # waits out the backoff, then fails again
        assert time.time() - failed_at >= FIRST_BACKOFF_S - EARLY_S
        failed_at = time.time()
        assert 2 * FIRST_BACKOFF_S - 0.1 <= backoff(scheduler, "m", failed_at) <= 2 * FIRST_BACKOFF_S  # doubled
        assert scheduler.metrics()["loads"] == {"m": 2}
        assert scheduler.metrics()["crashes"] == {"m": 0}  # a failed load is not a crash

    env.run(scenario)


def test_a_failed_load_leaves_the_model_with_the_options_it_had(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        await scheduler.load("m", options={"ctx_size": 1024}, keep_alive=60)
        env.farm.fail_next_load("m", "no memory for that context")
        with pytest.raises(WorkerError, match="no memory for that context"):
            await scheduler.load("m", options={"ctx_size": 4096}, keep_alive=5)
        assert loaded(scheduler) == {}  # the reload stopped the old worker first
        started = time.time()
        await chat(scheduler, "m")  # loads again at once (no backoff), with what the model had
        assert time.time() - started < FIRST_BACKOFF_S
        entry = loaded(scheduler)["m"]
        assert entry["options"] == {"ctx_size": 1024}
        assert entry["expires_at"] - entry["last_used"] == pytest.approx(60)

    env.run(scenario)


def test_unload_forgets_a_crashed_workers_load_options(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}})

    async def scenario(scheduler: Scheduler) -> None:
        await scheduler.load("m", options={"ctx_size": 1024})
        await crash(env.farm.live("m"))
        assert await scheduler.unload("m") is False  # nothing running, but its per-load options go
        await chat(scheduler, "m")
        assert loaded(scheduler)["m"]["options"] == {}

    env.run(scenario)


def test_options_over_the_models_training_context_are_refused_before_anything_changes(
        setup: Callable[..., Env]) -> None:
    env = setup({"m": {"context_length": 2048}})

    async def scenario(scheduler: Scheduler) -> None:
        await scheduler.load("m", options={"ctx_size": 1024})
        first = env.farm.live("m")
        with pytest.raises(InvalidRequestError, match="trained with a context of 2048 tokens") as refused:
            await scheduler.load("m", options={"ctx_size": 4096})
        assert refused.value.param == "ctx_size"
        assert env.farm.live("m") is first and loaded(scheduler)["m"]["options"] == {"ctx_size": 1024}

    env.run(scenario)


def test_an_engine_load_error_reaches_the_caller(setup: Callable[..., Env]) -> None:
    env = setup({"broken": {"fake_load_error": "unsupported architecture"}})

    async def scenario(scheduler: Scheduler) -> None:
        with pytest.raises(WorkerError, match="'broken' failed to load: unsupported architecture"):
            await scheduler.load("broken")
        assert loaded(scheduler) == {}

    env.run(scenario)


# keep_alive


def test_keep_alive_expiry_unloads_an_idle_model(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, keep_alive=0.3)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m", max_tokens=3)
        finished = time.time()
        entry = loaded(scheduler)["m"]
        assert entry["expires_at"] == pytest.approx(entry["last_used"] + 0.3)
        await asyncio.sleep(0.1)
        assert "m" in loaded(scheduler)  # not yet
        await eventually(lambda: unloaded(scheduler, env.farm, "m"), "keep_alive expiry")
        assert time.time() - finished >= 0.3 - EARLY_S
        assert env.farm.stopped == ["m"]
        worker = env.farm.of("m")[0]
        assert worker.stopping and await worker.exited == 0
        # the stopped worker's token counts are kept
        assert scheduler.metrics()["tokens"]["m"]["completion"] == 3

    env.run(scenario)


def test_shutdown_during_a_keep_alive_unload_still_stops_the_worker(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, keep_alive=0)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m")
        worker = env.farm.of("m")[0]
        poll = worker.poll_status

        async def slow_poll() -> bool:  # the unload's last status poll is under way when shutdown comes
            await asyncio.sleep(0.3)
            return await poll()

        worker.poll_status = slow_poll  # type: ignore[method-assign]
        await eventually(lambda: "m" not in loaded(scheduler), "the unload to start")
        assert worker.running  # detached from its slot but not stopped yet: Env.run checks shutdown stops it

    env.run(scenario)


def test_keep_alive_does_not_expire_a_busy_model(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, keep_alive=0.1)

    async def scenario(scheduler: Scheduler) -> None:
        busy = await hold(scheduler, "m")
        await asyncio.sleep(0.4)  # well past the keep_alive of the load
        assert "m" in loaded(scheduler) and env.farm.stopped == []
        busy.release(ok=True)  # the clock starts again now
        await eventually(lambda: unloaded(scheduler, env.farm, "m"), "keep_alive expiry after the request")
        assert env.farm.stopped == ["m"]

    env.run(scenario)


def test_request_keep_alive_zero_and_forever(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, keep_alive=0.1)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m", keep_alive=-1.0)
        assert loaded(scheduler)["m"]["expires_at"] is None
        await asyncio.sleep(0.4)
        assert "m" in loaded(scheduler)
        await chat(scheduler, "m", keep_alive=0.0)
        await eventually(lambda: unloaded(scheduler, env.farm, "m"), "unloading right after the request")
        assert env.farm.stopped == ["m"] and scheduler.metrics()["loads"] == {"m": 1}

    env.run(scenario)


def test_keep_alive_layers_request_over_load_over_model_over_serve(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, keep_alive=600)

    def keep(scheduler: Scheduler) -> float | None:
        entry = loaded(scheduler)["m"]
        return None if entry["expires_at"] is None else round(entry["expires_at"] - entry["last_used"], 3)

    async def scenario(scheduler: Scheduler) -> None:
        await chat(scheduler, "m")
        assert keep(scheduler) == 600  # serve
        env.registry.configure("m", {"keep_alive": "1h"})
        await chat(scheduler, "m")
        assert keep(scheduler) == 3600  # model, over serve
        await scheduler.load("m", keep_alive="2h")
        assert keep(scheduler) == 7200  # load, over model
        await chat(scheduler, "m")
        assert keep(scheduler) == 7200  # the load's value stays for later requests
        await chat(scheduler, "m", keep_alive=30.0)
        assert keep(scheduler) == 30  # request, over load
        await chat(scheduler, "m", keep_alive=-1.0)
        assert keep(scheduler) is None
        await chat(scheduler, "m")
        assert keep(scheduler) == 7200
        await scheduler.unload("m")  # the load's value goes with the load
        await chat(scheduler, "m")
        assert keep(scheduler) == 3600
        env.registry.configure("m", {"keep_alive": None})
        await chat(scheduler, "m")
        assert keep(scheduler) == 600

    env.run(scenario)


# Queues


def test_queue_overflow_raises_queue_full(setup: Callable[..., Env]) -> None:
    env = setup({"m": {}}, options={"m": {"parallel": 1}}, max_queue=2)

    async def scenario(scheduler: Scheduler) -> None:
        busy = await hold(scheduler, "m")
        queued = [asyncio.create_task(chat(scheduler, "m")) for _ in range(2)]
        await eventually(lambda: loaded(scheduler)["m"]["queue_depth"] == 2, "two queued requests")
        with pytest.raises(QueueFullError) as caught:
            scheduler.lease("m")
        assert caught.value.retry_after >= 1 and caught.value.code == "queue_full"
        assert loaded(scheduler)["m"]["queue_depth"] == 2  # the rejected one took no place
        queued[0].cancel()  # a client that leaves frees its place
        await eventually(lambda: loaded(scheduler)["m"]["queue_depth"] == 1, "the queue to shrink")
        queued.append(asyncio.create_task(chat(scheduler, "m")))
        await eventually(lambda: loaded(scheduler)["m"]["queue_depth"] == 2, "the freed place taken")
        busy.release(ok=True)
        assert all(await asyncio.gather(*queued[1:]))
        assert loaded(scheduler)["m"]["queue_depth"] == 0 and loaded(scheduler)["m"]["active"] == 0
        assert scheduler.metrics()["requests"] == {"m": 3}

    env.run(scenario)


# Shutdown


def test_shutdown_cancels_a_load_waiting_for_room(setup: Callable[..., Env]) -> None:
    env = setup({"a": {}, "b": {}}, max_loaded_models=1)

    async def scenario(scheduler: Scheduler) -> None:
        await hold(scheduler, "a")
        waiting = asyncio.create_task(chat(scheduler, "b"))
        await eventually(lambda: scheduler._slots.get("b") and scheduler._slots["b"].loading, "b to wait for room")
        await scheduler.shutdown()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert scheduler.metrics()["loads"] == {"a": 1, "b": 0}
        assert loaded(scheduler) == {} and env.farm.of("b") == []
        assert env.farm.running() == set()

    env.run(scenario)
