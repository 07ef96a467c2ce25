"""ASGI middlewares: request ids and OpenAI headers with metrics, and the request body limit.

Plain ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.errors import PayloadTooLargeError, StackletError
from runtime.http.errors import INTERNAL_MESSAGE, error_response
from runtime.server.metrics import Metrics

log = logging.getLogger("stacklet")

OPENAI_VERSION = "2020-10-01"
UNMATCHED_ROUTE = "unmatched"  # one label for every unknown URL keeps /metrics bounded


class RequestContextMiddleware:
    """x-request-id, openai-version and openai-processing-ms on every response; per-route metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                headers["openai-version"] = OPENAI_VERSION
                headers["openai-processing-ms"] = str(round((time.perf_counter() - start) * 1000))
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if started:
                raise
            log.exception("unhandled error (%s)", request_id)
            await error_response(StackletError(INTERNAL_MESSAGE))(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


def too_large(limit: int, received: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"Maximum content size limit ({limit}) exceeded ({received} bytes read).")


class BodyLimitMiddleware:
    """413 for bodies over the limit: up front from Content-Length, else while the body streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(too_large(self.max_bytes, int(declared)))(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise too_large(self.max_bytes, received)
            return message

        await self.app(scope, limited_receive, send)
