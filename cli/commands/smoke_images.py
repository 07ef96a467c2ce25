"""`stacklet test images MODEL` and `stacklet test image-edit MODEL`: generate and edit through the openai client."""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path
from typing import Any

import typer

from cli import output
from cli.client import openai_client
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Check, Report

PROMPT = "a lighthouse on a cliff at sunset"
EDIT_PROMPT = "the same scene in watercolour"
SizeOption = typer.Option(None, "--size", help="WIDTHxHEIGHT to request (default: the model's own size).")
OutOption = typer.Option(None, "--out", help="Directory to save the images in (default: a new temp dir).")


def register(test_app: typer.Typer) -> None:
    test_app.command("images")(test_images)
    test_app.command("image-edit")(test_image_edit)


def test_images(model: str = typer.Argument(..., help="Image model to test."), base_url: BaseUrlOption = None,
                api_key: ApiKeyOption = None, as_json: JsonOption = False, size: str | None = SizeOption,
                out: Path | None = OutOption) -> None:
    """Generate images (b64_json with n=2, then a URL) and check they decode at the requested size."""
    client, folder = openai_client(base_url, api_key), _folder(out)
    report = Report(f"images: {model}")
    with report.check("generate b64_json, n=2") as check:
        response = client.images.generate(model=model, prompt=PROMPT, n=2, response_format="b64_json",
                                          **_size(size))
        images = [base64.b64decode(item.b64_json or "") for item in response.data or []]
        _save_all(check, images, folder, "generate", _expected(size, response), count=2)
    with report.check("generate url") as check:
        response = client.images.generate(model=model, prompt=PROMPT, response_format="url", **_size(size))
        url = response.data[0].url if response.data else None
        if not url:
            raise ValueError("the response holds no url")
        _save_all(check, [_fetch(client, url)], folder, "url", _expected(size, response), count=1)
    _finish(report, folder, as_json)


def test_image_edit(model: str = typer.Argument(..., help="Image model to test."),
                    base_url: BaseUrlOption = None, api_key: ApiKeyOption = None,
                    as_json: JsonOption = False, size: str | None = SizeOption, out: Path | None = OutOption) -> None:
    """Edit a test picture without a mask (image-to-image) and with one (inpainting)."""
    client, folder = openai_client(base_url, api_key), _folder(out)
    width, height = _parse_size(size or "512x512")
    source = _test_picture(width, height)
    report = Report(f"image edits: {model}")
    with report.check("edit (image-to-image)") as check:
        response = client.images.edit(model=model, image=("source.png", source, "image/png"), prompt=EDIT_PROMPT,
                                      response_format="b64_json", **_size(size))
        images = [base64.b64decode(item.b64_json or "") for item in response.data or []]
        _save_all(check, images, folder, "edit", _expected(size, response), count=1)
    with report.check("edit with mask (inpainting)") as check:
        response = client.images.edit(model=model, image=("source.png", source, "image/png"),
                                      mask=("mask.png", _test_mask(width, height), "image/png"),
                                      prompt=EDIT_PROMPT, response_format="b64_json", **_size(size))
        images = [base64.b64decode(item.b64_json or "") for item in response.data or []]
        _save_all(check, images, folder, "inpaint", _expected(size, response), count=1)
    _finish(report, folder, as_json)


def _size(size: str | None) -> dict[str, Any]:
    return {"size": size} if size else {}


def _parse_size(size: str) -> tuple[int, int]:
    width, _, height = size.lower().partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise typer.BadParameter(f"'{size}' is not WIDTHxHEIGHT, e.g. 512x512.", param_hint="--size")
    return int(width), int(height)


def _expected(size: str | None, response: Any) -> tuple[int, int]:
    """The requested size, or with none requested the size the server says it made."""
    reported = size or getattr(response, "size", None)
    if not reported:
        raise ValueError("the response does not say its size")
    return _parse_size(reported)


def _folder(out: Path | None) -> Path:
    folder = out or Path(tempfile.mkdtemp(prefix="stacklet-images-"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _save_all(check: Check, images: list[bytes], folder: Path, stem: str, size: tuple[int, int],
              count: int) -> None:
    """Check count, decoding and size, and save each file (listed in the check's `files`)."""
    from PIL import Image

    if len(images) != count:
        raise ValueError(f"expected {count} images, got {len(images)}")
    paths = []
    for number, data in enumerate(images):
        image = Image.open(io.BytesIO(data))
        image.load()
        if image.size != size:
            raise ValueError(f"image {number} is {image.width}x{image.height}, expected {size[0]}x{size[1]}")
        path = folder / f"{stem}-{number}.{(image.format or 'png').lower()}"
        path.write_bytes(data)
        paths.append(str(path))
    check.detail = f"{count} x {size[0]}x{size[1]}"
    check.extra["files"] = paths


def _finish(report: Report, folder: Path, as_json: bool) -> None:
    if not as_json:
        output.console.print(f"Images saved in {folder}", highlight=False, soft_wrap=True)
    report.finish(as_json)


def _fetch(client: Any, url: str) -> bytes:
    import httpx

    response = httpx.get(url, headers={"Authorization": f"Bearer {client.api_key}"}, timeout=60)
    response.raise_for_status()
    return response.content


def _test_picture(width: int, height: int) -> bytes:
    """A gradient with a dark square: enough structure to see an edit."""
    from PIL import Image, ImageDraw

    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    ImageDraw.Draw(image).rectangle((width // 4, height // 4, width // 2, height // 2), fill=(20, 40, 160))
    return _png(image)


def _test_mask(width: int, height: int) -> bytes:
    """Opaque everywhere but a transparent centre: OpenAI's way of saying "repaint the centre"."""
    from PIL import Image, ImageDraw

    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(mask).rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(0, 0, 0, 0))
    return _png(mask)


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
