"""Anthropic wire schemas for POST /messages and /messages/count_tokens (the requests).

Content blocks and tools are checked block by block where they are translated
(runtime/agents/messages.py), so the errors name the exact field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from runtime.protocol.common import OpenAIRequest


class CountTokensRequest(OpenAIRequest):
    model: str
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


class CreateMessageRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: Annotated[list[str], Field(max_length=4)] | None = None
    temperature: Annotated[float | None, Field(ge=0, le=1)] = None
    top_p: Annotated[float | None, Field(ge=0, le=1)] = None
    top_k: Annotated[int | None, Field(ge=0)] = None  # accepted; the chat sampler has no top_k
    stream: bool | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error envelope: {"type": "error", "error": {"type": ..., "message": ...}}."""

    type: str
    error: AnthropicErrorDetail
