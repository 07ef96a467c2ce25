"""OpenAI wire schemas for /completions (placeholder: its owner fills it in)."""

from __future__ import annotations

from runtime.protocol.common import OpenAIRequest


class CreateCompletionRequest(OpenAIRequest):
    model: str
