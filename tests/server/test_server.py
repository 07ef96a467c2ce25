"""The server's own plumbing (routing, errors, auth, CORS, headers, limits) against a stub scheduler.

The stub stands in for the Scheduler contract so these tests pin down what the server does before
it forwards; end-to-end behaviour with real workers is in e2e/test_server_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import h11
import openai
import pytest
from fastapi.testclient import TestClient

from runtime.config import Settings
from runtime.errors import ConfigError
from runtime.http.errors import JSON_PARSE_MESSAGE
from runtime.server.app import create_app
from runtime.server.auth import check_bind
from runtime.store.keys import KeyStore
from runtime.store.registry import ModelRecord, Registry

TEST_HOST = "testserver"  # the Host of TestClient's requests, allowed like a name set in allowed_hosts
FAKE_MODELS = {"fake-llm": "llm", "fake-embed": "embedding", "fake-image": "image", "fake-tts": "speech",
               "fake-whisper": "transcription"}


class EchoWorker:
    """A worker stand-in on a Unix socket, in its own thread: records what the server relays to it in
    `calls[-1]` and answers {"id": "stub", "object": "stub", "model", "path"}."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls = calls
        self.socket_path = Path(tempfile.mkdtemp(prefix="echo-")) / "worker.sock"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_unix_server(self._answer, str(self.socket_path)))
        ready.set()
        self.loop.run_forever()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, request, body = h11.Connection(h11.SERVER), None, b""
        while not isinstance(event := conn.next_event(), h11.EndOfMessage):
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
        assert request is not None
        headers = {key.decode(): value.decode() for key, value in request.headers}
        path = request.target.decode()
        self.calls[-1].update(path=path, body=body, base_url=headers.get("x-stacklet-base-url"),
                              content_type=headers.get("content-type"))
        answer = json.dumps({"id": "stub", "object": "stub", "model": self.calls[-1]["model"], "path": path}).encode()
        writer.write(conn.send(h11.Response(status_code=200, headers=[("content-type", "application/json"),
                                                                      ("content-length", str(len(answer)))]))
                     + conn.send(h11.Data(data=answer)) + conn.send(h11.EndOfMessage()))
        await writer.drain()
        writer.close()


class StubLease:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.released: bool | None = None

    async def acquire(self) -> Path:
        return self.socket_path

    def release(self, ok: bool) -> None:
        self.released = ok


