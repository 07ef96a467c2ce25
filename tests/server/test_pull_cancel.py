"""A server-side pull (POST /v1/models) stops with its client and with the server, and stays resumable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hubserver import FakeHub, store_contents, tiny_gguf
from serverproc import free_port, wait_healthy

from runtime.config import Settings
from runtime.store.keys import KeyStore

WAIT_S = 60  # an upper bound for "eventually", never a timing assertion
STALL = 11_000_000  # bytes the hub sends before it hangs


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as server:
        yield server


@pytest.fixture
def server(hub: FakeHub, stacklet_home: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, dict[str, str]]]:
    """A real server pulling from `hub`: (process, root URL, auth headers); its log is home/server.log."""
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    key, _ = KeyStore(Settings.load().paths).create("pull", scope="admin")
    port = free_port()
    with (stacklet_home / "server.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        root = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(root, process)
            yield process, root, {"Authorization": f"Bearer {key}"}
        finally:
            process.terminate()
            process.wait(WAIT_S)


def slow_repo(hub: FakeHub) -> tuple[bytes, str]:
    data = tiny_gguf(extra=os.urandom(STALL + 1_000_000))
    sha = hashlib.sha256(data).hexdigest()
    hub.add_repo("org/Slow-GGUF", {"slow-Q4_K_M.gguf": data})
    hub.state.stall_after[sha] = STALL
    return data, sha


def events(response: httpx.Response) -> list[Any]:
    return [json.loads(line.removeprefix("data: ")) if line != "data: [DONE]" else "[DONE]"
            for line in response.iter_lines() if line.startswith("data: ")]


def test_a_pull_stops_when_its_client_goes_and_the_next_one_resumes(hub: FakeHub, server: Any) -> None:
    _, root, headers = server
    data, sha = slow_repo(hub)
    with httpx.stream("POST", f"{root}/v1/models", json={"source": "org/Slow-GGUF"}, headers=headers,
                      timeout=WAIT_S) as response:
        assert response.status_code == 200
        assert hub.state.stalled.wait(WAIT_S)
    assert hub.state.client_gone.wait(WAIT_S)  # the server closed its download when its client went
    resumed = [e for e in events(httpx.post(f"{root}/v1/models", json={"source": "org/Slow-GGUF"},
                                            headers=headers, timeout=WAIT_S)) if e != "[DONE]"]
    assert resumed[-1]["event"] == "success"
    ranges = [r for _, _, r in hub.requests("GET", "/cdn/")]
    assert len(ranges) == 2 and ranges[0] is None
    offset = int(ranges[1].removeprefix("bytes=").removesuffix("-"))
    progress = [e["bytes"] for e in resumed if e["event"] == "progress"]
    assert 0 < offset <= STALL and progress[0] == offset  # this pull resumed what the first one left
    assert httpx.get(f"{root}/health", timeout=WAIT_S).status_code == 200
    listed = httpx.get(f"{root}/v1/models", headers=headers, timeout=WAIT_S).json()["data"]
    assert [(m["id"], m["size"]) for m in listed] == [("Slow", len(data))]


def test_stopping_the_server_stops_its_pull_and_keeps_the_partial(hub: FakeHub, server: Any,
                                                                  stacklet_home: Path) -> None:
    process, root, headers = server
    _, sha = slow_repo(hub)
    received: list[Any] = []

    def pull() -> None:
        with httpx.stream("POST", f"{root}/v1/models", json={"source": "org/Slow-GGUF"}, headers=headers,
                          timeout=WAIT_S) as response:
            received.extend(events(response))

    client = threading.Thread(target=pull)
    client.start()
    assert hub.state.stalled.wait(WAIT_S)
    process.terminate()
    process.wait(WAIT_S)
    client.join(WAIT_S)
    assert received[-1] == "[DONE]"
    error = received[-2]["error"]
    assert (error["code"], error["type"]) == ("pull_cancelled", "server_error")
    assert "pull again to resume" in error["message"]
    log = (stacklet_home / "server.log").read_text()
    assert "timeout graceful shutdown exceeded" not in log and "Traceback" not in log
    models = Settings.load().paths.models
    partial = f"models--org--Slow-GGUF/blobs/{sha}.incomplete"
    assert partial in store_contents(models)
    assert 0 < (models / partial).stat().st_size <= STALL
