"""OpenAI wire schemas for /images (placeholder: its owner fills it in)."""

from __future__ import annotations

from runtime.protocol.common import OpenAIRequest


class CreateImageRequest(OpenAIRequest):
    model: str


class CreateImageEditRequest(OpenAIRequest):
    model: str
