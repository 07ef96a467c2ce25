"""The server application: `create_app(settings)` builds everything; `run(settings)` serves it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from runtime.config import Settings
from runtime.http.errors import install_error_handlers
from runtime.protocol.requests import REQUEST_SCHEMAS
from runtime.server import state
from runtime.server.auth import check_bind
from runtime.server.metrics import Metrics
from runtime.server.middleware import (
    BodyLimitMiddleware,
    BrowserGuardMiddleware,
    RequestContextMiddleware,
    cors_origins,
)
from runtime.server.openapi import ERROR_RESPONSES, install_openapi
from runtime.server.routes import agents, aliases, federation, files, health, management, openai, playground
from runtime.server.upstreams import Upstreams
from runtime.store.keys import KeyStore
from runtime.store.registry import Registry
from runtime.store.responses import ResponseStore
from runtime.store.routes import RouteStore

EXPOSED_HEADERS = ["x-request-id", "openai-version", "openai-processing-ms"]


def create_app(settings: Settings, *, scheduler: Any = None, registry: Registry | None = None) -> FastAPI:
    """`scheduler` and `registry` are injectable for tests; by default they are built from settings."""
    check_bind(settings)
    settings.paths.ensure()
    registry = registry or Registry(settings.paths)
    if scheduler is None:
        from runtime.scheduler.scheduler import Scheduler

        scheduler = Scheduler(settings, registry)
    keys = KeyStore(settings.paths)
    stored_responses = ResponseStore(settings.paths, settings.response_ttl)
    metrics = Metrics()
    routes = RouteStore(settings.paths)
    upstreams = Upstreams(routes, metrics, settings.remote_check_interval)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await scheduler.start()
        await upstreams.start()
        try:
            yield
        finally:
            await upstreams.shutdown()
            await scheduler.shutdown()
            keys.close()
            stored_responses.close()
            routes.close()

    # The OpenAPI document is served by health's router, behind auth like every route but /health.
    app = FastAPI(title="stacklet", version=health.stacklet_version(), lifespan=lifespan, redirect_slashes=False,
                  openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.scheduler = scheduler
    app.state.keys = keys
    app.state.responses = stored_responses
    app.state.metrics = metrics
    app.state.routes = routes
    app.state.upstreams = upstreams
    app.state.stopping = threading.Event()  # set as the server begins to stop: streams that never end alone stop
    for router in (health.create_router(), openai.create_router(), aliases.create_router(), agents.create_router(),
                   management.create_router(), playground.create_router(), federation.create_router()):
        app.include_router(router)
    app.include_router(files.create_router(settings), responses=ERROR_RESPONSES)
    install_error_handlers(app)
    install_openapi(app, [*REQUEST_SCHEMAS.values(), *agents.AGENT_SCHEMAS, *federation.SCHEMAS])
    # Added innermost first: the request context wraps everything, the browser guard refuses foreign hosts
    # and origins, CORS answers the preflights it lets through before auth.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(CORSMiddleware, allow_origins=cors_origins(settings), allow_methods=["*"],
                       allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    app.add_middleware(BrowserGuardMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


def run(settings: Settings) -> None:
    """Serve in the foreground until interrupted (`python -m runtime`, `stacklet serve`).

    The server publishes its own state record, however it was started, so `stacklet status`,
    `stop` and `ps` find it.
    """
    from runtime.server.framing import http_protocol

    state.refuse_second_server(settings.paths)
    app = create_app(settings)
    pid = os.getpid()
    state.publish(settings.paths, pid, settings.host, settings.port)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it: exit through `finally`, not by the signal.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        _serve(app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10,
               http=http_protocol(settings), log_config=None)  # framing.py; logs through http/logs.py
    finally:
        state.retract(settings.paths, pid)


def _exit_on_signal(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


def _serve(app: FastAPI, **options: Any) -> None:
    """uvicorn.run, except that the app hears of a stop the moment it begins (SIGTERM, Ctrl-C): streams that
    only end on their own (pulls) end then, instead of holding the graceful shutdown to its timeout."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.stopping.set()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, **options))
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        server.run()
    if not server.started:
        sys.exit(3)  # as uvicorn.run: the server never started

