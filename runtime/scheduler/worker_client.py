"""The server's client for its workers: one HTTP/1.1 request over a worker's Unix socket, with h11 on a
plain asyncio stream.

Every token of a stream passes through here, once per client, so the relay does only what it needs:
one connection per request, no pool, no redirects, no timeouts (the client's disconnect ends it; a
caller that needs a deadline, like the status poll, wraps the call in one). A general client (httpx,
on anyio and httpcore) took about half of the server's time per token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import h11

READ_SIZE = 65536


class WorkerUnreachable(Exception):
    """The worker could not be reached, closed the connection early, or broke the protocol."""


class WorkerResponse:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._conn = h11.Connection(h11.CLIENT)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    @classmethod
    async def open(cls, socket_path: Path, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> WorkerResponse:
        """Send the request (POST with a body, else GET) and wait for the status line and headers."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(socket_path))
        except OSError as exc:
            raise WorkerUnreachable(f"cannot connect to the worker: {exc}") from exc
        response = cls(reader, writer)
        try:
            await response._request(path, body, headers or {})
        except BaseException:
            response.close()
            raise
        return response

    async def _request(self, path: str, body: bytes | None, headers: dict[str, str], host: str = "worker") -> None:
        method = "GET" if body is None else "POST"
        fields = [("host", host), ("content-length", str(len(body or b""))), *headers.items()]
        try:
            self._writer.write(self._conn.send(h11.Request(method=method, target=path, headers=fields))
                               + self._conn.send(h11.Data(data=body or b"")) + self._conn.send(h11.EndOfMessage()))
            while True:
                event = self._conn.next_event()
                if event is h11.NEED_DATA:
                    self._conn.receive_data(await self._reader.read(READ_SIZE))
                elif isinstance(event, h11.Response):
                    self.status, self.headers = event.status_code, list(event.headers)
                    return
                elif not isinstance(event, h11.InformationalResponse):
                    raise WorkerUnreachable(f"unexpected {type(event).__name__} before the response")
        except (OSError, h11.ProtocolError) as exc:
            raise WorkerUnreachable(str(exc)) from exc

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: everything one read brings comes out as one chunk."""
        try:
            while True:
                data, ended = self._drain()
                if data:
                    yield data
                if ended:
                    return
                self._conn.receive_data(await self._reader.read(READ_SIZE))
        except (OSError, h11.ProtocolError) as exc:
            raise WorkerUnreachable(str(exc)) from exc

    def _drain(self) -> tuple[bytes, bool]:
        """The body bytes already received, and whether the body is complete."""
        parts = []
        while True:
            event = self._conn.next_event()
            if isinstance(event, h11.Data):
                parts.append(event.data)
            elif event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
                return b"".join(parts), event is not h11.NEED_DATA
            else:
                raise WorkerUnreachable(f"unexpected {type(event).__name__} in the response body")

    def close(self) -> None:
        """Closing the connection is how the worker learns that the client went away."""
        self._writer.close()


async def get_json(socket_path: Path, path: str) -> Any:
    """GET `path` from a worker and parse its JSON answer; WorkerUnreachable unless it answers 200."""
    response = await WorkerResponse.open(socket_path, path)
    try:
        body = b"".join([chunk async for chunk in response.chunks()])
    finally:
        response.close()
    if response.status != 200:
        raise WorkerUnreachable(f"the worker answered {response.status}")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise WorkerUnreachable(f"the worker sent invalid JSON: {exc}") from exc
