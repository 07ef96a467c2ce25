"""Images on the real stable-diffusion.cpp engine (random-weight SD 1.5 + TAESD, 256x256, 1-2 steps).

The engine loads once for the module behind a real uvicorn on a loopback port; the official openai
client drives it. Each generation costs seconds, so the tests share requests where they can.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from apps import images_app
from fastapi import FastAPI
from PIL import Image, ImageDraw

from runtime.config import Settings
from runtime.engines.base import ImageParams
from runtime.engines.diffusion import DiffusionEngine
from runtime.errors import EngineError
from runtime.http.errors import install_error_handlers
from runtime.http.files import ImageFiles
from runtime.server.routes import files
from runtime.spec import ModelSpec
from runtime.worker import images

MODEL = "sd15-test"
SIZE = 256


@pytest.fixture(scope="module")
def served(sd15_checkpoint: Path, taesd: Path, tmp_path_factory: pytest.TempPathFactory,
           live_server: Any) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("images-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKLET_HOME", str(home))
        settings = Settings.load({"auth": False})
        spec = ModelSpec(MODEL, "image", "diffusion", {"model": sd15_checkpoint, "taesd": taesd},
                         metadata={"steps": 1, "cfg_scale": 1.0, "size": f"{SIZE}x{SIZE}"})
        engine = DiffusionEngine(spec)
        url = live_server(images_app(engine, settings)) + "/v1"
    yield {"url": url, "engine": engine, "settings": settings,
           "client": openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)}
    engine.close()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def noise(size: int) -> bytes:
    return png(Image.frombytes("RGB", (size, size), os.urandom(size * size * 3)))


def picture(size: int = SIZE) -> bytes:
    image = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    ImageDraw.Draw(image).rectangle((size // 4, size // 4, size // 2, size // 2), fill=(20, 40, 160))
    return png(image)


def mask(size: int = SIZE, mode: str = "RGBA") -> bytes:
    image = Image.new(mode, (size, size), 0 if mode == "RGB" else (0, 0, 0, 255))
    if mode == "RGBA":
        ImageDraw.Draw(image).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=(0, 0, 0, 0))
    return png(image)


# The engine on its own (no generation)


def test_family_from_tensor_names_and_defaults_from_metadata(served: dict[str, Any]) -> None:
    engine = served["engine"]
    info = engine.info()
    assert info["family"] == "sd1"  # the spec's metadata has no family: read from the checkpoint
    assert info["default_size"] == f"{SIZE}x{SIZE}"
    resolved = engine.resolve(ImageParams(prompt="x"))
    assert (resolved.width, resolved.height, resolved.steps) == (SIZE, SIZE, 1)
    assert resolved.seed is not None


def test_a_decoder_is_refused_as_a_model(taesd: Path) -> None:
    with pytest.raises(EngineError, match="TAESD decoder, not a diffusion checkpoint"):
        DiffusionEngine(ModelSpec("decoder", "image", "diffusion", {"model": taesd}))


def test_quality_scales_steps_and_request_overrides(served: dict[str, Any]) -> None:
    engine = served["engine"]
    assert engine.resolve(ImageParams(prompt="x", quality="high")).steps == 2  # 1.5 x the model's 1 step
    assert engine.resolve(ImageParams(prompt="x", quality="hd", steps=7)).steps == 7
    fitted = engine.resolve(ImageParams(prompt="x", init_images=[Image.new("RGB", (300, 200))]))
    assert (fitted.width, fitted.height) == (384, 256)  # scaled up to 256 high, aspect kept, multiples of 64


# Generations


def test_generate_b64_n2_then_url_with_the_same_seed(served: dict[str, Any]) -> None:
    client = served["client"]
    first = client.images.generate(model=MODEL, prompt="a red fox", n=2, size="256x256",
                                   response_format="b64_json", extra_body={"seed": 42})
    assert isinstance(first.created, int)
    assert (first.size, first.output_format, first.background, first.quality) == ("256x256", "png", "opaque", "medium")
    pictures = [decode(base64.b64decode(item.b64_json)) for item in first.data]
    assert [(p.format, p.size) for p in pictures] == [("PNG", (SIZE, SIZE))] * 2
    assert pictures[0].tobytes() != pictures[1].tobytes()  # image i uses seed + i

    again = client.images.generate(model=MODEL, prompt="a red fox", response_format="url", quality="low",
                                   extra_body={"seed": 42})
    assert again.quality == "low"
    url = again.data[0].url
    assert url.startswith(served["url"] + "/images/files/") and url.endswith(".png")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
    assert decode(fetched.content).tobytes() == pictures[0].tobytes()


def test_stream_sends_partial_images_then_the_completed_one(served: dict[str, Any]) -> None:
    stream = served["client"].images.generate(model=MODEL, prompt="a castle", stream=True, partial_images=2,
                                              output_format="webp", extra_body={"steps": 2})
    events = list(stream)
    types = [event.type for event in events]
    assert types[-1] == "image_generation.completed"
    partials = [event for event in events if event.type == "image_generation.partial_image"]
    assert 1 <= len(partials) <= 2 and [p.partial_image_index for p in partials] == list(range(len(partials)))
    for event in events:
        image = decode(base64.b64decode(event.b64_json))
        assert (image.format, image.size) == ("WEBP", (SIZE, SIZE))
    assert events[-1].usage.total_tokens == 0


# Edits


def test_edit_without_mask_is_image_to_image(served: dict[str, Any]) -> None:
    result = served["client"].images.edit(model=MODEL, image=("in.png", picture(), "image/png"), prompt="snow",
                                          output_format="jpeg", output_compression=40,
                                          extra_body={"strength": 0.5, "steps": 2})
    image = decode(base64.b64decode(result.data[0].b64_json))
    assert (image.format, image.size, result.output_format) == ("JPEG", (SIZE, SIZE), "jpeg")


def test_edit_with_mask_streams_image_edit_events(served: dict[str, Any]) -> None:
    stream = served["client"].images.edit(model=MODEL, image=[("in.png", picture(), "image/png")],
                                          mask=("mask.png", mask(), "image/png"), prompt="a window", stream=True)
    events = list(stream)
    assert [event.type for event in events] == ["image_edit.completed"]
    assert decode(base64.b64decode(events[0].b64_json)).size == (SIZE, SIZE)


@pytest.mark.parametrize("sampler", ["euler_a", "lcm"])
def test_a_masked_edit_repaints_only_where_the_mask_is_transparent(served: dict[str, Any], sampler: str) -> None:
    solid = png(Image.new("RGB", (SIZE, SIZE), (200, 30, 30)))
    result = served["client"].images.edit(model=MODEL, image=("in.png", solid, "image/png"), prompt="a window",
                                          mask=("mask.png", mask(), "image/png"),
                                          extra_body={"sampler": sampler, "seed": 3})
    image = decode(base64.b64decode(result.data[0].b64_json)).convert("RGB")
    kept = [(5, 5), (SIZE - 6, 5), (5, SIZE - 6), (SIZE // 4 - 8, SIZE // 2), (SIZE // 2, 3 * SIZE // 4 + 8)]
    assert [image.getpixel(xy) for xy in kept] == [(200, 30, 30)] * len(kept)  # opaque in the mask: the input
    inside = [image.getpixel((x, y)) for x in range(SIZE // 4 + 8, 3 * SIZE // 4 - 8, 16)
              for y in range(SIZE // 4 + 8, 3 * SIZE // 4 - 8, 16)]
    assert sum(pixel != (200, 30, 30) for pixel in inside) > len(inside) // 2  # transparent: repainted


def test_mask_alpha_becomes_white_repaint_area() -> None:
    import asyncio

    from starlette.datastructures import UploadFile

    upload = UploadFile(io.BytesIO(mask()), filename="mask.png")
    converted = asyncio.run(images._read_mask(upload, (SIZE, SIZE), 10**6))
    assert converted.mode == "L"
    assert converted.getpixel((SIZE // 2, SIZE // 2)) == 255  # transparent: repaint
    assert converted.getpixel((2, 2)) == 0  # opaque: keep


# Rejections: each is a clear 400/413 before any generation


@pytest.mark.parametrize(("body", "param"), [
    ({"size": "300x300"}, "size"),
    ({"size": "2048x2048"}, "size"),
    ({"size": "big"}, "size"),
    ({"n": 0}, "n"),
    ({"n": 11}, "n"),
    ({"quality": "ultra"}, "quality"),
    ({"output_format": "gif"}, "output_format"),
    ({"output_compression": 101}, "output_compression"),
    ({"background": "transparent"}, "background"),
    ({"sampler": "nope"}, "sampler"),
    ({"partial_images": 4, "stream": True}, "partial_images"),
])
def test_generation_rejections(served: dict[str, Any], body: dict[str, Any], param: str) -> None:
    response = httpx.post(served["url"] + "/images/generations", json={"model": MODEL, "prompt": "x", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_generation_rejects_missing_prompt_and_bad_json(served: dict[str, Any]) -> None:
    missing = httpx.post(served["url"] + "/images/generations", json={"model": MODEL})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_required_parameter"
    broken = httpx.post(served["url"] + "/images/generations", content=b"{nope",
                        headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "parse the JSON body" in broken.json()["error"]["message"]


def edit_form(image: bytes = b"", mask_bytes: bytes | None = None, image_type: str = "image/png") -> dict[str, Any]:
    parts: dict[str, Any] = {"image": ("in.png", image or picture(), image_type)}
    if mask_bytes is not None:
        parts["mask"] = ("mask.png", mask_bytes, "image/png")
    return parts


@pytest.mark.parametrize(("files_", "param", "code"), [
    (edit_form(b"this is not an image", image_type="text/plain"), "image", "invalid_image"),
    (edit_form(png(Image.new("RGB", (8, 8))).replace(b"PNG", b"GIF", 1)), "image", "invalid_image"),
    (edit_form(mask_bytes=mask(SIZE * 2)), "mask", "invalid_mask"),
    (edit_form(mask_bytes=mask(mode="RGB")), "mask", "invalid_mask"),
    (edit_form(mask_bytes=b"garbage"), "mask", "invalid_image"),
])
def test_edit_rejections(served: dict[str, Any], files_: dict[str, Any], param: str, code: str) -> None:
    response = httpx.post(served["url"] + "/images/edits", data={"model": MODEL, "prompt": "x"}, files=files_)
    assert response.status_code == 400, response.text
    assert (response.json()["error"]["param"], response.json()["error"]["code"]) == (param, code)


def test_edit_rejects_gif_json_and_missing_image(served: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (SIZE, SIZE)).save(buffer, "GIF")
    gif = httpx.post(served["url"] + "/images/edits", data={"model": MODEL, "prompt": "x"},
                     files={"image": ("in.gif", buffer.getvalue(), "image/gif")})
    assert gif.status_code == 400 and gif.json()["error"]["code"] == "invalid_image_format"
    as_json = httpx.post(served["url"] + "/images/edits", json={"model": MODEL, "prompt": "x"})
    assert as_json.status_code == 400 and "multipart/form-data" in as_json.json()["error"]["message"]
    no_image = httpx.post(served["url"] + "/images/edits", data={"model": MODEL, "prompt": "x"},
                          files={"other": ("a.txt", b"x", "text/plain")})
    assert no_image.status_code == 400 and no_image.json()["error"]["param"] == "image"


def test_oversized_upload_is_413_and_writes_nothing(served: dict[str, Any], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("STACKLET_MAX_BODY_BYTES", "100000")
    settings = Settings.load({"auth": False})
    with TestClient(images_app(served["engine"], settings)) as client:
        response = client.post("/v1/images/edits", data={"model": MODEL, "prompt": "x", "response_format": "url"},
                               files={"image": ("in.png", noise(SIZE), "image/png")})
    assert response.status_code == 413 and response.json()["error"]["param"] == "image"
    assert not (settings.paths.cache / "images").exists()


# The file route


def test_file_route_refuses_unknown_names_and_traversal(served: dict[str, Any]) -> None:
    for name in ("A" * 32 + ".png", "..%2F..%2Fdata%2Fstacklet.db", "x.png"):
        response = httpx.get(served["url"] + "/images/files/" + name)
        assert response.status_code == 404, name
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_files_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("STACKLET_IMAGE_URL_TTL", "3600")
    settings = Settings.load({"auth": False})
    name = ImageFiles(settings.paths.images, settings.image_url_ttl).save(png(Image.new("RGB", (4, 4))), "png")
    app = FastAPI()
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(files.create_router(settings))
    with TestClient(app) as client:
        assert client.get(f"/v1-openai/images/files/{name}").status_code == 200
        old = time.time() - 7200
        path = settings.paths.cache / "images" / name
        os.utime(path, (old, old))
        assert client.get(f"/v1/images/files/{name}").status_code == 404
    assert not path.exists()
