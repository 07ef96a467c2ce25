"""One request's way to a target: try the candidates in the balancer's order until one answers.

A candidate is a local model (a lease on its worker) or a model on a remote upstream (an h11 request
over TCP). Nothing reaches the client until a target has answered with its status, headers and first
bytes, so any failure before that (no worker, a connect error, a 5xx, a 429, a timeout, a drop) moves
on to the next candidate. What comes back is a `Reply` the relays stream from as from a worker.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from runtime.errors import ServiceUnavailableError, StackletError, WorkerError
from runtime.scheduler.worker_client import WorkerResponse, WorkerUnreachable
from runtime.server.balancer import Candidate, order
from runtime.server.metrics import TargetStats
from runtime.server.proxy import WORKER_GONE
from runtime.server.remote_client import RemoteResponse, UpstreamBroken
from runtime.server.rewrite import ModelRewrite, rewrite_request_model
from runtime.server.upstreams import Upstreams, retry_after

MAX_SIZED_BODY = 256 << 20  # a sized (JSON) answer is held whole before it is sent
MAX_ERROR_BODY = 64 << 10
REMOTE_HEADERS = frozenset({b"content-type", b"content-length", b"cache-control", b"x-accel-buffering",
                            b"content-disposition"})
RETRYABLE = frozenset({429, 503})
HOPS_HEADER = "x-stacklet-hops"  # how many stacklet routers a request has passed: two nodes' routes can loop
MAX_HOPS = 4


class Reply:
    """A target's answer with its first bytes already read: status, headers, and the body as chunks."""

    def __init__(self, response: WorkerResponse, head: bytes, rest: AsyncIterator[bytes] | None,
                 headers: list[tuple[bytes, bytes]], on_broken: Any = None) -> None:
        self.status = response.status
        self.headers = headers
        self._response = response
        self._head = head
        self._rest = rest
        self._on_broken = on_broken

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._head:
            yield self._head
        if self._rest is None:
            return
        try:
            async for chunk in self._rest:
                yield chunk
        except WorkerUnreachable as exc:
            if self._on_broken is None:
                raise
            self._on_broken(str(exc))
            raise UpstreamBroken("The remote upstream stopped answering mid-stream. Retry the request.") from exc

    def close(self) -> None:
        self._response.close()


