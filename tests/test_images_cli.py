"""`stacklet test images` / `image-edit` plumbing: the CLI against the image worker routes on the fake engine."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from typer.testing import CliRunner

from cli.app import app as cli_app
from runtime.config import Settings
from runtime.engines.base import ModelSpec
from runtime.engines.fake import FakeEngine
from runtime.server.errors import install_error_handlers
from runtime.server.routes import files
from runtime.worker import images


@pytest.fixture
def base_url(stacklet_home: Path) -> Iterator[str]:
    settings = Settings.load({"auth": False})
    app = FastAPI()
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(images.create_router(FakeEngine(ModelSpec("fake-image", "image", "fake", {}))))
    app.include_router(files.create_router(settings))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=60)


@pytest.mark.parametrize(("command", "saved"), [
    ("images", {"generate-0.png", "generate-1.png", "url-0.png"}),
    ("image-edit", {"edit-0.png", "inpaint-0.png"}),
])
def test_smoke_commands_pass_and_save_the_images(base_url: str, tmp_path: Path, command: str,
                                                 saved: set[str]) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli_app, ["test", command, "fake-image", "--base-url", base_url, "--size", "64x64",
                                          "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["ok"] and all(check["ok"] for check in report["checks"])
    assert {path.name for path in out.iterdir()} == saved
    assert str(out) in report["checks"][0]["detail"]


def test_smoke_command_exits_1_when_a_check_fails(base_url: str, tmp_path: Path) -> None:
    # The server rejects the size, so every check fails.
    result = CliRunner().invoke(cli_app, ["test", "images", "fake-image", "--base-url", base_url,
                                          "--size", "32x48x", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["ok"]
