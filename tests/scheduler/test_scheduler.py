"""The scheduler with real worker processes running the fake engine, behind a minimal app: what only a
real process shows (its stderr, signals, crashes, HTTP mapping). Lifecycle logic is tested in-process in
test_scheduler_inprocess.py.

The app only forwards `POST /v1/...` to the scheduler, so these tests exercise loading, queues,
eviction, keep_alive, cancellation and crashes without the rest of the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from runtime.config import Settings
from runtime.engines.llama.defaults import kv_cache_bytes
from runtime.errors import InvalidRequestError
from runtime.http.errors import install_error_handlers
from runtime.options import EngineOptions, parse_keep_alive
from runtime.scheduler.scheduler import Scheduler
from runtime.scheduler.worker_client import WorkerResponse
from runtime.server.proxy import ProxyResponse, forward_headers
from runtime.store.registry import ModelFile, ModelRecord, Registry

MIB = 1024 * 1024
WAIT_S = 60  # generous upper bound for "eventually", never a timing assertion


def wait_until(condition: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in status)
    except FileNotFoundError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fake_models(tmp_path: Path, models: dict[str, dict[str, Any]], options: dict[str, dict[str, Any]] | None = None,
                kinds: dict[str, str] | None = None, sizes: dict[str, int] | None = None,
                **settings: Any) -> tuple[Settings, Registry]:
    """Settings (a 64 GiB budget unless given) and a registry of fake-engine models, each with its metadata,
    options, kind (default llm) and file size (default 0)."""
    loaded = Settings.load({"memory_budget": 64 * 1024 * MIB, **settings})
    registry = Registry(loaded.paths.ensure())
    for name, metadata in models.items():
        files = [ModelFile("model", str(tmp_path / f"{name}.bin"), (sizes or {}).get(name, 0))]
        registry.add(ModelRecord(name, (kinds or {}).get(name, "llm"), {"type": "fake"}, files, metadata,
                                 EngineOptions.from_dict((options or {}).get(name)), engine="fake"))
    return loaded, registry


class WorkerLease:
    """The scheduler's lease as the relay takes it (the server's dispatch does this for every local target)."""

    def __init__(self, lease: Any) -> None:
        self.lease = lease
        self.acquired = False

    async def open(self, path: str, body: bytes, headers: dict[str, str]) -> WorkerResponse:
        socket_path = await self.lease.acquire()
        self.acquired = True
        return await WorkerResponse.open(socket_path, path, body, headers)

    def release(self, ok: bool) -> None:
        if self.acquired:  # a request that left the queue holds no place to give back
            self.lease.release(ok)


class Harness:
    """A scheduler behind a tiny FastAPI app served by uvicorn in a thread."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.scheduler = Scheduler(settings, registry)
        self.loop: asyncio.AbstractEventLoop | None = None
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            self.loop = asyncio.get_running_loop()
            await self.scheduler.start()
            yield
            await self.scheduler.shutdown()

        app = FastAPI(lifespan=lifespan)
        install_error_handlers(app)

        @app.post("/v1/{path:path}")
        async def forward(path: str, request: Request) -> Response:
            body = await request.body()
            payload = json.loads(body)
            keep_alive = payload.get("keep_alive")
            lease = self.scheduler.lease(payload["model"], None if keep_alive is None else parse_keep_alive(keep_alive))
            return ProxyResponse(WorkerLease(lease), "/v1/" + path, body,
                                 forward_headers("application/json", self.url))

        return app

    def __enter__(self) -> Harness:
        self.thread.start()
        wait_until(lambda: self.server.started, "the test server")
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=WAIT_S)

    def call(self, coroutine: Any) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=WAIT_S)

    def workers(self) -> dict[str, dict[str, Any]]:
        return {worker["model"]: worker for worker in self.scheduler.status()}

    def client(self, timeout: float = WAIT_S) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, timeout=timeout)

    def chat(self, model: str, **kwargs: Any) -> Any:
        return self.client().chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hello"}], **kwargs)


