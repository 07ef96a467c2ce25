"""OpenAI wire schemas for /audio (placeholder: its owner fills it in)."""

from __future__ import annotations

from runtime.protocol.common import OpenAIRequest


class CreateSpeechRequest(OpenAIRequest):
    model: str


class CreateTranscriptionRequest(OpenAIRequest):
    model: str


class CreateTranslationRequest(OpenAIRequest):
    model: str
