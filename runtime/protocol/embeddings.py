"""OpenAI wire schemas for /embeddings: the request, and a builder for the response."""

from __future__ import annotations

import base64
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from runtime.errors import InvalidRequestError
from runtime.protocol.common import OpenAIRequest

EmbeddingInput = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=2048)]
    | Annotated[list[int], Field(min_length=1)]
    | Annotated[list[list[int]], Field(min_length=1, max_length=2048)]
)

INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


class CreateEmbeddingRequest(OpenAIRequest):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int | None, Field(ge=1)] = None
    user: str | None = None

    def validate_semantics(self) -> None:
        if any(item in ("", []) for item in self.inputs()):
            raise InvalidRequestError(INVALID_INPUT, param="input")

    def inputs(self) -> list[str | list[int]]:
        """The input as a list of single inputs, each text or token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(i, int) for i in self.input):
            return [list(self.input)]  # type: ignore[arg-type]
        return list(self.input)  # type: ignore[arg-type]


def encode(vector: list[float], encoding_format: str | None) -> list[float] | str:
    """base64 is little-endian float32, as the SDKs decode it."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def response(model: str, embeddings: list[list[float] | str], prompt_tokens: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(embeddings)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
