"""Relay one request to a target (a local worker over its Unix socket, or a remote upstream) and stream the
answer back unchanged.

The relay runs inside the response itself, so it can watch the client: when the client goes
away, the request to the target is closed, which it sees as a disconnect and stops work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from runtime.errors import StackletError, WorkerError
from runtime.http import BASE_URL_HEADER
from runtime.http.errors import error_response
from runtime.http.sse import DONE, error_event
from runtime.scheduler.worker_client import WorkerUnreachable
from runtime.server.backlog import Backlog, ClientTooSlowError
from runtime.server.remote_client import UpstreamBroken

log = logging.getLogger("stacklet.server")

WORKER_GONE = "The model's worker stopped unexpectedly. Retry the request; it will be restarted."
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})


class Reply(Protocol):
    """A target's answer: status, headers and the body as it arrives (runtime/server/dispatch.py)."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def header(self, name: bytes) -> bytes | None: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class Lease(Protocol):
    """A place on a target: `open` waits for it (a local model's load and a free slot, or a remote's answer,
    with failover) and gives its reply; `release` hands the place back once the answer is out."""

    async def open(self, path: str, body: bytes, headers: dict[str, str]) -> Reply: ...

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
        lease = _Once(self.lease)
        backlog = Backlog(send)
        try:
            try:
                reply = await self.lease.open(self.path, self.worker_body, self.worker_headers)
            except StackletError as exc:
                await error_response(exc)(scope, _no_receive, send)
                return
            try:
                streaming_events = (reply.header(b"content-type") or b"").startswith(b"text/event-stream")
                await send({"type": "http.response.start", "status": reply.status,
                            "headers": _response_headers(reply)})
                started = True
                tail = await self._relay_body(reply, backlog)
            except ClientTooSlowError as exc:
                log.warning("client too slow on %s; stream cut", self.path)
                if not streaming_events:
                    lease.release(ok=True)
                    return  # no way to say so in-band: the unfinished body breaks the transfer
                tail = self._error_tail(exc)
            finally:
                reply.close()
            lease.release(ok=reply.status < 500)  # before the client sees the end
            await backlog.close(tail)
        except WorkerUnreachable as exc:
            log.warning("request %s failed: %s", self.path, exc)
            lease.release(ok=False)
            message = str(exc) if isinstance(exc, UpstreamBroken) else WORKER_GONE
            await self._fail(scope, send, backlog, started, streaming_events, message)
        except OSError:  # the server could not write to the client: it went away
            log.info("client disconnected from %s; request cancelled", self.path)
        finally:
            backlog.cancel()
            lease.release(ok=False)

    @staticmethod
    async def _relay_body(reply: Reply, backlog: Backlog) -> bytes:
        """Stream chunks as they arrive, at the target's pace (the backlog holds what the client has not
        read yet); a sized body (JSON, computed whole) is held back and returned, so the request counts as
        finished before the client can see its last byte."""
        if reply.header(b"content-length") is not None:
            return b"".join([chunk async for chunk in reply.chunks()])
        async for chunk in reply.chunks():
            backlog.write(chunk)
        return b""

    def _error_tail(self, error: StackletError) -> bytes:
        return error_event(error) + (DONE if self.path.endswith("completions") else b"")

    async def _fail(self, scope: Scope, send: Send, backlog: Backlog, started: bool, streaming_events: bool,
                    message: str) -> None:
        """The target went away mid-answer: a clean error, in-band on an event stream. Any other started
        body is left unfinished, so the client sees a broken transfer rather than a complete-looking one."""
        error = WorkerError(message)
        if not started:
            await error_response(error)(scope, _no_receive, send)
        elif streaming_events:
            await backlog.close(self._error_tail(error))


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


def _response_headers(reply: Reply) -> list[tuple[bytes, bytes]]:
    return [(key, value) for key, value in reply.headers if key not in HOP_BY_HOP]


def forward_headers(content_type: str | None, base_url: str) -> dict[str, str]:
    headers = {BASE_URL_HEADER: base_url}
    if content_type:
        headers["Content-Type"] = content_type
    return headers
