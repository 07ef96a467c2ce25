"""A stream's body on its way to a client that may read slower than the engine writes.

Relays write into a Backlog instead of sending: writing never waits for the client, so a worker's
answer is read at engine speed and its generation slot is freed when generation ends, however slowly
the client reads. A task sends the chunks at the client's pace. A client that falls `STREAM_BACKLOG`
bytes behind is too slow: its stream is cut (relays end it with an error), and the framing layer's
write timeout drops it if it stops reading altogether.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Send

from runtime.errors import StackletError

STREAM_BACKLOG = 4 * 1024 * 1024


class ClientTooSlowError(StackletError):
    status = 408
    type = "invalid_request_error"
    code = "client_too_slow"

    def __init__(self) -> None:
        super().__init__(f"The client read the stream too slowly: more than {STREAM_BACKLOG // (1024 * 1024)} "
                         "MiB of the answer waited unread, so the stream was cut. Read streams as they arrive.")


class Backlog:
    def __init__(self, send: Send, limit: int = STREAM_BACKLOG) -> None:
        self.send = send
        self.limit = limit
        self.waiting = 0  # bytes queued and not yet handed to the server
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.sender: asyncio.Task[None] | None = None  # started with the first chunk: most answers fail or end first

    def write(self, data: bytes) -> None:
        """Queue a chunk of the body; raises ClientTooSlowError once the client is `limit` bytes behind."""
        if self.sender is not None and self.sender.done():
            self.sender.result()  # the send failed (the client went away): raise why
        if not data:
            return
        if self.waiting + len(data) > self.limit:
            raise ClientTooSlowError()
        self._queue(data, more_body=True)

    async def close(self, tail: bytes = b"") -> None:
        """Queue the last chunk (past the limit: it is the end, or the error that ends a cut stream) and wait
        until the client has taken everything."""
        self._queue(tail, more_body=False)
        assert self.sender is not None
        await self.sender

    def cancel(self) -> None:
        if self.sender is not None:
            self.sender.cancel()

    def _queue(self, data: bytes, more_body: bool) -> None:
        self.waiting += len(data)
        self.queue.put_nowait({"type": "http.response.body", "body": data, "more_body": more_body})
        if self.sender is None:
            self.sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        while True:
            message = await self.queue.get()
            await self.send(message)
            self.waiting -= len(message["body"])
            if not message["more_body"]:
                return
