"""The worker's FastAPI app: the capability routers for one engine, plus GET /status."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.http.errors import install_error_handlers
from runtime.spec import KINDS, ModelSpec
from runtime.worker.stats import Stats

# Which router serves which capabilities: each kind's capabilities are served by one of them, and the token
# routes by their own (every llama kind has them).
TOKENS = frozenset({"tokenize", "detokenize"})
TEXT = (KINDS["llm"].capabilities | KINDS["embedding"].capabilities) - TOKENS
RERANK = KINDS["rerank"].capabilities - TOKENS
IMAGES = KINDS["image"].capabilities
AUDIO = KINDS["speech"].capabilities | KINDS["transcription"].capabilities


class ActiveRequests:
    """Counts requests in flight (everything but /status) for the scheduler's view."""

    def __init__(self, app: ASGIApp, stats: Stats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/status":
            await self.app(scope, receive, send)
            return
        self.stats.track(1)
        try:
            await self.app(scope, receive, send)
        finally:
            self.stats.track(-1)


def create_worker_app(engine: Any, spec: ModelSpec, socket_path: Path | None = None) -> FastAPI:
    """The app for one loaded engine; `spec` brings the limits it enforces. `socket_path` is removed at
    shutdown (uvicorn leaves it, and may end the process by re-raising SIGTERM right after, so this is the
    last place that runs)."""
    stats = Stats()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)
    capabilities = frozenset(engine.capabilities)
    if capabilities & TEXT:
        from runtime.worker import text

        app.include_router(text.create_router(engine, stats, spec.limits))
    if capabilities & RERANK:
        from runtime.worker import rerank

        app.include_router(rerank.create_router(engine, stats))
    if capabilities & TOKENS:
        from runtime.worker import tokenize

        app.include_router(tokenize.create_router(engine, stats))
    if capabilities & IMAGES:
        from runtime.worker import images

        app.include_router(images.create_router(engine, stats, spec.limits))
    if capabilities & AUDIO:
        from runtime.worker import audio

        app.include_router(audio.create_router(engine, stats, spec.limits))

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {"pid": os.getpid(), "capabilities": sorted(capabilities), "info": engine.info(),
                **stats.snapshot()}

    app.add_middleware(ActiveRequests, stats=stats)
    return app
