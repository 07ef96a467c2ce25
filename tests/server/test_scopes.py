"""Key scopes: inference keys serve the OpenAI routes and read the model list, only admin keys manage models.
Against the stub scheduler (plumbing: what the server lets through before anything reaches a worker)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import openai
import pytest
from fastapi.testclient import TestClient
from test_server import StubScheduler, make_client

from runtime.config import Settings
from runtime.store.keys import ADMIN, KeyStore

MUTATIONS = [("POST", "/v1/models", {"source": "org/repo"}), ("POST", "/v1/models/fake-llm/load", {}),
             ("POST", "/v1/models/fake-llm/unload", None), ("PATCH", "/v1/models/fake-llm", {"ctx_size": 1024}),
             ("DELETE", "/v1/models/fake-llm", None)]
READS = ["/v1/models", "/v1/models/fake-llm", "/v1-openai/models", "/v1-openai/models/fake-llm"]


@pytest.fixture
def scheduler() -> StubScheduler:
    return StubScheduler()


@pytest.fixture
def settings() -> Settings:
    return Settings.load()


@pytest.fixture
def inference(settings: Settings, scheduler: StubScheduler) -> Iterator[TestClient]:
    key, _ = KeyStore(settings.paths).create("app")
    with make_client(settings, scheduler, key) as client:
        yield client


@pytest.fixture
def admin(settings: Settings, scheduler: StubScheduler) -> Iterator[TestClient]:
    key, _ = KeyStore(settings.paths).create("ops", scope=ADMIN)
    with make_client(settings, scheduler, key) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS)
def test_an_inference_key_cannot_manage_models(inference, scheduler, method, path, body):
    scheduler.loaded["fake-llm"] = {"model": "fake-llm", "state": "ready"}
    response = inference.request(method, path, json=body)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "insufficient_scope", None)
    assert "Missing scope: admin" in error["message"] and "'app' is an inference key" in error["message"]
    assert "stacklet keys create --admin" in error["message"]
    assert scheduler.loaded == {"fake-llm": {"model": "fake-llm", "state": "ready"}}  # nothing happened
    assert inference.get("/v1/models/fake-llm").json()["options"] == {}


@pytest.mark.parametrize("path", READS)
def test_an_inference_key_lists_and_gets_models(inference, path):
    assert inference.get(path).status_code == 200


def official_client(client: TestClient, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url="http://testserver" + prefix, api_key=client.headers["authorization"][7:],
                         http_client=client, max_retries=0)


def test_an_inference_key_serves_the_openai_routes_through_the_official_client(inference):
    for prefix in ("/v1", "/v1-openai"):
        oai = official_client(inference, prefix)
        assert oai.embeddings.with_raw_response.create(model="fake-embed", input="hi").status_code == 200
        assert "fake-llm" in {m.id for m in oai.models.list()}


def test_the_official_client_sees_a_permission_error(inference):
    oai = official_client(inference)
    with pytest.raises(openai.PermissionDeniedError, match="stacklet keys create --admin"):
        oai.models.delete("fake-llm")


@pytest.mark.parametrize(("method", "path", "body"), MUTATIONS[1:])
def test_an_admin_key_manages_models(admin, method, path, body):
    assert admin.request(method, path, json=body).status_code == 200


def test_no_key_is_401_before_any_scope_check(settings, scheduler):
    with make_client(settings, scheduler) as client:
        assert client.delete("/v1/models/fake-llm").status_code == 401


def test_without_auth_every_route_is_open(settings, scheduler):
    with make_client(replace(settings, auth=False), scheduler) as client:
        assert client.post("/v1/models/fake-llm/load").status_code == 200


def test_the_openapi_document_says_which_routes_need_an_admin_key(admin):
    paths = admin.get("/openapi.json").json()["paths"]
    assert "403" in paths["/v1/models/{model_id}"]["delete"]["responses"]
    assert "403" in paths["/v1/models"]["post"]["responses"]
    assert "403" not in paths["/v1/models"]["get"]["responses"]
