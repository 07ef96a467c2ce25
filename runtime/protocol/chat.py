"""OpenAI wire schemas for /chat (placeholder: its owner fills it in)."""

from __future__ import annotations

from runtime.protocol.common import OpenAIRequest


class CreateChatCompletionRequest(OpenAIRequest):
    model: str
