"""What a web page can make the server do: the Host check (DNS rebinding) and cross-origin requests
(a foreign page must not delete models through a --no-auth server)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_server import StubScheduler, register_fakes

from runtime.config import Settings
from runtime.server.app import create_app
from runtime.server.middleware import host_name
from runtime.store.keys import KeyStore

FOREIGN = "http://evil.example"
PREFLIGHT = {"Origin": FOREIGN, "Access-Control-Request-Method": "DELETE"}


def client_for(settings: Settings, base_url: str = "http://127.0.0.1:8080", **headers: str) -> TestClient:
    app = create_app(settings, scheduler=StubScheduler(), registry=register_fakes(settings))
    return TestClient(app, base_url=base_url, headers=headers)


@pytest.fixture
def open_server() -> Iterator[TestClient]:
    """A --no-auth server on loopback, the setup a web page can reach."""
    with client_for(replace(Settings.load(), auth=False)) as client:
        yield client


@pytest.fixture
def key() -> str:
    key, _ = KeyStore(Settings.load().paths).create("test", scope="admin")
    return key


def assert_refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", code)
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.nip.io:8080", "[::2]:8080"])
def test_a_foreign_host_header_is_refused(open_server, host):
    response = open_server.get("/v1/models", headers={"Host": host})
    assert_refused(response, 400, "invalid_host")
    assert "allowed_hosts" in response.json()["error"]["message"]
    assert open_server.delete("/v1/models/fake-llm", headers={"Host": host}).status_code == 400
    assert open_server.get("/v1/models/fake-llm").status_code == 200  # still there


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.1"])
def test_loopback_names_are_served(open_server, host):
    assert open_server.get("/health", headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_wildcard_binds(key):
    settings = replace(Settings.load(), allowed_hosts=("box.lan",))
    with client_for(settings) as client:
        assert client.get("/health", headers={"Host": "box.lan:8080"}).status_code == 200
        assert client.get("/health", headers={"Host": "other.lan"}).status_code == 400
    with client_for(replace(Settings.load(), host="192.168.1.5")) as client:
        assert client.get("/health", headers={"Host": "192.168.1.5:8080"}).status_code == 200
        assert client.get("/health", headers={"Host": "localhost:8080"}).status_code == 400
    with client_for(replace(Settings.load(), host="0.0.0.0")) as client:  # every address; auth is required
        assert client.get("/health", headers={"Host": "anything.example"}).status_code == 200


def test_host_names():
    assert [host_name(h) for h in ("[::1]:8080", "Example.COM:80", "localhost", "[fe80::1]")] == [
        "::1", "example.com", "localhost", "fe80::1"]


def test_a_foreign_page_cannot_delete_or_pull_through_a_no_auth_server(open_server):
    assert_refused(open_server.delete("/v1/models/fake-llm", headers={"Origin": FOREIGN}), 403, "origin_not_allowed")
    # A "simple" request (no preflight in the browser) is refused too, not just left unreadable.
    pull = open_server.post("/v1/models", content=b'{"source": "x/y"}',
                            headers={"Origin": FOREIGN, "Content-Type": "text/plain"})
    assert_refused(pull, 403, "origin_not_allowed")
    assert_refused(open_server.options("/v1/models/fake-llm", headers=PREFLIGHT), 403, "origin_not_allowed")
    # With --no-auth, `*` does not let foreign pages in at all, not even the OpenAI routes.
    chat = open_server.post("/v1/chat/completions", json={"model": "fake-llm", "messages": []},
                            headers={"Origin": FOREIGN})
    assert_refused(chat, 403, "origin_not_allowed")
    assert open_server.get("/v1/models/fake-llm").status_code == 200


def test_a_page_served_by_the_server_itself_keeps_working(open_server):
    same = {"Origin": "http://127.0.0.1:8080"}
    assert open_server.post("/v1/models/fake-llm/unload", headers=same).status_code == 200
    assert open_server.post("/v1/chat/completions", json={"model": "fake-llm", "messages": [
        {"role": "user", "content": "hi"}]}, headers=same).status_code == 200
    assert open_server.delete("/v1/models/fake-llm", headers=same).status_code == 200


def test_management_preflight_needs_a_key_header(key):
    with client_for(Settings.load()) as client:
        refused = client.options("/v1/models/fake-llm", headers=PREFLIGHT)
        assert_refused(refused, 403, "origin_not_allowed")
        assert "API key" in refused.json()["error"]["message"]
        allowed = client.options("/v1/models/fake-llm", headers={
            **PREFLIGHT, "Access-Control-Request-Headers": "authorization, content-type"})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "*"
        assert_refused(client.delete("/v1/models/fake-llm", headers={"Origin": FOREIGN}), 403, "origin_not_allowed")
        deleted = client.delete("/v1/models/fake-llm", headers={"Origin": FOREIGN, "Authorization": f"Bearer {key}"})
        assert deleted.status_code == 200, deleted.text
        assert deleted.headers["access-control-allow-origin"] == "*"


def test_a_listed_origin_is_the_only_one_let_in_without_auth():
    settings = replace(Settings.load(), auth=False, cors_origins=("http://app.example",))
    with client_for(settings) as client:
        listed = client.options("/v1/chat/completions", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST"})
        assert listed.headers["access-control-allow-origin"] == "http://app.example"
        assert client.get("/v1/models", headers={"Origin": FOREIGN}).status_code == 403