class StubScheduler:
    """The Scheduler contract, recording what the server hands it; leases lead to an EchoWorker."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.loaded: dict[str, dict[str, Any]] = {}
        self.running = False
        self.worker = EchoWorker(self.calls)

    async def start(self) -> None:
        self.running = True

    async def shutdown(self) -> None:
        self.running = False

    def lease(self, model: str, keep_alive: float | None = None) -> StubLease:
        self.calls.append({"model": model, "keep_alive": keep_alive})
        return StubLease(self.worker.socket_path)

    async def load(self, model: str, options: Any = None, keep_alive: float | None = None) -> dict[str, Any]:
        self.loaded[model] = {"model": model, "state": "ready", "pid": 4242, "queue_depth": 2,
                              "expires_at": 1700000000.0, "options": options.as_dict() if options else {},
                              "engine": {"context_length": 4096}}
        return self.loaded[model]

    async def unload(self, model: str) -> bool:
        return self.loaded.pop(model, None) is not None

    def status(self) -> list[dict[str, Any]]:
        return list(self.loaded.values())

    def metrics(self) -> dict[str, Any]:
        return {"tokens": {"fake-llm": {"prompt": 3, "completion": 5}}, "crashes": {"fake-llm": 2}}


def register_fakes(settings: Settings) -> Registry:
    registry = Registry(settings.paths)
    for name, kind in FAKE_MODELS.items():
        registry.add(ModelRecord(name=name, kind=kind, source={"type": "fake"}, engine="fake",
                                 metadata={"context_length": 2048}), replace=True)
    return registry


@pytest.fixture
def settings() -> Settings:
    return Settings.load()


@pytest.fixture
def scheduler() -> StubScheduler:
    return StubScheduler()


@pytest.fixture
def api_key(settings: Settings) -> str:
    store = KeyStore(settings.paths)
    key, _ = store.create("test", scope="admin")
    store.close()
    return key


def make_client(settings: Settings, scheduler: StubScheduler, api_key: str | None = None) -> TestClient:
    settings = replace(settings, allowed_hosts=(TEST_HOST,))
    app = create_app(settings, scheduler=scheduler, registry=register_fakes(settings))
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return TestClient(app, headers=headers)


@pytest.fixture
def client(settings: Settings, scheduler: StubScheduler, api_key: str) -> Iterator[TestClient]:
    with make_client(settings, scheduler, api_key) as test_client:
        yield test_client


def assert_error(response: Any, status: int, message: str, *, param: str | None = None,
                 code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"message": message, "type": "invalid_request_error",
                                         "param": param, "code": code}}


@pytest.mark.parametrize("prefix", ["/v1-openai", "/v1"])
def test_both_prefixes_forward_the_raw_body_to_the_canonical_path(client, scheduler, prefix):
    body = b'{"model": "fake-llm",   "messages": [{"role": "user", "content": "hi"}], "keep_alive": "5m"}'
    response = client.post(f"{prefix}/chat/completions", content=body,
                           headers={"content-type": "application/json"})
    assert response.status_code == 200
    assert response.json()["path"] == "/v1/chat/completions"
    assert scheduler.calls == [{"model": "fake-llm", "path": "/v1/chat/completions", "body": body,
                                "keep_alive": 300.0, "base_url": f"http://testserver{prefix}",
                                "content_type": "application/json"}]


def test_scheduler_starts_and_stops_with_the_app(settings, scheduler):
    with make_client(settings, scheduler):
        assert scheduler.running
    assert not scheduler.running


def test_malformed_json(client):
    response = client.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert_error(response, 400, JSON_PARSE_MESSAGE)


def test_missing_field_names_the_param(client):
    response = client.post("/v1/embeddings", json={"input": "x"})
    assert_error(response, 400, "Missing required parameter: 'model'.", param="model",
                 code="missing_required_parameter")


def test_wrong_type_is_400_invalid_type(client):
    response = client.post("/v1/embeddings", json={"model": 123, "input": "x"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", "model", "invalid_type")


def test_unknown_model_is_404_model_not_found(client):
    response = client.post("/v1-openai/embeddings", json={"model": "nope", "input": "x"})
    assert_error(response, 404, "The model `nope` does not exist or you do not have access to it.",
                 code="model_not_found")


def test_model_without_the_capability_is_400(client, scheduler):
    messages = [{"role": "user", "content": "x"}]
    response = client.post("/v1/chat/completions", json={"model": "fake-tts", "messages": messages})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"
    assert scheduler.calls == []


def test_unknown_url(client):
    assert_error(client.post("/v1/foo", json={}), 404, "Invalid URL (POST /v1/foo)")
    assert_error(client.get("/v1/chat/completions"), 405, "Invalid URL (GET /v1/chat/completions)")


def test_missing_and_wrong_keys_are_401(settings, scheduler, api_key):
    with make_client(settings, scheduler) as client:
        missing = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] is None
        assert missing.json()["error"]["message"].startswith("You didn't provide an API key.")
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer sk-abcdefghijklmnopcdef"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert wrong.json()["error"]["message"].startswith("Incorrect API key provided: sk-ab***cdef.")
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {api_key}"}).status_code == 200
    assert scheduler.calls == []


def test_expired_and_revoked_keys_are_rejected(settings, scheduler):
    store = KeyStore(settings.paths)
    key, _ = store.create("short")
    with make_client(settings, scheduler, key) as client:
        assert client.get("/v1-openai/models").status_code == 200
        store.revoke("short")
        assert client.get("/v1-openai/models").json()["error"]["code"] == "invalid_api_key"
    store.close()


def test_auth_disabled_accepts_any_or_no_key(settings, scheduler):
    open_settings = replace(settings, auth=False)
    with make_client(open_settings, scheduler) as client:
        assert client.get("/v1-openai/models").status_code == 200
        assert client.get("/v1-openai/models", headers={"Authorization": "Bearer EMPTY"}).status_code == 200


def test_no_auth_refuses_a_public_bind(settings):
    check_bind(replace(settings, auth=False, host="127.0.0.1"))
    check_bind(replace(settings, host="0.0.0.0"))
    with pytest.raises(ConfigError):
        check_bind(replace(settings, auth=False, host="0.0.0.0"))
    with pytest.raises(ConfigError):
        create_app(replace(settings, auth=False, host="192.168.1.5"), scheduler=StubScheduler())


def test_body_over_the_limit_is_413(settings, scheduler, api_key):
    small = replace(settings, max_body_bytes=1000)
    with make_client(small, scheduler, api_key) as client:
        declared = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x" * 2000})
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
            yield b'{"model": "fake-embed", "input": "'
            yield b"x" * 2000
            yield b'"}'

        streamed = client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["error"]["message"].startswith("Maximum content size limit (1000) exceeded")
    assert scheduler.calls == []


def test_strict_mode_rejects_unknown_fields(settings, scheduler, api_key):
    body = {"model": "fake-embed", "input": "x", "foo": 1, "keep_alive": 10}
    with make_client(replace(settings, strict_params=True), scheduler, api_key) as client:
        assert_error(client.post("/v1/embeddings", json=body), 400, "Unrecognized request argument supplied: foo")
    with make_client(settings, scheduler, api_key) as client:
        assert client.post("/v1/embeddings", json=body).status_code == 200


def test_invalid_keep_alive_is_400(client):
    response = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x", "keep_alive": "soon"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "keep_alive"


def test_cors_preflight_allows_stainless_headers_without_a_key(settings, scheduler):
    asked = "authorization, content-type, x-stainless-os, x-stainless-retry-count, x-stainless-timeout"
    with make_client(settings, scheduler) as client:
        response = client.options("/v1/chat/completions", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert set(asked.split(", ")) <= set(response.headers["access-control-allow-headers"].lower().split(", "))
    assert response.headers["x-request-id"].startswith("req_")


def test_every_response_has_a_request_id_and_openai_headers(client):
    for response in (client.get("/health"), client.post("/v1/foo"), client.get("/v1/models"),
                     client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})):
        assert response.headers["x-request-id"].startswith("req_")
        assert response.headers["openai-version"] == "2020-10-01"
        assert int(response.headers["openai-processing-ms"]) >= 0
    assert client.get("/health").headers["x-request-id"] != client.get("/health").headers["x-request-id"]


def test_health_needs_no_key(settings, scheduler):
    with make_client(settings, scheduler) as client:
        body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["models_loaded"] == 0
    assert body["version"]


def test_metrics_prometheus_text(client):
    client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})
    client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    client.post("/v1/models/fake-llm/load", json={})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    assert 'stacklet_requests_total{method="POST",route="/v1/embeddings",status="200"} 1' in text
    assert 'stacklet_requests_total{method="POST",route="/v1/embeddings",status="404"} 1' in text
    assert 'stacklet_request_duration_seconds_bucket{route="/v1/embeddings",le="+Inf"} 2' in text
    assert 'stacklet_request_duration_seconds_count{route="/v1/embeddings"} 2' in text
    assert 'stacklet_tokens_total{model="fake-llm",type="completion"} 5' in text
    assert 'stacklet_queue_depth{model="fake-llm"} 2' in text
    assert "stacklet_models_loaded 1" in text
    assert 'stacklet_worker_crashes_total{model="fake-llm"} 2' in text
    for line in text.splitlines():  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_multipart_model_lookup(client, scheduler):
    files = {"file": ("a.wav", b"RIFF....WAVE", "audio/wav")}
    response = client.post("/v1/audio/transcriptions", data={"model": "fake-whisper", "stream": "false"},
                           files=files)
    assert response.status_code == 200
    assert scheduler.calls[0]["model"] == "fake-whisper"
    assert b"RIFF....WAVE" in scheduler.calls[0]["body"]
    missing = client.post("/v1/audio/transcriptions", data={"model": "nope"}, files=files)
    assert missing.json()["error"]["code"] == "model_not_found"


def test_official_client_sees_openai_behaviour(client, api_key):
    for base_url in ("http://testserver/v1-openai", "http://testserver/v1"):
        oai = openai.OpenAI(base_url=base_url, api_key=api_key, http_client=client, max_retries=0)
        assert {m.id for m in oai.models.list()} == set(FAKE_MODELS)
        with pytest.raises(openai.NotFoundError) as missing:
            oai.embeddings.create(model="nope", input="x")
        assert missing.value.code == "model_not_found"
        assert missing.value.request_id.startswith("req_")
    bad = openai.OpenAI(base_url="http://testserver/v1", api_key="sk-wrong-key-123456", http_client=client,
                        max_retries=0)
    with pytest.raises(openai.AuthenticationError) as wrong:
        bad.models.list()
    assert wrong.value.code == "invalid_api_key"


def test_openai_models_list_and_retrieve(client):
    listed = client.get("/v1-openai/models").json()
    assert listed["object"] == "list"
    llm = next(m for m in listed["data"] if m["id"] == "fake-llm")
    assert set(llm) == {"id", "object", "created", "owned_by", "meta"}
    assert llm["meta"] == {"kind": "llm",
                           "capabilities": ["chat", "completions", "detokenize", "embeddings", "tokenize"],
                           "apis": ["/chat/completions", "/completions", "/embeddings", "/tokenize", "/detokenize",
                                    "/responses", "/messages"],
                           "context_length": 2048, "token_ids": "model"}
    assert client.get("/v1-openai/models/fake-tts").json()["meta"]["capabilities"] == ["speech"]
    assert client.get("/v1-openai/models/nope").json()["error"]["code"] == "model_not_found"


def test_openapi_needs_a_key_and_documents_no_422(settings, scheduler, client):
    with make_client(settings, scheduler) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/docs").status_code == 404
    document = client.get("/openapi.json").json()
    statuses = {status for path in document["paths"].values() for op in path.values() for status in op["responses"]}
    assert "422" not in statuses
    assert {"400", "401", "404", "413", "503"} <= statuses
    assert json.dumps(document)  # serialisable as served


def test_unexpected_failure_is_a_500_envelope_without_internals(client, scheduler):
    def broken(*_: Any, **__: Any) -> StubLease:
        raise RuntimeError("secret internals")

    scheduler.lease = broken
    response = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert "secret" not in response.text
    assert response.headers["x-request-id"].startswith("req_")


def test_unknown_urls_share_one_metrics_label(client):
    client.get("/nope/1")
    client.get("/nope/2")
    assert 'stacklet_requests_total{method="GET",route="unmatched",status="404"} 2' in client.get("/metrics").text


def test_a_json_body_sent_as_a_form_type_is_still_json(client, scheduler):
    body = b'{"model": "fake-embed", "input": "x"}'  # what `curl -d` sends, labelled x-www-form-urlencoded
    response = client.post("/v1/embeddings", content=body,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200
    assert scheduler.calls[0]["content_type"] == "application/json"