@pytest.fixture
def start(tmp_path: Any) -> Iterator[Callable[..., Harness]]:
    """start(models={"name": {metadata}}, **settings) -> a running Harness (stopped after the test)."""
    harnesses: list[Harness] = []

    def _start(models: dict[str, dict[str, Any]], options: dict[str, dict[str, Any]] | None = None,
               kinds: dict[str, str] | None = None, sizes: dict[str, int] | None = None,
               **settings: Any) -> Harness:
        loaded, registry = fake_models(tmp_path, models, options, kinds, sizes, **settings)
        harness = Harness(loaded, registry).__enter__()
        harnesses.append(harness)
        return harness

    yield _start
    for harness in harnesses:
        harness.__exit__()


def test_loads_on_first_request_and_stops_workers_on_shutdown(start: Callable[..., Harness]) -> None:
    harness = start({"m": {}})
    assert harness.workers() == {}
    chunks = list(harness.chat("m", stream=True, max_tokens=3))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 3
    worker = harness.workers()["m"]
    assert worker["state"] == "ready" and pid_alive(worker["pid"])
    assert worker["engine"]["engine"] == "fake"
    harness.__exit__()
    assert not pid_alive(worker["pid"])


def test_load_failure_answers_every_waiter(start: Callable[..., Harness]) -> None:
    harness = start({"broken": {"fake_load_error": "weights are corrupt"}})

    def attempt(_: int) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as caught:
            harness.chat("broken")
        return caught.value

    with ThreadPoolExecutor(3) as pool:
        errors = list(pool.map(attempt, range(3)))
    assert {e.status_code for e in errors} == {500}
    assert all("weights are corrupt" in e.message for e in errors)
    assert harness.scheduler.metrics()["loads"] == {"broken": 1}
    assert harness.workers() == {}


def test_unknown_model_is_404(start: Callable[..., Harness]) -> None:
    harness = start({})
    with pytest.raises(openai.NotFoundError) as caught:
        harness.chat("nope")
    assert caught.value.code == "model_not_found"


def test_keep_alive_parsing() -> None:
    assert parse_keep_alive(30) == 30.0
    assert parse_keep_alive("5m") == 300.0
    assert parse_keep_alive("1h") == 3600.0
    assert parse_keep_alive("-1") == -1.0
    assert parse_keep_alive(-20) == -1.0
    for bad in ("soon", True, None, "5 parsecs"):
        with pytest.raises(InvalidRequestError):
            parse_keep_alive(bad)


def test_kv_cache_estimate_uses_gguf_metadata() -> None:
    smollm = {"block_count": 30, "embedding_length": 576, "head_count": 9, "head_count_kv": 3,
              "context_length": 8192}
    assert kv_cache_bytes(smollm, EngineOptions()) == 30 * 8192 * 3 * (64 + 64) * 2
    assert kv_cache_bytes(smollm, EngineOptions(ctx_size=1024, cache_type_k="q8_0", cache_type_v="q8_0")) == int(
        30 * 1024 * 3 * (64 + 64) * 1.0625)
    assert kv_cache_bytes({}, EngineOptions()) == 0


def test_queue_overflow_is_503_with_retry_after(start: Callable[..., Harness]) -> None:
    harness = start({"m": {"fake_delay": 0.05}}, options={"m": {"parallel": 1}}, max_queue=1)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400, "stream": True}
    with httpx.Client(timeout=WAIT_S) as http, http.stream("POST", harness.url + "/chat/completions",
                                                          json=body) as running:
        lines = running.iter_lines()  # keep a reference: a collected iterator closes the connection
        next(lines)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(http.post, harness.url + "/chat/completions", json={**body, "max_tokens": 1})
            wait_until(lambda: harness.workers()["m"]["queue_depth"] == 1, "a queued request")
            rejected = http.post(harness.url + "/chat/completions", json=body)
            assert rejected.status_code == 503
            assert int(rejected.headers["retry-after"]) >= 1
            assert rejected.json()["error"]["code"] == "queue_full"
            running.close()
            assert queued.result().status_code == 200