class Dispatch:
    """Implements the relays' Lease: `open` a target (with failover), `release` it once the answer is out."""

    def __init__(self, state: Any, primary: list[Candidate], fallbacks: list[Candidate], asked: str,
                 keep_alive: float | None, prefix: Callable[[], str | None], hops: int = 0) -> None:
        self.scheduler = state.scheduler
        self.upstreams: Upstreams = state.upstreams
        self.stats = state.metrics.targets
        self.primary, self.fallbacks = primary, fallbacks
        self.candidates: list[Candidate] = []
        self.asked = asked
        self.keep_alive = keep_alive
        self.prefix = prefix
        self.hops = hops
        self._release: Any = None

    async def open(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        # Ordered here, and the first target counted in flight before any await: concurrent requests see it.
        self.candidates = order(self.primary, self.fallbacks, self.stats.__getitem__, self.prefix, time.monotonic())
        failure: StackletError | None = None
        for index, candidate in enumerate(self.candidates):
            last = index == len(self.candidates) - 1
            stats = self.stats[candidate.target]
            stats.in_flight += 1
            start = time.monotonic()
            try:
                if candidate.upstream is None:
                    reply, release = await self._open_local(candidate, path, body, headers, last)
                else:
                    reply, release = await self._open_remote(candidate, path, body, headers)
            except StackletError as exc:
                stats.finished(False, time.monotonic() - start)
                failure = exc
                continue
            except BaseException:
                stats.finished(False, time.monotonic() - start)
                raise
            self._release = _Finish(release, stats, start)
            return reply
        raise self._no_target(failure)

    def release(self, ok: bool) -> None:
        if self._release is not None:
            self._release(ok)
            self._release = None

    async def _open_local(self, candidate: Candidate, path: str, body: bytes, headers: dict[str, str],
                          last: bool) -> tuple[Reply, Any]:
        lease = self.scheduler.lease(candidate.model, self.keep_alive)
        socket_path = await lease.acquire()
        try:
            response = await WorkerResponse.open(socket_path, path, body, headers)
            reply = await _prefetch(response, list(response.headers), None)
        except WorkerUnreachable:
            lease.release(ok=False)
            raise WorkerError(WORKER_GONE) from None
        except BaseException:
            lease.release(ok=False)
            raise
        if reply.status >= 500 and not last:
            reply.close()
            lease.release(ok=False)
            raise WorkerError(WORKER_GONE)
        return reply, lease.release

    async def _open_remote(self, candidate: Candidate, path: str, body: bytes,
                           headers: dict[str, str]) -> tuple[Reply, Any]:
        upstream = candidate.upstream
        assert upstream is not None
        if not upstream.healthy(time.monotonic()):  # cooled down by an earlier candidate of this request
            raise self._unavailable(candidate, "is cooling down")
        content_type = headers.get("Content-Type")
        sent = rewrite_request_model(body, content_type, candidate.model)
        fields = {**({"Content-Type": content_type} if content_type else {}), HOPS_HEADER: str(self.hops + 1),
                  **upstream.headers()}
        rewrite = ModelRewrite(self.asked) if candidate.model != self.asked else None
        try:
            response = await RemoteResponse.open_url(upstream.url(path), sent, fields, upstream.remote.timeout)
        except WorkerUnreachable as exc:
            self.upstreams.failed(upstream, str(exc))
            raise self._unavailable(candidate, "does not answer") from None
        try:
            await self._check_status(candidate, response)
            kept = [(k, v) for k, v in response.headers if k in REMOTE_HEADERS]
            reply = await _prefetch(response, kept, rewrite,
                                    on_broken=lambda reason: self.upstreams.failed(upstream, reason))
        except WorkerUnreachable as exc:
            response.close()
            self.upstreams.failed(upstream, str(exc))
            raise self._unavailable(candidate, "broke off its answer") from None
        except BaseException:
            response.close()
            raise

        def release(ok: bool) -> None:
            if ok:
                self.upstreams.succeeded(upstream)

        return reply, release

    async def _check_status(self, candidate: Candidate, response: RemoteResponse) -> None:
        """A 5xx or 429 cools the remote down (for its Retry-After when it sends one) and fails over."""
        upstream = candidate.upstream
        assert upstream is not None
        if response.status < 500 and response.status not in RETRYABLE:
            return
        wait = retry_after(response.header(b"retry-after")) if response.status in RETRYABLE else None
        self.upstreams.failed(upstream, f"HTTP {response.status}", wait)
        response.close()
        raise self._unavailable(candidate, f"answered HTTP {response.status}")

    def _unavailable(self, candidate: Candidate, what: str) -> ServiceUnavailableError:
        return ServiceUnavailableError(f"The remote for `{candidate.target}` {what}.", code="upstream_unavailable")

    def _no_target(self, failure: StackletError | None) -> StackletError:
        """The last candidate's own error; a remote's says when the first cooled-down target is back."""
        if failure is None:
            failure = ServiceUnavailableError(f"Every target of `{self.asked}` is cooling down after failures. "
                                              "Retry shortly.", code="upstream_unavailable")
        if isinstance(failure, ServiceUnavailableError) and failure.code == "upstream_unavailable":
            now = time.monotonic()
            waits = [c.upstream.available_at() - now for c in self.primary + self.fallbacks if c.upstream is not None]
            failure.retry_after = max(1, math.ceil(min(waits, default=1)))
            if len(self.candidates) > 1:
                failure.message = f"No target of `{self.asked}` could answer: {failure.message} Retry shortly."
        return failure


class _Finish:
    def __init__(self, release: Any, stats: TargetStats, start: float) -> None:
        self.release, self.stats, self.start = release, stats, start

    def __call__(self, ok: bool) -> None:
        self.release(ok)
        self.stats.finished(ok, time.monotonic() - self.start)


async def _prefetch(response: WorkerResponse, headers: list[tuple[bytes, bytes]], rewrite: ModelRewrite | None,
                    on_broken: Any = None) -> Reply:
    """Read the first chunk (a sized body: all of it) before anything is sent, so a failure can still fail over."""
    chunks = response.chunks()
    if response.header(b"content-length") is not None:
        limit = MAX_SIZED_BODY if response.status < 400 else MAX_ERROR_BODY
        body = b"".join([chunk async for chunk in _bounded(chunks, limit)])
        if rewrite is not None and response.status < 400:
            body = rewrite.whole(body)
        headers = [(k, v) for k, v in headers if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        return Reply(response, body, None, headers)
    head = await anext(chunks, b"")
    if rewrite is not None and (response.header(b"content-type") or b"").startswith(b"text/event-stream"):
        return Reply(response, b"", rewrite.stream(head, chunks), headers, on_broken)
    return Reply(response, head, chunks, headers, on_broken)


async def _bounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise WorkerUnreachable(f"the answer is larger than {limit} bytes")
        yield chunk
