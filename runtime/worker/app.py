"""The worker's FastAPI app: the capability routers for one engine, plus GET /status."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from runtime.server.errors import install_error_handlers
from runtime.worker import stats

TEXT = frozenset({"chat", "completions", "embeddings"})
IMAGES = frozenset({"images", "image_edits"})
AUDIO = frozenset({"speech", "transcriptions", "translations"})


class ActiveRequests:
    """Counts requests in flight (everything but /status) for the scheduler's view."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/status":
            await self.app(scope, receive, send)
            return
        stats.track(1)
        try:
            await self.app(scope, receive, send)
        finally:
            stats.track(-1)


def create_worker_app(engine: Any, socket_path: Path | None = None) -> FastAPI:
    """`socket_path` is removed at shutdown (uvicorn leaves it, and may end the process by re-raising
    SIGTERM right after, so this is the last place that runs)."""

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

        app.include_router(text.create_router(engine))
    if capabilities & IMAGES:
        from runtime.worker import images

        app.include_router(images.create_router(engine))
    if capabilities & AUDIO:
        from runtime.worker import audio

        app.include_router(audio.create_router(engine))

    @app.get("/status")
    async def status() -> dict[str, Any]:
        return {"pid": os.getpid(), "capabilities": sorted(capabilities), "info": engine.info(),
                **stats.snapshot()}

    app.add_middleware(ActiveRequests)
    return app
