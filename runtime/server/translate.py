"""Relay a chat completions request to a worker and answer in another API (Responses, Messages).

Like the byte relay (proxy.py) it takes the lease, watches the client and cancels the worker request
when the client goes; unlike it, it reads the chat event stream and writes what a `Translation` makes
of each event: a stream of the API's own events, or one JSON body at the end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Protocol

from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from runtime.agents.chatstream import ChatEvents, Event, error_detail
from runtime.errors import StackletError
from runtime.http.sse import SSE_HEADERS
from runtime.scheduler.worker_client import WorkerUnreachable
from runtime.server.backlog import Backlog, ClientTooSlowError
from runtime.server.proxy import Lease
from runtime.server.proxy import _client_gone as client_gone
from runtime.server.proxy import _no_receive as no_receive

log = logging.getLogger("stacklet.server")

WORKER_GONE = "The model's worker stopped unexpectedly. Retry the request; it will be restarted."


class Translation(Protocol):
    stream: bool

    def start(self) -> bytes: ...

    def feed(self, event: Event) -> bytes: ...

    def finish(self) -> bytes: ...

    def fail(self, message: str) -> bytes: ...

    def result(self) -> dict[str, Any]:
        """The whole answer, for a request that did not stream."""

    def failure(self) -> str | None:
        """Why the chat stream failed, once it has."""

    def error(self, status: int, error: dict[str, Any], headers: dict[str, str]) -> Response:
        """The API's own error response for an OpenAI `error` object, before anything was sent."""

    def completed(self) -> None:
        """Called once the answer is whole (Responses stores it here)."""


class TranslatedResponse(Response):
    def __init__(self, lease: Lease, path: str, body: dict[str, Any], headers: dict[str, str],
                 translation: Translation) -> None:
        super().__init__(status_code=200)
        self.lease = lease
        self.path = path
        self.worker_body = json.dumps(body).encode()
        self.worker_headers = headers
        self.translation = translation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        relay = asyncio.ensure_future(self._relay(scope, send))
        watch = asyncio.ensure_future(client_gone(receive))
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
        translation = self.translation
        try:
            reply = await self.lease.open(self.path, self.worker_body, self.worker_headers)
        except StackletError as exc:
            await translation.error(exc.status, exc.to_dict()["error"], exc.headers())(scope, no_receive, send)
            return
        started = False
        released = False
        backlog = Backlog(send)
        try:
            try:
                if reply.status >= 400:
                    body = b"".join([chunk async for chunk in reply.chunks()])
                    self.lease.release(ok=reply.status < 500)
                    released = True
                    await translation.error(reply.status, error_detail(body), {})(scope, no_receive, send)
                    return
                if translation.stream:
                    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                    started = True
                    backlog.write(translation.start())
                events = ChatEvents()
                async for chunk in reply.chunks():
                    for event in events.feed(chunk):
                        out = translation.feed(event)
                        if translation.stream:
                            backlog.write(out)
            except ClientTooSlowError as exc:
                log.warning("client too slow on %s; stream cut", self.path)
                self.lease.release(ok=True)
                released = True
                await backlog.close(translation.fail(exc.message))
                return
            finally:
                reply.close()
            self.lease.release(ok=True)
            released = True
            failure = translation.failure()
            tail = translation.finish() if failure is None else b""
            translation.completed()
            if translation.stream:
                await backlog.close(tail)
            elif failure is not None:
                await translation.error(500, _server_error(failure), {})(scope, no_receive, send)
            else:
                await JSONResponse(translation.result())(scope, no_receive, send)
        except WorkerUnreachable as exc:
            log.warning("worker request %s failed: %s", self.path, exc)
            if not released:
                self.lease.release(ok=False)
                released = True
            if started:
                await backlog.close(translation.fail(WORKER_GONE))
            else:
                await translation.error(500, _server_error(WORKER_GONE), {})(scope, no_receive, send)
        except OSError:  # the server could not write to the client: it went away
            log.info("client disconnected from %s; request cancelled", self.path)
        finally:
            backlog.cancel()
            if not released:
                self.lease.release(ok=False)


_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
    (key.lower().encode(), value.encode()) for key, value in SSE_HEADERS.items()]


def _server_error(message: str) -> dict[str, Any]:
    return {"message": message, "type": "server_error", "param": None, "code": None}
