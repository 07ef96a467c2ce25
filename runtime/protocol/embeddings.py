"""OpenAI wire schemas for /embeddings (placeholder: its owner fills it in)."""

from __future__ import annotations

from runtime.protocol.common import OpenAIRequest


class CreateEmbeddingRequest(OpenAIRequest):
    model: str
