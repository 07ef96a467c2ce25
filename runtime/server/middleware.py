"""ASGI middlewares: request ids and OpenAI headers with metrics, the browser guard (Host and Origin
checks), and the request body limit.

Plain ASGI (not BaseHTTPMiddleware) so streamed responses pass through untouched.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.config import Settings
from runtime.errors import InvalidRequestError, PayloadTooLargeError, PermissionDeniedError, StackletError
from runtime.http.errors import INTERNAL_MESSAGE, error_response
from runtime.server.auth import is_loopback
from runtime.server.metrics import Metrics

log = logging.getLogger("stacklet")

OPENAI_VERSION = "2020-10-01"
UNMATCHED_ROUTE = "unmatched"  # one label for every unknown URL keeps /metrics bounded
CLIENT_GONE = 499  # nginx's status for "client closed the request", in /metrics


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
        except ClientDisconnect:  # gone before its body arrived (uvicorn closed it on a framing error): no answer
            status = CLIENT_GONE
        except Exception:
            if started:
                raise
            log.exception("unhandled error (%s)", request_id)
            await error_response(StackletError(INTERNAL_MESSAGE))(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


WILDCARD_BINDS = ("0.0.0.0", "::", "")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
MANAGEMENT_PREFIX = "/v1/models"
KEY_HEADERS = ("authorization", "x-api-key")


def cors_origins(settings: Settings) -> list[str]:
    """The origins a cross-origin page may call from: `*` only counts when keys are required."""
    return [origin for origin in settings.cors_origins if settings.auth or origin != "*"]


def served_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names this server answers to; None for a wildcard bind (every address, and auth is on)."""
    if settings.host in WILDCARD_BINDS:
        return None
    names = {settings.host.lower(), *(name.lower() for name in settings.allowed_hosts)}
    return frozenset(names | LOOPBACK_NAMES if is_loopback(settings.host) else names)


def host_name(header: str) -> str:
    """The name in a Host header: [::1]:8080 -> ::1, Example.com:80 -> example.com."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if ":" in header else header.lower()


class BrowserGuardMiddleware:
    """What a web page in the user's browser can make this server do.

    A Host header that names another server is refused: that is how DNS rebinding reaches a loopback
    server. A cross-origin request (a page that this server did not serve) must come from an allowed
    origin, and to the management API it must carry a key; its CORS preflight is refused likewise.
    Same-origin requests pass, and so do clients that send no Origin (SDKs, curl).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = served_hosts(settings)
        self.origins = frozenset(cors_origins(settings))
        self.url = f"http://{settings.host}:{settings.port}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self.refusal(scope)) is not None:
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> StackletError | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if len(headers.getlist("host")) > 1:
            return InvalidRequestError("The request has more than one Host header. Send one.", code="invalid_host")
        if self.hosts is not None and host and host_name(host) not in self.hosts:
            return InvalidRequestError(
                f"The Host header '{host[:100]}' does not name this server (a guard against DNS rebinding). "
                f"Call {self.url}, or add the name to allowed_hosts (STACKLET_ALLOWED_HOSTS).", code="invalid_host")
        origin = headers.get("origin")
        if origin is None or origin.lower() == f"{scope['scheme']}://{host}".lower():
            return None
        if "*" not in self.origins and origin not in self.origins:
            return PermissionDeniedError(
                f"Cross-origin requests from '{origin[:100]}' are not allowed. Add the origin to cors_origins "
                "(STACKLET_CORS_ORIGINS); with --no-auth, list it by name.", code="origin_not_allowed")
        path = scope["path"]
        if path == MANAGEMENT_PREFIX or path.startswith(MANAGEMENT_PREFIX + "/"):
            preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
            sent = ({name.strip().lower() for name in headers.get("access-control-request-headers", "").split(",")}
                    if preflight else set(headers.keys()))
            if not sent & set(KEY_HEADERS):
                return PermissionDeniedError(
                    "Cross-origin calls to the management API need an API key: send it in the Authorization "
                    "header.", code="origin_not_allowed")
        return None


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
