"""Worker routes for images: /v1/images/generations (JSON) and /v1/images/edits (multipart) on an ImageEngine."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from runtime.engines.base import ImageEngine, ImageParams
from runtime.errors import InvalidRequestError, PayloadTooLargeError
from runtime.http import BASE_URL_HEADER
from runtime.http.bridge import from_thread, run_cancellable
from runtime.http.errors import validation_error
from runtime.http.files import ImageFiles
from runtime.http.jsonbody import JSONBodyRoute
from runtime.http.multipart import form_to_dict
from runtime.http.sse import sse_response
from runtime.http.uploads import read_upload
from runtime.protocol import images as wire
from runtime.spec import WORKER_PREFIX, WorkerLimits, worker_path
from runtime.worker.stats import Stats

GENERATIONS_PATH = worker_path("images")
EDITS_PATH = worker_path("image_edits")
INPUT_FORMATS = ("PNG", "JPEG", "WEBP")
MAX_INPUT_PIXELS = 4096 * 4096


@dataclass
class Job:
    """One validated request: what to generate and how to hand it back."""

    event_prefix: str  # "image_generation" or "image_edit"
    request: wire.ImageOptions
    params: ImageParams
    base_url: str

    @property
    def output_format(self) -> str:
        return self.request.output_format or "png"

    @property
    def response_format(self) -> str:
        # A local server follows the model family: URLs for dall-e style names, like OpenAI's defaults.
        return self.request.response_format or ("url" if self.request.model.startswith("dall-e") else "b64_json")

    @property
    def size(self) -> str:
        return f"{self.params.width}x{self.params.height}"


def create_router(engine: ImageEngine, stats: Stats, limits: WorkerLimits) -> APIRouter:
    files = ImageFiles(limits.image_dir, limits.image_url_ttl) if limits.image_dir else None
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post(GENERATIONS_PATH)
    async def create_image(body: wire.CreateImageRequest, request: Request) -> Response:
        body.validate_semantics()
        params = await run_in_threadpool(engine.resolve, _params(body))
        job = Job("image_generation", body, params, _base_url(request))
        return await _respond(engine, files, stats, job, request, GENERATIONS_PATH)

    @router.post(EDITS_PATH)
    async def create_image_edit(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "multipart/form-data":
            raise InvalidRequestError(
                f"Image edits take multipart/form-data (the image as a file upload), not '{content_type}'.",
                code="invalid_content_type")
        async with request.form() as form:
            body = _validate_edit(form_to_dict(form))
            limit = limits.max_upload_bytes
            images = [await _read_image(upload, "image", limit) for upload in body.image]
            mask = await _read_mask(body.mask, images[0].size, limit) if body.mask else None
        params = _params(body, init_images=images, mask=mask, strength=body.strength)
        params = await run_in_threadpool(engine.resolve, params)
        job = Job("image_edit", body, params, _base_url(request))
        return await _respond(engine, files, stats, job, request, EDITS_PATH)

    return router


def _validate_edit(data: dict[str, Any]) -> wire.CreateImageEditRequest:
    try:
        body = wire.CreateImageEditRequest.model_validate(data)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from None
    body.validate_semantics()
    return body


def _params(body: wire.ImageOptions, **edit: Any) -> ImageParams:
    size = body.requested_size()
    return ImageParams(
        prompt=body.prompt, width=size[0] if size else None, height=size[1] if size else None, n=body.n or 1,
        quality=body.quality or "auto", negative_prompt=body.negative_prompt or "", seed=body.seed,
        steps=body.steps, cfg_scale=body.cfg_scale, sampler=body.sampler, scheduler=body.scheduler,
        previews=(body.partial_images or 0) if body.stream else 0, **edit)


def _base_url(request: Request) -> str:
    return request.headers.get(BASE_URL_HEADER) or str(request.base_url).rstrip("/") + WORKER_PREFIX


async def _read_image(upload: UploadFile, param: str, limit: int) -> Any:
    from PIL import Image, UnidentifiedImageError

    data = await read_upload(upload, limit, param)
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in INPUT_FORMATS:
            raise InvalidRequestError(f"The '{param}' file is {image.format}; send a PNG, JPEG or WebP image.",
                                      param=param, code="invalid_image_format")
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise PayloadTooLargeError(f"The '{param}' image is {image.width}x{image.height}; the limit is "
                                       "4096x4096 pixels.", param=param)
        image.load()
    except Image.DecompressionBombError:
        raise PayloadTooLargeError(f"The '{param}' image has too many pixels; the limit is 4096x4096.",
                                   param=param) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidRequestError(f"The '{param}' file ({upload.filename or 'unnamed'}) is not a valid image. "
                                  "Send a PNG, JPEG or WebP file.", param=param, code="invalid_image") from None
    return image


async def _read_mask(upload: UploadFile, size: tuple[int, int], limit: int) -> Any:
    """OpenAI masks mark what to repaint with transparent pixels; stable-diffusion.cpp wants white."""
    mask = await _read_image(upload, "mask", limit)
    if mask.format != "PNG" or ("A" not in mask.getbands() and "transparency" not in mask.info):
        raise InvalidRequestError("The mask must be a PNG with an alpha channel: transparent pixels mark "
                                  "the area to edit.", param="mask", code="invalid_mask")
    if mask.size != size:
        raise InvalidRequestError(f"The mask is {mask.width}x{mask.height} but the image is "
                                  f"{size[0]}x{size[1]}; they must be the same size.", param="mask",
                                  code="invalid_mask")
    alpha = mask.convert("RGBA").getchannel("A")
    return alpha.point(lambda value: 255 if value == 0 else 0)


async def _respond(engine: ImageEngine, files: ImageFiles | None, stats: Stats, job: Job, request: Request,
                   path: str) -> Response:
    cancel = threading.Event()
    if job.request.stream:
        return sse_response(_stream_events(engine, stats, job, cancel, path), done=False)
    images = await run_cancellable(request, lambda: list(engine.generate_images(job.params, cancel)), cancel)
    data = [await run_in_threadpool(_image_item, job, files, image) for image in images]
    stats.record(path)
    return JSONResponse(wire.images_response(int(time.time()), data, size=job.size, quality=job.params.quality,
                                             output_format=job.output_format))


def _image_item(job: Job, files: ImageFiles | None, image: Any) -> dict[str, str]:
    encoded = encode_image(image, job.output_format, job.request.output_compression)
    if job.response_format == "url":
        if files is None:
            raise InvalidRequestError("This server keeps no image files; use response_format 'b64_json'.",
                                      param="response_format")
        return {"url": f"{job.base_url}/images/files/{files.save(encoded, job.output_format)}"}
    return {"b64_json": base64.b64encode(encoded).decode()}


async def _stream_events(engine: ImageEngine, stats: Stats, job: Job, cancel: threading.Event,
                         path: str) -> AsyncIterator[dict[str, Any]]:
    """Partial images as sampling goes (up to `partial_images` per image), then each completed image.
    The engine runs in its own thread; previews arrive from inside its sampling loop."""

    def generate(put: Callable[[Any], None]) -> None:
        partials: dict[int, int] = {}

        def on_preview(index: int, image: Any) -> None:
            partial_index = partials.get(index, 0)
            if partial_index < job.params.previews:
                partials[index] = partial_index + 1
                put((partial_index, image))

        for image in engine.generate_images(job.params, cancel, on_preview):
            put((None, image))

    async for item in from_thread(generate, cancel):
        yield await run_in_threadpool(_stream_event, job, *item)
    stats.record(path)


def _stream_event(job: Job, partial_image_index: int | None, image: Any) -> dict[str, Any]:
    encoded = encode_image(image, job.output_format, job.request.output_compression)
    return wire.stream_event(job.event_prefix, base64.b64encode(encoded).decode(), created_at=int(time.time()),
                             size=job.size, quality=job.params.quality, output_format=job.output_format,
                             partial_image_index=partial_image_index)


def encode_image(image: Any, output_format: str, compression: int | None) -> bytes:
    """PNG is lossless; `output_compression` (default 100) is the JPEG/WebP quality."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, "PNG")
    else:
        image.convert("RGB").save(buffer, output_format.upper(), quality=100 if compression is None else compression)
    return buffer.getvalue()