def test_client_leaving_the_queue_frees_its_place(start: Callable[..., Harness]) -> None:
    harness = start({"m": {"fake_delay": 0.05}}, options={"m": {"parallel": 1}})
    running = harness.chat("m", stream=True, max_tokens=400)
    chunks = iter(running)  # keep a reference: a collected iterator closes the connection
    next(chunks)
    impatient = harness.client(timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    wait_until(lambda: harness.workers()["m"]["queue_depth"] == 0, "the queue to empty")
    assert harness.workers()["m"]["active"] == 1
    running.close()


def test_client_disconnect_frees_the_slot(start: Callable[..., Harness]) -> None:
    harness = start({"m": {"fake_delay": 0.05}}, options={"m": {"parallel": 1}})
    stream = harness.chat("m", stream=True, max_tokens=1000)
    next(iter(stream))
    stream.close()
    wait_until(lambda: harness.workers()["m"]["active"] == 0, "the slot to be released")
    worker = harness.workers()["m"]
    socket_path = str(harness.scheduler._slots["m"].worker.socket_path)
    with httpx.Client(transport=httpx.HTTPTransport(uds=socket_path), base_url="http://worker") as direct:
        wait_until(lambda: direct.get("/status").json()["active"] == 0, "the worker to drop the request")
    assert harness.chat("m", max_tokens=2).choices[0].finish_reason == "length"
    assert harness.workers()["m"]["pid"] == worker["pid"]


def test_load_options_reach_the_engine(start: Callable[..., Harness]) -> None:
    harness = start({"m": {}}, options={"m": {"threads": 3, "n_gpu_layers": "0"}},
                    engine={"threads": 2, "flash_attn": "off"})
    status = harness.call(harness.scheduler.load("m", options={"ctx_size": 1234}))
    expected = {"threads": 3, "n_gpu_layers": "0", "flash_attn": "off", "ctx_size": 1234}
    assert status["options"] == expected
    assert status["engine"]["options"] == expected
    assert status["engine"]["context_length"] == 1234
    first_pid = status["pid"]
    again = harness.call(harness.scheduler.load("m", options={"ctx_size": 1234}))
    assert again["pid"] == first_pid  # same options: no reload
    changed = harness.call(harness.scheduler.load("m", options={"ctx_size": 512}))
    assert changed["pid"] != first_pid and changed["engine"]["context_length"] == 512
    assert harness.call(harness.scheduler.unload("m")) is True
    assert harness.call(harness.scheduler.unload("m")) is False


def test_killed_worker_fails_the_stream_cleanly_and_restarts(start: Callable[..., Harness]) -> None:
    harness = start({"m": {"fake_delay": 0.05}})
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000, "stream": True}
    with httpx.Client(timeout=WAIT_S) as http, http.stream("POST", harness.url + "/chat/completions",
                                                          json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: {")
        pid = harness.workers()["m"]["pid"]
        os.kill(pid, signal.SIGKILL)
        events = [line for line in lines if line]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "worker_error"
    reply = harness.chat("m", max_tokens=2)
    assert reply.choices[0].finish_reason == "length"
    assert harness.workers()["m"]["pid"] != pid
    assert harness.scheduler.metrics()["crashes"] == {"m": 1}


def test_worker_crash_before_the_answer_is_a_500(start: Callable[..., Harness]) -> None:
    harness = start({"m": {"fake_crash_after": 2}})
    with pytest.raises(openai.InternalServerError) as caught:
        harness.chat("m", max_tokens=5)
    assert caught.value.code == "worker_error"
    assert harness.chat("m", max_tokens=1).choices[0].finish_reason == "length"
