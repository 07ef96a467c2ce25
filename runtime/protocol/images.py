"""OpenAI wire schemas for /images/generations and /images/edits (plus the stable-diffusion extras)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator
from starlette.datastructures import UploadFile

from runtime.errors import InvalidRequestError
from runtime.protocol.common import OpenAIRequest

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
Quality = Literal["standard", "hd", "low", "medium", "high", "auto"]
ResponseFormat = Literal["url", "b64_json"]
OutputFormat = Literal["png", "jpeg", "webp"]


class ImageOptions(OpenAIRequest):
    """Fields shared by generations and edits."""

    model: str
    prompt: str = Field(min_length=1, max_length=32000)
    n: int | None = Field(default=None, ge=1, le=10)
    size: str | None = None
    quality: Quality | None = None
    response_format: ResponseFormat | None = None
    output_format: OutputFormat | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    background: Literal["transparent", "opaque", "auto"] | None = None
    user: str | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    # Extras OpenAI lacks (stable-diffusion knobs)
    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    steps: int | None = Field(default=None, ge=1, le=150)
    cfg_scale: float | None = Field(default=None, ge=0, le=30)
    sampler: str | None = None
    scheduler: str | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is None or value == "auto" or SIZE_PATTERN.match(value):
            return value
        raise ValueError("expected WIDTHxHEIGHT (e.g. 512x512) or auto")

    def validate_semantics(self) -> None:
        if self.background == "transparent":
            raise InvalidRequestError(
                "background 'transparent' is not supported by this model; use 'opaque' or 'auto'.",
                param="background", code="invalid_value")

    def requested_size(self) -> tuple[int, int] | None:
        """(width, height), or None for `auto`."""
        match = SIZE_PATTERN.match(self.size or "")
        return (int(match[1]), int(match[2])) if match else None


class CreateImageRequest(ImageOptions):
    style: Literal["vivid", "natural"] | None = None
    moderation: Literal["low", "auto"] | None = None


class CreateImageEditRequest(ImageOptions):
    """Validated from `runtime.http.multipart.form_to_dict(form)`: uploads stay UploadFile."""

    model_config = {"arbitrary_types_allowed": True}

    image: list[UploadFile] = Field(min_length=1, max_length=16)
    mask: UploadFile | None = None
    strength: float | None = Field(default=None, ge=0, le=1)
    input_fidelity: Literal["high", "low"] | None = None

    @field_validator("image", mode="before")
    @classmethod
    def _images(cls, value: Any) -> list[UploadFile]:
        # One file arrives as `image`, several as `image[]` (form_to_dict turns those into a list).
        files = value if isinstance(value, list) else [value]
        if not all(isinstance(item, UploadFile) for item in files):
            raise ValueError("expected image file uploads (multipart/form-data)")
        return files

    @field_validator("mask", mode="before")
    @classmethod
    def _mask(cls, value: Any) -> Any:
        if value is None or isinstance(value, UploadFile):
            return value
        raise ValueError("expected a PNG file upload (multipart/form-data)")


# Responses. stable-diffusion.cpp counts no tokens; streams still carry the usage OpenAI requires.
UNCOUNTED_USAGE = {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0,
                   "input_tokens_details": {"text_tokens": 0, "image_tokens": 0}}


def response_quality(quality: str) -> str:
    """The response vocabulary (low, medium, high) for a request's quality."""
    return {"low": "low", "high": "high", "hd": "high"}.get(quality, "medium")


def images_response(created: int, data: list[dict[str, str]], *, size: str, quality: str,
                    output_format: str) -> dict[str, Any]:
    """`ImagesResponse`; each data item holds `b64_json` or `url`."""
    return {"created": created, "data": data, "background": "opaque", "output_format": output_format,
            "quality": response_quality(quality), "size": size}


def stream_event(event_prefix: str, b64_json: str, *, created_at: int, size: str, quality: str,
                 output_format: str, partial_image_index: int | None = None) -> dict[str, Any]:
    """`image_generation.*` / `image_edit.*`: a partial image when `partial_image_index` is given,
    else the completed one."""
    event: dict[str, Any] = {
        "type": f"{event_prefix}.partial_image" if partial_image_index is not None else f"{event_prefix}.completed",
        "b64_json": b64_json, "created_at": created_at, "size": size, "quality": response_quality(quality),
        "background": "opaque", "output_format": output_format,
    }
    if partial_image_index is not None:
        event["partial_image_index"] = partial_image_index
    else:
        event["usage"] = UNCOUNTED_USAGE
    return event
