"""Relay one request to a worker over its Unix socket and stream the answer back unchanged.

The relay runs inside the response itself, so it can watch the client: when the client goes
away, the upstream request is closed, which the worker sees as a disconnect and stops work.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from runtime.errors import StackletError, WorkerError
from runtime.scheduler.upstream import Upstream, UpstreamError
from runtime.server.errors import error_response
from runtime.server.sse import DONE, error_event

log = logging.getLogger("stacklet.scheduler")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})


class Lease(Protocol):
    """A place on a model's worker: `acquire` waits for the load and a free slot, and gives its socket."""

    async def acquire(self) -> Path: ...

    def release(self, ok: bool) -> None: ...


class ProxyResponse(Response):
    def __init__(self, lease: Lease, path: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(status_code=200)
        self.lease = lease
        self.path = path
        self.upstream_body = body
        self.upstream_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(scope, send))
        watch = asyncio.ensure_future(_client_gone(receive))
        try:
            await asyncio.wait({relay, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            relay.cancel()
            watch.cancel()
            await asyncio.gather(relay, watch, return_exceptions=True)
        if relay.cancelled():
            log.info("client disconnected from %s; request cancelled", self.path)
            return
        failure = relay.exception()
        if failure is not None:
            raise failure

    async def _relay(self, scope: Scope, send: Send) -> None:
        started = False
        streaming_events = False
        try:
            socket_path = await self.lease.acquire()
        except StackletError as exc:
            await error_response(exc)(scope, _no_receive, send)
            return
        lease = _Once(self.lease)
        try:
            upstream = await Upstream.open(socket_path, self.path, self.upstream_body, self.upstream_headers)
            try:
                streaming_events = (upstream.header(b"content-type") or b"").startswith(b"text/event-stream")
                await send({"type": "http.response.start", "status": upstream.status,
                            "headers": _response_headers(upstream)})
                started = True
                tail = await self._relay_body(upstream, send)
            finally:
                upstream.close()
            lease.release(ok=upstream.status < 500)  # before the client sees the end
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except UpstreamError as exc:
            log.warning("worker request %s failed: %s", self.path, exc)
            lease.release(ok=False)
            await self._fail(scope, send, started, streaming_events)
        except OSError:  # the server could not write to the client: it went away
            log.info("client disconnected from %s; request cancelled", self.path)
        finally:
            lease.release(ok=False)

    @staticmethod
    async def _relay_body(upstream: Upstream, send: Send) -> bytes:
        """Stream chunks as they arrive; a sized body (JSON, computed whole) is held back and returned,
        so the request counts as finished before the client can see its last byte."""
        if upstream.header(b"content-length") is not None:
            return b"".join([chunk async for chunk in upstream.chunks()])
        async for chunk in upstream.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return b""

    async def _fail(self, scope: Scope, send: Send, started: bool, streaming_events: bool) -> None:
        """The worker went away: a clean error, in-band on an event stream. Any other started body is
        left unfinished, so the client sees a broken transfer rather than a complete-looking one."""
        error = WorkerError("The model's worker stopped unexpectedly. Retry the request; it will be restarted.")
        if not started:
            await error_response(error)(scope, _no_receive, send)
        elif streaming_events:
            tail = error_event(error) + (DONE if self.path.endswith("completions") else b"")
            await send({"type": "http.response.body", "body": tail, "more_body": False})


class _Once:
    """Releases a lease exactly once, whichever way the request ends."""

    def __init__(self, lease: Lease) -> None:
        self.lease: Lease | None = lease

    def release(self, ok: bool) -> None:
        if self.lease is not None:
            self.lease.release(ok)
            self.lease = None


async def _client_gone(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _response_headers(upstream: Upstream) -> list[tuple[bytes, bytes]]:
    return [(key, value) for key, value in upstream.headers if key not in HOP_BY_HOP]


def forward_headers(content_type: str | None, base_url: str) -> dict[str, str]:
    headers = {"x-stacklet-base-url": base_url}
    if content_type:
        headers["Content-Type"] = content_type
    return headers
