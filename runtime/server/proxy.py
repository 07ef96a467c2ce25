"""Relay one request to a worker over its Unix socket and stream the answer back unchanged.

The relay runs inside the response itself, so it can watch the client: when the client goes
away, the request to the worker is closed, which the worker sees as a disconnect and stops work.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from runtime.errors import StackletError, WorkerError
from runtime.http import BASE_URL_HEADER
from runtime.http.errors import error_response
from runtime.http.sse import DONE, error_event
from runtime.scheduler.worker_client import WorkerResponse, WorkerUnreachable

log = logging.getLogger("stacklet.server")

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
        self.worker_body = body
        self.worker_headers = headers

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
            reply = await WorkerResponse.open(socket_path, self.path, self.worker_body, self.worker_headers)
            try:
                streaming_events = (reply.header(b"content-type") or b"").startswith(b"text/event-stream")
                await send({"type": "http.response.start", "status": reply.status,
                            "headers": _response_headers(reply)})
                started = True
                tail = await self._relay_body(reply, send)
            finally:
                reply.close()
            lease.release(ok=reply.status < 500)  # before the client sees the end
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except WorkerUnreachable as exc:
            log.warning("worker request %s failed: %s", self.path, exc)
            lease.release(ok=False)
            await self._fail(scope, send, started, streaming_events)
        except OSError:  # the server could not write to the client: it went away
            log.info("client disconnected from %s; request cancelled", self.path)
        finally:
            lease.release(ok=False)

    @staticmethod
    async def _relay_body(reply: WorkerResponse, send: Send) -> bytes:
        """Stream chunks as they arrive; a sized body (JSON, computed whole) is held back and returned,
        so the request counts as finished before the client can see its last byte."""
        if reply.header(b"content-length") is not None:
            return b"".join([chunk async for chunk in reply.chunks()])
        async for chunk in reply.chunks():
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


def _response_headers(reply: WorkerResponse) -> list[tuple[bytes, bytes]]:
    return [(key, value) for key, value in reply.headers if key not in HOP_BY_HOP]


def forward_headers(content_type: str | None, base_url: str) -> dict[str, str]:
    headers = {BASE_URL_HEADER: base_url}
    if content_type:
        headers["Content-Type"] = content_type
    return headers
