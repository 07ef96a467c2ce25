"""The remotes as the router sees them: configuration (from the database, re-read when it changes), the
upstream key, the models each serves, and health.

Health is passive (a connect error, a 5xx or a timeout cools the remote down, with backoff) and active
(every `check_interval` seconds each remote's /models is fetched; that also discovers its models). A
429 or 503 with Retry-After cools it down for that long, and an active check does not end that early.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from runtime.scheduler.worker_client import WorkerUnreachable
from runtime.server.metrics import Metrics
from runtime.server.remote_client import fetch_json
from runtime.store.registry import check_name
from runtime.store.routes import Remote, RouteStore

log = logging.getLogger("stacklet.upstreams")

BASE_COOLDOWN_S = 1.0
MAX_COOLDOWN_S = 60.0
MAX_RETRY_AFTER_S = 600
MAX_MODELS = 1000


@dataclass(eq=False)
class Upstream:
    remote: Remote
    key: str | None
    discovered: list[str] = field(default_factory=list)
    failures: int = 0
    down_until: float = 0.0  # passive or active failure, with backoff
    retry_after_until: float = 0.0  # the upstream asked us to wait (429/503 Retry-After)
    down_by_check: bool = False  # the cooldown came from an active check, which may also end it
    latency_s: float | None = None  # of the last active check
    last_error: str | None = None

    @property
    def name(self) -> str:
        return self.remote.name

    @property
    def models(self) -> list[str]:
        return self.remote.models if self.remote.models is not None else self.discovered

    def available_at(self) -> float:
        return max(self.down_until, self.retry_after_until)

    def healthy(self, now: float) -> bool:
        return self.available_at() <= now

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def url(self, path: str) -> str:
        """`path` under the API prefix (/v1/chat/completions) as a URL under the remote's base URL."""
        return self.remote.url + path.removeprefix("/v1")

    def describe(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "url": self.remote.url, "healthy": self.healthy(now),
                "retry_in_s": max(0.0, round(self.available_at() - now, 3)), "failures": self.failures,
                "latency_s": self.latency_s, "last_error": self.last_error, "models": self.models,
                "models_listed": self.remote.models is not None, "timeout": self.remote.timeout,
                "has_key": self.key is not None}


class Upstreams:
    def __init__(self, store: RouteStore, metrics: Metrics, check_interval: float) -> None:
        self.store = store
        self.metrics = metrics
        self.check_interval = check_interval
        self._by_name: dict[str, Upstream] = {}
        self._checker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.sync()
        self._checker = asyncio.create_task(self._check_forever())

    async def shutdown(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker

    def sync(self) -> dict[str, Upstream]:
        """The remotes in the database now; an unchanged remote keeps its health and discovered models."""
        current: dict[str, Upstream] = {}
        for remote in self.store.remotes():
            known = self._by_name.get(remote.name)
            if known is not None and known.remote == remote:
                current[remote.name] = known
            else:
                current[remote.name] = Upstream(remote, self.store.key(remote.name))
        self._by_name = current
        return current

    def get(self, name: str) -> Upstream | None:
        return self._by_name.get(name) or self.sync().get(name)

    def all(self) -> list[Upstream]:
        return list(self.sync().values())

    # Health

    def succeeded(self, upstream: Upstream) -> None:
        if upstream.failures or upstream.down_until:
            log.info("remote %s is healthy again", upstream.name)
        upstream.failures, upstream.down_until, upstream.last_error = 0, 0.0, None
        upstream.down_by_check = False
        self.metrics.remote_healthy[upstream.name] = 1

    def failed(self, upstream: Upstream, reason: str, retry_after: float | None = None, *,
               by_check: bool = False) -> None:
        """Cool the remote down: for Retry-After when it sent one, else with exponential backoff."""
        now = time.monotonic()
        upstream.last_error = reason
        if retry_after is not None:
            upstream.retry_after_until = max(upstream.retry_after_until, now + retry_after)
        else:
            upstream.down_by_check = by_check
            upstream.failures += 1
            cooldown = min(BASE_COOLDOWN_S * 2 ** (upstream.failures - 1), MAX_COOLDOWN_S)
            upstream.down_until = now + cooldown
        log.warning("remote %s failed (%s); cooling down %.1fs", upstream.name, reason,
                    upstream.available_at() - now)
        self.metrics.remote_healthy[upstream.name] = 0

    async def check(self, upstream: Upstream) -> None:
        """One active check: the remote's /models answers, and names the models it serves. A passing check
        ends a cooldown that checks began, not one that failed requests began (those run their course)."""
        start = time.monotonic()
        try:
            listing = await fetch_json(upstream.url("/v1/models"), upstream.headers())
        except WorkerUnreachable as exc:
            self.failed(upstream, f"health check: {exc}", by_check=True)
            return
        upstream.latency_s = round(time.monotonic() - start, 4)
        upstream.discovered = model_ids(listing)
        if upstream.down_by_check or not upstream.failures:
            self.succeeded(upstream)

    async def _check_forever(self) -> None:
        while True:
            upstreams = self.all()
            await asyncio.gather(*(self.check(u) for u in upstreams), return_exceptions=True)
            await asyncio.sleep(self.check_interval)


def model_ids(listing: Any) -> list[str]:
    """The model ids of an OpenAI /models answer that could name a model here (bounded, odd entries skipped)."""
    data = listing.get("data") if isinstance(listing, dict) else None
    ids: list[str] = []
    for entry in data if isinstance(data, list) else []:
        model = entry.get("id") if isinstance(entry, dict) else None
        with contextlib.suppress(Exception):
            ids.append(check_name(model))
        if len(ids) >= MAX_MODELS:
            break
    return ids


def retry_after(value: bytes | None) -> float | None:
    """Seconds from a Retry-After header (delta seconds or an HTTP date), bounded; None when absent or odd."""
    if not value:
        return None
    text = value.decode("latin-1").strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(text).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 1.0), MAX_RETRY_AFTER_S)
