"""Image plumbing on the fake engine: `stacklet test images` / `image-edit`, response-format defaults and
cancellation when the client goes away."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from apps import images_app
from typer.testing import CliRunner

from cli.app import app as cli_app
from runtime.config import Settings
from runtime.engines.fake import FakeEngine
from runtime.spec import ModelSpec


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(ModelSpec("fake-image", "image", "fake", {}, metadata={"fake_delay": 0.2}))


@pytest.fixture
def base_url(stacklet_home: Path, engine: FakeEngine, live_server: Any) -> str:
    return live_server(images_app(engine, Settings.load({"auth": False}))) + "/v1"


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
    assert {Path(f).name for check in report["checks"] for f in check["extra"]["files"]} == saved


def test_smoke_command_exits_1_when_a_check_fails(base_url: str, tmp_path: Path) -> None:
    # The server rejects the size, so every check fails.
    result = CliRunner().invoke(cli_app, ["test", "images", "fake-image", "--base-url", base_url,
                                          "--size", "32x48x", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert not report["ok"]


def test_dall_e_names_get_urls_by_default_and_others_b64(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    assert client.images.generate(model="dall-e-2", prompt="x").data[0].url.startswith(base_url + "/images/files/")
    assert client.images.generate(model="fake-image", prompt="x").data[0].b64_json


def test_closing_a_stream_stops_generating_between_images(base_url: str, engine: FakeEngine) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    stream = client.images.generate(model="fake-image", prompt="x", n=10, stream=True)
    first = next(iter(stream))
    assert first.type == "image_generation.completed"
    stream.close()
    assert settled_count(engine) < 10


def test_a_disconnected_request_stops_generating_between_images(base_url: str, engine: FakeEngine) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(base_url + "/images/generations", json={"model": "fake-image", "prompt": "x", "n": 10},
                   timeout=httpx.Timeout(5, read=0.5))
    assert settled_count(engine) < 10


def settled_count(engine: FakeEngine) -> int:
    """How many images the fake made, once that stops changing (it makes one per 0.2 s until cancelled)."""
    last = -1
    while engine._generated != last:
        last = engine._generated
        time.sleep(1.0)
    return last
