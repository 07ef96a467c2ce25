"""Server-sent events exactly as the OpenAI SDKs read them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from runtime.errors import StackletError
from runtime.http.errors import INTERNAL_MESSAGE

log = logging.getLogger("stacklet")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)  # one encoder, not one per event


def encode(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {_JSON.encode(data)}\n\n".encode()


DONE = b"data: [DONE]\n\n"


def error_event(exc: BaseException) -> bytes:
    if isinstance(exc, StackletError):
        return encode(exc.to_dict())
    return encode({"error": {"message": INTERNAL_MESSAGE, "type": "server_error", "param": None, "code": None}})


async def frame(events: AsyncIterator[dict[str, Any]], *, done: bool = True) -> AsyncIterator[bytes]:
    """JSON events -> SSE bytes; a failure mid-stream becomes an error event, then [DONE]."""
    try:
        async for event in events:
            # typed streams (images, audio) name each event, as OpenAI's spec does
            yield encode(event, None if done else event.get("type"))
    except Exception as exc:  # the stream already started: report in-band
        if not isinstance(exc, StackletError):
            log.exception("stream failed")
        yield error_event(exc)
    if done:
        yield DONE


def sse_response(events: AsyncIterator[dict[str, Any]], *, done: bool = True) -> StreamingResponse:
    """`done=False` for the typed-event streams (images, audio) that end without [DONE]."""
    return StreamingResponse(frame(events, done=done), media_type="text/event-stream", headers=SSE_HEADERS)
