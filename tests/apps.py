"""Worker routers on a shared engine, in an app without a lifespan (so session-wide engines stay open):
what a worker serves, for tests that drive one capability without a worker process."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from runtime.config import Settings
from runtime.http.errors import install_error_handlers
from runtime.server.routes import files
from runtime.spec import WorkerLimits
from runtime.worker import audio, images, rerank, text, tokenize
from runtime.worker.stats import Stats


def text_app(engine: Any, limits: WorkerLimits | None = None) -> FastAPI:
    return _app(text.create_router(engine, Stats(), limits))


def rerank_app(engine: Any) -> FastAPI:
    return _app(rerank.create_router(engine, Stats()))


def tokenize_app(engine: Any) -> FastAPI:
    return _app(tokenize.create_router(engine, Stats()))


def audio_app(engine: Any, limits: WorkerLimits | None = None) -> FastAPI:
    return _app(audio.create_router(engine, Stats(), limits or WorkerLimits()))


def images_app(engine: Any, settings: Settings) -> FastAPI:
    """The image routes plus the server's file route, in one app, sharing the settings' image dir."""
    limits = WorkerLimits(settings.max_body_bytes, settings.paths.images, settings.image_url_ttl)
    app = _app(images.create_router(engine, Stats(), limits))
    app.state.settings = settings
    app.include_router(files.create_router(settings))
    return app


def _app(router: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    return app
