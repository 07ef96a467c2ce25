"""uvicorn's HTTP protocol with the server's rules for connections that misbehave.

- HTTP it cannot parse (a duplicate or invalid Content-Length, a bad chunk size, an invalid header,
  method or request line) gets uvicorn's 400 as the OpenAI error envelope instead of text/plain.
- A client gets `read_timeout` seconds to send a request's headers, and may pause that long between
  pieces of a body; uvicorn itself only times out idle keep-alive connections, so a half-open or
  trickling connection would otherwise stay forever.
- A client that leaves a response unread for `write_timeout` seconds once the send buffer is full
  is dropped; the app sees a disconnect, which cancels the request's work.
- Past `max_connections` open connections a new one gets a 503 and is closed before it is read.

Served with `uvicorn.run(..., http=http_protocol(settings))`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from runtime.config import Settings
from runtime.errors import InvalidRequestError, ServiceUnavailableError, StackletError

MALFORMED = InvalidRequestError(
    "Invalid HTTP request received: the request line, a header or the body framing (Content-Length or "
    "chunked encoding) is malformed. Check the client's HTTP library.", code="invalid_http_request")
TOO_MANY = ServiceUnavailableError("The server has too many open connections. Retry shortly.",
                                   code="too_many_connections")


class EnvelopeHttpToolsProtocol(HttpToolsProtocol):
    read_timeout = 30.0
    write_timeout = 60.0
    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(503, TOO_MANY)
            return
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        self._cancel_write_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_read_timer()  # a request's first bytes arrived (maybe after a keep-alive pause): headers due

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._cancel_read_timer()
        if self.cycle is not None and self.cycle.more_body:
            self._arm_read_timer()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm_read_timer()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_read_timer()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._drop)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_timer()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, MALFORMED)

    def _refuse(self, status: int, error: StackletError) -> None:
        body = json.dumps(error.to_dict()).encode()
        head = [STATUS_LINE[status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [f"{name}: {value}\r\n".encode() for name, value in error.headers().items()]
        head += [b"content-type: application/json\r\n", b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _cancel_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.flow.read_paused:  # the app is not reading this body yet: the client is not the slow one
            self._arm_read_timer()
            return
        self._drop()

    def _drop(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self.transport.abort()


def http_protocol(settings: Settings) -> type[EnvelopeHttpToolsProtocol]:
    """The protocol class with the limits of `settings` (uvicorn instantiates it once per connection)."""
    limits = {"read_timeout": settings.read_timeout, "write_timeout": settings.write_timeout,
              "max_connections": settings.max_connections}
    return type("ServerHttpProtocol", (EnvelopeHttpToolsProtocol,), limits)
