"""End to end: `python -m runtime` with the real scheduler, a diffusion worker process on the random-weight
SD 1.5 checkpoint, and the image URL served back by the server behind its auth."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

from runtime.config import Settings
from runtime.store.keys import KeyStore
from runtime.store.registry import ModelFile, ModelRecord, Registry

MODEL = "sd15-random"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sd15_checkpoint: Path, taesd: Path) -> Iterator[tuple[str, str]]:
    """(root URL, API key) of a running server with the image model registered."""
    home = tmp_path_factory.mktemp("images-e2e")
    env = {**os.environ, "STACKLET_HOME": str(home)}
    paths = Settings.load(environ=env).paths
    files = [ModelFile("model", str(sd15_checkpoint), sd15_checkpoint.stat().st_size),
             ModelFile("taesd", str(taesd), taesd.stat().st_size)]
    Registry(paths).add(ModelRecord(name=MODEL, kind="image", source={"type": "local"}, files=files,
                                    metadata={"family": "sd1", "steps": 1, "cfg_scale": 1.0, "size": "256x256"}))
    key, _ = KeyStore(paths).create("images-e2e")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (home / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "runtime", "--port", str(port)], env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert process.poll() is None, "server exited during start-up"
            try:
                if httpx.get(f"{root}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield root, key
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def test_generate_url_through_the_server_and_fetch_it_with_the_key(server: tuple[str, str]) -> None:
    root, key = server
    client = openai.OpenAI(base_url=root + "/v1-openai", api_key=key, max_retries=0, timeout=600)
    result = client.images.generate(model=MODEL, prompt="a lighthouse", response_format="url", size="256x256")
    url = result.data[0].url
    assert url.startswith(root + "/v1-openai/images/files/") and url.endswith(".png")
    assert httpx.get(url).status_code == 401  # behind the same auth as every route
    fetched = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(fetched.content)).size == (256, 256)


def test_server_rejects_a_bad_size_before_generating(server: tuple[str, str]) -> None:
    root, key = server
    client = openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(model=MODEL, prompt="x", size="300x300")
    assert error.value.param == "size" and "multiples of 64" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(model=MODEL, prompt="x", image=("a.txt", b"not an image", "text/plain"))
    assert error.value.param == "image"
