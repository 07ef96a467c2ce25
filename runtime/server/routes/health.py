"""Liveness (no auth), Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from runtime.server.auth import require_api_key
from runtime.server.openapi import ERROR_RESPONSES

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def stacklet_version() -> str:
    try:
        return version("stacklet")
    except PackageNotFoundError:
        return "unknown"


def create_router() -> APIRouter:
    router = APIRouter(tags=["server"])
    router.add_api_route("/health", health, methods=["GET"], operation_id="health")
    router.add_api_route(
        "/metrics", metrics, methods=["GET"], operation_id="metrics", dependencies=[Depends(require_api_key)],
        responses={401: ERROR_RESPONSES[401], 200: {"content": {PROMETHEUS_TYPE: {}}}},
        response_class=PlainTextResponse,
    )
    router.add_api_route("/openapi.json", openapi_document, methods=["GET"], include_in_schema=False,
                         dependencies=[Depends(require_api_key)])
    return router


async def health(request: Request) -> dict[str, object]:
    loaded = len(request.app.state.scheduler.status())
    return {"status": "ok", "version": stacklet_version(), "models_loaded": loaded}


async def openapi_document(request: Request) -> dict[str, Any]:
    return request.app.openapi()


async def metrics(request: Request) -> PlainTextResponse:
    scheduler = request.app.state.scheduler
    text = request.app.state.metrics.render(scheduler.status(), scheduler.metrics())
    return PlainTextResponse(text, media_type=PROMETHEUS_TYPE)
