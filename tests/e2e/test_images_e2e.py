"""End to end: `python -m runtime` with the real scheduler, a diffusion worker process on the random-weight
SD 1.5 checkpoint, and the image URL served back by the server behind its auth."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image
from serverproc import local_record, server_process

MODEL = "sd15-random"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sd15_checkpoint: Path, taesd: Path) -> Iterator[tuple[str, str]]:
    """(root URL, API key) of a running server with the image model registered."""
    record = local_record(MODEL, "image", {"model": sd15_checkpoint, "taesd": taesd},
                          metadata={"family": "sd1", "steps": 1, "cfg_scale": 1.0, "size": "256x256"})
    with server_process(tmp_path_factory.mktemp("images-e2e"), [record]) as running:
        yield running


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
