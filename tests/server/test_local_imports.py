"""Local imports over the management API: refused unless the path resolves inside the operator's
import_dirs, with one message that says nothing about the server's disk; `stacklet pull PATH` (the
store, in the CLI's own process) is not limited. Against the stub scheduler: this is the server's policy."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_management_api import sse_events
from test_server import StubScheduler, make_client

from runtime.config import Settings
from runtime.server.imports import REFUSED_MESSAGE
from runtime.store.keys import ADMIN, KeyStore
from runtime.store.store import Store


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    """An allowed folder holding links that lead out of it, and a link to a test model in an allowed folder."""
    root = tmp_path / "allowed"
    (root / "sub").mkdir(parents=True)
    (root / "etc").symlink_to("/etc")
    (root / "passwd.gguf").symlink_to("/etc/passwd")
    (root / "sub" / "hostname.gguf").symlink_to("/etc/hostname")
    (root / "loop").symlink_to(root / "loop")
    return root


def server(settings: Settings, import_dirs: tuple[str, ...] = ()) -> TestClient:
    key, _ = KeyStore(settings.paths).create("ops", scope=ADMIN)
    return make_client(replace(settings, import_dirs=import_dirs), StubScheduler(), key)


@pytest.fixture
def closed() -> Iterator[TestClient]:
    with server(Settings.load()) as client:
        yield client


@pytest.fixture
def open_to(allowed: Path, minilm_gguf: Path) -> Iterator[TestClient]:
    with server(Settings.load(), (str(allowed), str(minilm_gguf.parent))) as client:
        yield client


def assert_refused(response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] == {"message": REFUSED_MESSAGE, "type": "invalid_request_error",
                                        "param": "source", "code": "local_import_not_allowed"}
    models = Settings.load().paths.models
    assert not models.exists() or not any(models.rglob("*"))  # nothing hashed, linked or copied


@pytest.mark.parametrize("source", ["/etc", "/etc/shadow", "/etc/passwd", "../../etc", "/usr", "/proc/self/environ",
                                    "~/.ssh/id_rsa", "./model.gguf", "model.gguf", "C:\\Windows\\win.ini", ".."])
def test_without_import_dirs_no_path_is_imported(closed, source):
    assert_refused(closed.post("/v1/models", json={"source": source}))


def test_without_import_dirs_even_a_real_model_is_refused(closed, minilm_gguf):
    assert_refused(closed.post("/v1/models", json={"source": str(minilm_gguf), "name": "minilm"}))
    assert closed.get("/v1/models/minilm").status_code == 404


@pytest.mark.parametrize("inside", ["../../../etc/passwd", "etc", "etc/passwd", "passwd.gguf", "sub",
                                    "sub/hostname.gguf", "loop"])
def test_no_escape_from_the_allowed_folder(open_to, allowed, inside):
    assert_refused(open_to.post("/v1/models", json={"source": f"{allowed}/{inside}"}))


def test_a_file_is_refused_when_a_companion_it_brings_along_leads_out(open_to, allowed):
    (allowed / "voice.onnx").write_bytes(b"onnx")
    (allowed / "voice.onnx.json").symlink_to("/etc/passwd")  # a Piper voice's config comes along
    assert_refused(open_to.post("/v1/models", json={"source": str(allowed / "voice.onnx")}))


def test_an_allowed_path_imports(tmp_path, minilm_gguf):
    models = tmp_path / "models"
    models.mkdir()
    (models / "minilm.gguf").symlink_to(minilm_gguf)
    with server(Settings.load(), (str(models), str(minilm_gguf.parent))) as client:
        events = sse_events(client.post("/v1/models", json={"source": str(models / "minilm.gguf"),
                                                            "kind": "embedding"}).text)
    assert events[-1]["event"] == "success" and events[-1]["model"]["id"] == "all-MiniLM-L6-v2"
    assert events[-1]["model"]["source"]["path"] == str(minilm_gguf)  # what was imported, links resolved


def test_a_repo_name_is_never_read_from_the_server_s_working_directory(closed, tmp_path, monkeypatch):
    (tmp_path / "owner" / "repo").mkdir(parents=True)
    (tmp_path / "owner" / "repo" / "secret.txt").write_text("key")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    events = sse_events(closed.post("/v1/models", json={"source": "owner/repo"}).text)
    assert "HF_HUB_OFFLINE" in events[-1]["error"]["message"]  # a hub pull, not a local import
    assert "secret" not in json.dumps(events)
    assert {m["source"]["type"] for m in closed.get("/v1/models").json()["data"]} == {"fake"}


def test_the_cli_imports_any_path_on_its_own_machine(tmp_path, minilm_gguf):
    """`stacklet pull PATH` goes through the store in its own process, so import_dirs does not apply to it."""
    os.environ["STACKLET_IMPORT_DIRS"] = str(tmp_path / "elsewhere")
    try:
        assert Settings.load().import_dirs == (str(tmp_path / "elsewhere"),)
        store = Store(Settings.load().paths)
        assert store.pull(str(minilm_gguf), name="minilm", kind="embedding").name == "minilm"
        store.close()
    finally:
        del os.environ["STACKLET_IMPORT_DIRS"]
