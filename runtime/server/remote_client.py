"""The server's client for remote upstreams: the worker client's h11 relay over TCP (TLS for https), with
a deadline on connecting, on the response head and on every read, so a stalled upstream fails over.

Byte for byte like a local worker: the same `chunks()`, the same WorkerUnreachable on a broken stream.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from runtime.scheduler.worker_client import WorkerResponse, WorkerUnreachable

CONNECT_TIMEOUT_S = 5.0
CHECK_TIMEOUT_S = 5.0
MAX_JSON_BYTES = 1 << 20  # an upstream's /models answer
_TIMEOUT = getattr(asyncio, "timeout", None)


class UpstreamTimeout(WorkerUnreachable):
    """The upstream did not answer in time."""


class UpstreamBroken(WorkerUnreachable):
    """A remote's answer broke off after the client got its first bytes; the message is for the client."""


class _TimedReader:
    """A StreamReader whose every read has a deadline (a stalled upstream must not hold a request forever)."""

    def __init__(self, reader: asyncio.StreamReader, timeout: float) -> None:
        self._reader = reader
        self.timeout = timeout

    async def read(self, size: int) -> bytes:
        try:
            if _TIMEOUT is None:  # Python 3.10
                return await asyncio.wait_for(self._reader.read(size), self.timeout)
            async with _TIMEOUT(self.timeout):  # no task per read: every token of a stream passes here
                return await self._reader.read(size)
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"no data for {self.timeout:g}s") from None


class RemoteResponse(WorkerResponse):
    @classmethod
    async def open_url(cls, url: str, body: bytes | None, headers: dict[str, str],
                       timeout: float) -> RemoteResponse:
        """Send the request to `url` (POST with a body, else GET) and wait for the status line and headers."""
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, port, ssl=_tls() if secure else None),
                min(CONNECT_TIMEOUT_S, timeout))
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"no connection within {min(CONNECT_TIMEOUT_S, timeout):g}s") from None
        except (OSError, ssl.SSLError) as exc:
            raise WorkerUnreachable(f"cannot connect: {exc.strerror or exc}") from None
        response = cls(_TimedReader(reader, timeout), writer)  # type: ignore[arg-type]
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            await response._request(target, body, headers, host=parts.netloc)
        except BaseException:
            response.close()
            raise
        return response

    async def read_body(self, limit: int) -> bytes:
        """The whole body, at most `limit` bytes (WorkerUnreachable past it)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                raise WorkerUnreachable(f"the answer is larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)


@cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every upstream (loading the CA store per request costs milliseconds)."""
    return ssl.create_default_context()


async def fetch_json(url: str, headers: dict[str, str], timeout: float = CHECK_TIMEOUT_S) -> Any:
    """GET `url` and parse its JSON answer within `timeout` and MAX_JSON_BYTES; WorkerUnreachable unless 200."""
    async def fetch() -> Any:
        response = await RemoteResponse.open_url(url, None, headers, timeout)
        try:
            body = await response.read_body(MAX_JSON_BYTES)
        finally:
            response.close()
        if response.status != 200:
            raise WorkerUnreachable(f"it answered HTTP {response.status}")
        try:
            return json.loads(body)
        except ValueError:
            raise WorkerUnreachable("it answered with invalid JSON") from None

    try:
        return await asyncio.wait_for(fetch(), timeout)
    except asyncio.TimeoutError:
        raise UpstreamTimeout(f"no answer within {timeout:g}s") from None
