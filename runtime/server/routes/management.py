"""The management API under /v1/models: list with state, get, pull, configure, delete, load, unload.

Its list is a superset of OpenAI's, so an OpenAI client pointed at /v1 still lists models: listing and
getting take any key, everything that changes a model takes an admin key.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from runtime.config import Paths
from runtime.errors import InvalidRequestError
from runtime.http.bridge import from_thread
from runtime.http.jsonbody import parse_json_body
from runtime.http.sse import sse_response
from runtime.options import EngineOptions, parse_keep_alive
from runtime.protocol.common import ErrorResponse
from runtime.protocol.models import (
    ConfigureModelRequest,
    LoadModelRequest,
    ManagedModel,
    ManagedModelList,
    PullModelRequest,
)
from runtime.server.auth import require_admin_key, require_api_key
from runtime.server.imports import local_source
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.server.routes.openai import openai_model, say_token_ids, workers_by_model
from runtime.store.fit import check_policy
from runtime.store.registry import ModelRecord, check_name
from runtime.store.routes import Route
from runtime.store.store import Store, check_pull

LOADING_STATES = ("starting", "loading")
ADMIN_ONLY: dict[str, Any] = {
    "dependencies": [Depends(require_admin_key)],
    "responses": {403: {"model": ErrorResponse, "description": "The key is an inference key, not an admin key"}},
}


def create_router() -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["management"], dependencies=[Depends(require_api_key)],
                       responses=ERROR_RESPONSES)
    router.add_api_route("", list_models, methods=["GET"], operation_id="listManagedModels",
                         response_model=ManagedModelList)
    router.add_api_route("", pull_model, methods=["POST"], operation_id="pullModel",
                         openapi_extra=request_body(PullModelRequest), dependencies=ADMIN_ONLY["dependencies"],
                         responses={200: success_response(("text/event-stream", "application/json")),
                                    **ADMIN_ONLY["responses"]})
    router.add_api_route("/{model_id:path}/load", load_model, methods=["POST"], operation_id="loadModel",
                         response_model=ManagedModel, openapi_extra=request_body(LoadModelRequest), **ADMIN_ONLY)
    router.add_api_route("/{model_id:path}/unload", unload_model, methods=["POST"], operation_id="unloadModel",
                         **ADMIN_ONLY)
    router.add_api_route("/{model_id:path}", get_model, methods=["GET"], operation_id="getManagedModel",
                         response_model=ManagedModel)
    router.add_api_route("/{model_id:path}", configure_model, methods=["PATCH"], operation_id="configureModel",
                         response_model=ManagedModel, openapi_extra=request_body(ConfigureModelRequest),
                         **ADMIN_ONLY)
    router.add_api_route("/{model_id:path}", delete_model, methods=["DELETE"], operation_id="deleteModel",
                         **ADMIN_ONLY)
    return router


async def list_models(request: Request) -> ManagedModelList:
    workers, state = workers_by_model(request), request.app.state
    models = [managed_model(r, workers.get(r.name)) for r in state.registry.list()]
    return ManagedModelList(data=[say_token_ids(state, m) for m in models + [managed_route(r) for r in
                                                                           state.routes.routes()]])


async def get_model(request: Request, model_id: str) -> ManagedModel:
    state = request.app.state
    route = state.routes.route(model_id)
    if route is not None:
        return say_token_ids(state, managed_route(route))
    record = state.registry.get(model_id)
    return say_token_ids(state, managed_model(record, workers_by_model(request).get(record.name)))


async def load_model(request: Request, model_id: str) -> ManagedModel:
    record = request.app.state.registry.get(model_id)
    body = await read_json(request)
    keep_alive = body.pop("keep_alive", None)
    keep_alive = None if keep_alive is None else parse_keep_alive(keep_alive)
    options = EngineOptions.from_dict(body)
    await request.app.state.scheduler.load(record.name, options=options, keep_alive=keep_alive)
    return managed_model(record, workers_by_model(request).get(record.name))


async def configure_model(request: Request, model_id: str) -> ManagedModel:
    """Store options with the model; a loaded worker keeps the ones it has until it reloads."""
    record = request.app.state.registry.configure(model_id, await read_json(request))
    return managed_model(record, workers_by_model(request).get(record.name))


async def unload_model(request: Request, model_id: str) -> dict[str, Any]:
    record = request.app.state.registry.get(model_id)
    unloaded = await request.app.state.scheduler.unload(record.name)
    return {"id": record.name, "object": "model", "unloaded": unloaded}


async def delete_model(request: Request, model_id: str) -> dict[str, Any]:
    """Unload, unregister, and free the files no other model uses."""
    record = request.app.state.registry.get(model_id)
    await request.app.state.scheduler.unload(record.name)
    paths = request.app.state.settings.paths

    def remove() -> int:
        store = Store(paths)
        try:
            return store.remove(record.name)[1]
        finally:
            store.close()

    freed = await run_in_threadpool(remove)
    return {"id": record.name, "object": "model", "deleted": True, "freed_bytes": freed}


async def pull_model(request: Request) -> Response:
    """Pull in a thread and stream the store's progress events; the last one holds the model. With `dry_run`,
    the plan alone, as JSON."""
    pull = PullModelRequest.model_validate(await read_json(request))
    check_pull(pull.source, pull.kind, pull.revision, pull.files)
    check_policy(pull.quant)
    if pull.name is not None:
        check_name(pull.name)
    local = await run_in_threadpool(local_source, pull.source, request.app.state.settings.import_dirs)
    if pull.dry_run:
        if local is not None:
            raise InvalidRequestError("dry_run shows what a hub pull would download; the source is a local path.",
                                      param="dry_run")
        return JSONResponse(await run_in_threadpool(_plan, request.app.state.settings.paths, pull))
    return sse_response(_pull_events(request, pull, local))


def _plan(paths: Paths, pull: PullModelRequest) -> dict[str, Any]:
    store = Store(paths)
    try:
        return store.plan(pull.source, pull.name, pull.revision, pull.files, quant=pull.quant)
    finally:
        store.close()


async def _pull_events(request: Request, pull: PullModelRequest, local: Path | None) -> AsyncIterator[dict[str, Any]]:
    paths = request.app.state.settings.paths
    source = pull.source if local is None else str(local)
    gone, stopping = threading.Event(), request.app.state.stopping  # from_thread sets `gone` when the client goes

    def work(put: Callable[[Any], None]) -> None:  # stops with its client or the server; the partial stays
        store = Store(paths)
        try:
            put(store.pull(source, pull.name, pull.kind, pull.revision, pull.files, progress=put,
                           hub_only=local is None, cancelled=lambda: gone.is_set() or stopping.is_set(),
                           quant=pull.quant))
        finally:
            store.close()

    async for item in from_thread(work, gone):
        if isinstance(item, ModelRecord):
            yield {"event": "success", "model": managed_model(item, None).model_dump()}
            return
        yield item


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body; an empty body is an empty object."""
    body = await request.body()
    return parse_json_body(body) if body.strip() else {}


def managed_model(record: ModelRecord, worker: dict[str, Any] | None) -> ManagedModel:
    state = "available" if worker is None else "loading" if worker.get("state") in LOADING_STATES else "loaded"
    return ManagedModel(
        **openai_model(record, worker).model_dump(),
        state=state, kind=record.kind, engine=record.engine, size=record.size, source=record.source,
        files=[asdict(f) for f in record.files], options=record.options.as_dict(), keep_alive=record.keep_alive,
        worker=worker, expires_at=(worker or {}).get("expires_at"),
    )


def managed_route(route: Route) -> ManagedModel:
    """A route in the management list: its targets and fallbacks (live health: GET /v1/routes)."""
    meta = {"kind": "route", "targets": [asdict(t) for t in route.targets], "fallbacks": route.fallbacks}
    return ManagedModel(id=route.name, created=route.created, meta=meta, state="available", kind="route",
                        engine="router", size=0, source={"type": "route"}, files=[], options={})
