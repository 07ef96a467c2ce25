"""Shared pieces of the OpenAI wire schemas (pydantic v2)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class OpenAIRequest(BaseModel):
    """Base for request bodies: explicit nulls are accepted everywhere, unknown fields are kept
    (clients add vendor extras) and rejected only in strict mode by the server."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def unknown_fields(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail

