"""Wire schemas for /tokenize and /detokenize, in llama-server's shapes (its clients and UIs count tokens
with them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from runtime.protocol.common import OpenAIRequest

MAX_CONTENT_CHARS = 1024 * 1024
MAX_TOKENS = 1024 * 1024


class TokenizeRequest(OpenAIRequest):
    model: str
    content: Annotated[str, Field(max_length=MAX_CONTENT_CHARS)]
    add_special: bool = False  # llama-server's default: no BOS unless asked
    with_pieces: bool = False


class DetokenizeRequest(OpenAIRequest):
    model: str
    tokens: Annotated[list[int], Field(max_length=MAX_TOKENS)]


def tokenize_response(tokens: list[int], pieces: list[bytes] | None) -> dict[str, Any]:
    """Token ids, or `{id, piece}` objects; a piece that is not valid UTF-8 on its own (part of a character)
    is its list of byte values, as llama-server sends it."""
    if pieces is None:
        return {"tokens": tokens}
    return {"tokens": [{"id": token, "piece": _piece(piece)} for token, piece in zip(tokens, pieces, strict=True)]}


def _piece(piece: bytes) -> str | list[int]:
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return list(piece)
