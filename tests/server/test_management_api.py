"""The management API (/v1/models): list with state, get, load/unload, streamed pull, delete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hubserver import FakeHub, tiny_gguf
from test_server import JSON_PARSE_MESSAGE, StubScheduler, make_client

from runtime.config import Settings
from runtime.store.keys import KeyStore


@pytest.fixture
def scheduler() -> StubScheduler:
    return StubScheduler()


@pytest.fixture
def client(scheduler: StubScheduler) -> Iterator[TestClient]:
    settings = Settings.load()
    key, _ = KeyStore(settings.paths).create("test", scope="admin")
    with make_client(settings, scheduler, key) as test_client:
        yield test_client


@pytest.fixture
def importing(scheduler: StubScheduler, minilm_gguf: Path, tmp_path: Path) -> Iterator[TestClient]:
    """A client of a server whose operator allows local imports from the test models' folder and tmp_path."""
    settings = replace(Settings.load(), import_dirs=(str(minilm_gguf.parent), str(tmp_path)))
    key, _ = KeyStore(settings.paths).create("test", scope="admin")
    with make_client(settings, scheduler, key) as test_client:
        yield test_client


def test_management_list_get_load_unload(client, scheduler):
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    assert {m["state"] for m in listed["data"]} == {"available"}
    loaded = client.post("/v1/models/fake-llm/load", json={"ctx_size": 4096, "n_gpu_layers": "all",
                                                            "keep_alive": "1h"})
    assert loaded.status_code == 200, loaded.text
    body = loaded.json()
    assert body["state"] == "loaded"
    assert body["worker"]["options"] == {"ctx_size": 4096, "n_gpu_layers": "all"}
    assert body["expires_at"] == 1700000000.0
    assert body["meta"]["context_length"] == 4096  # the loaded engine's fact wins over metadata
    assert client.get("/v1/models/fake-llm").json()["state"] == "loaded"
    assert client.post("/v1/models/fake-llm/unload").json() == {"id": "fake-llm", "object": "model",
                                                                "unloaded": True}
    assert client.get("/v1/models/fake-llm").json()["state"] == "available"


def test_management_errors(client):
    bad_option = client.post("/v1/models/fake-llm/load", json={"flash_attn": "sometimes"})
    assert bad_option.status_code == 400
    assert bad_option.json()["error"]["param"] == "flash_attn"
    unknown_option = client.post("/v1/models/fake-llm/load", json={"warp_speed": 9})
    assert unknown_option.json()["error"]["param"] == "warp_speed"
    assert client.post("/v1/models/nope/load").json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/nope").status_code == 404
    assert client.post("/v1/models/fake-llm/load", content=b"{oops").json()["error"]["message"] == JSON_PARSE_MESSAGE


def sse_events(text: str) -> list[dict]:
    data = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


def test_pull_streams_progress_then_the_model(importing, minilm_gguf):
    client = importing
    response = client.post("/v1/models", json={"source": str(minilm_gguf), "name": "minilm", "kind": "embedding"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    kinds = [event["event"] for event in events]
    assert kinds[0] == "resolved"
    assert "progress" in kinds and "registered" in kinds
    assert kinds[-1] == "success"
    model = events[-1]["model"]
    assert (model["id"], model["kind"], model["state"]) == ("minilm", "embedding", "available")
    assert model["size"] == minilm_gguf.stat().st_size
    assert client.get("/v1/models/minilm").json()["id"] == "minilm"
    assert "minilm" in {m["id"] for m in client.get("/v1-openai/models").json()["data"]}


def test_pull_failure_is_an_error_event(importing, tmp_path):
    response = importing.post("/v1/models", json={"source": str(tmp_path / "missing.gguf")})
    events = sse_events(response.text)
    assert events[-1]["error"]["type"] == "server_error"
    assert "No such file" in events[-1]["error"]["message"]


def test_pull_needs_a_source(client):
    response = client.post("/v1/models", json={"name": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "source"


def test_delete_unloads_then_removes(importing, scheduler, minilm_gguf):
    client = importing
    client.post("/v1/models", json={"source": str(minilm_gguf), "name": "minilm", "kind": "embedding"})
    client.post("/v1/models/minilm/load")
    response = client.delete("/v1/models/minilm")
    assert response.status_code == 200
    assert response.json()["deleted"] is True
    assert scheduler.loaded == {}
    assert client.get("/v1/models/minilm").json()["error"]["code"] == "model_not_found"
    assert client.delete("/v1/models/minilm").status_code == 404




@pytest.mark.parametrize("name", ["a/../../b", "x/load", "..", "a..b", "", "-x", ".hidden", "mod\u00e8le", "a b",
                                  "x" * 129])
def test_pull_refuses_an_unsafe_name_before_anything_starts(client, name):
    response = client.post("/v1/models", json={"source": "org/repo", "name": name})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "name" and "[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}" in error["message"]


@pytest.fixture
def fit_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A GGUF repo in three quants, the files growing with the quant."""
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.add_repo("org/Fit-GGUF", {f"fit-{q}.gguf": tiny_gguf(extra=b"x" * (mib << 20))
                                         for q, mib in (("Q2_K", 1), ("Q4_K_M", 2), ("Q8_0", 3))})
        yield server


def test_pull_takes_a_quant_policy_and_a_dry_run(client, fit_hub):
    plan = client.post("/v1/models", json={"source": "org/Fit-GGUF", "quant": "largest", "dry_run": True})
    assert plan.status_code == 200 and plan.headers["content-type"] == "application/json"
    assert plan.json()["choice"]["quant"] == "Q8_0" and [f["path"] for f in plan.json()["files"]] == ["fit-Q8_0.gguf"]
    # It fetched one GGUF header to choose, and nothing else.
    assert all(r.startswith("bytes=0-") for _, _, r in fit_hub.requests("GET", "/cdn/"))
    assert "Fit" not in {m["id"] for m in client.get("/v1/models").json()["data"]}
    with client.stream("POST", "/v1/models", json={"source": "org/Fit-GGUF", "quant": "smallest"}) as response:
        last = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")][-1]
    assert last["event"] == "success" and last["model"]["files"][0]["path"].endswith("fit-Q2_K.gguf")


def test_pull_refuses_an_unknown_policy_and_a_local_dry_run(importing, minilm_gguf):
    refused = importing.post("/v1/models", json={"source": "org/Fit-GGUF", "quant": "biggest"})
    assert refused.status_code == 400 and "fit, smallest, largest" in refused.json()["error"]["message"]
    local = importing.post("/v1/models", json={"source": str(minilm_gguf), "dry_run": True})
    assert local.status_code == 400 and local.json()["error"]["param"] == "dry_run"
