"""The management API under /v1/models: list with state, get, pull, configure, delete, load, unload.

Its list is a superset of OpenAI's, so an OpenAI client pointed at /v1 still lists models.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from runtime.errors import InvalidRequestError
from runtime.http.bridge import from_thread
from runtime.http.errors import JSON_PARSE_MESSAGE
from runtime.http.sse import sse_response
from runtime.options import EngineOptions, parse_keep_alive
from runtime.protocol.models import (
    ConfigureModelRequest,
    LoadModelRequest,
    ManagedModel,
    ManagedModelList,
    PullModelRequest,
)
from runtime.server.auth import require_api_key
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.server.routes.openai import openai_model, workers_by_model
from runtime.store.registry import ModelRecord
from runtime.store.store import Store

LOADING_STATES = ("starting", "loading")


def create_router() -> APIRouter:
    router = APIRouter(prefix="/v1/models", tags=["management"], dependencies=[Depends(require_api_key)],
                       responses=ERROR_RESPONSES)
    router.add_api_route("", list_models, methods=["GET"], operation_id="listManagedModels",
                         response_model=ManagedModelList)
    router.add_api_route("", pull_model, methods=["POST"], operation_id="pullModel",
                         openapi_extra=request_body(PullModelRequest),
                         responses={200: success_response(("text/event-stream",))})
    router.add_api_route("/{model_id:path}/load", load_model, methods=["POST"], operation_id="loadModel",
                         response_model=ManagedModel, openapi_extra=request_body(LoadModelRequest))
    router.add_api_route("/{model_id:path}/unload", unload_model, methods=["POST"], operation_id="unloadModel")
    router.add_api_route("/{model_id:path}", get_model, methods=["GET"], operation_id="getManagedModel",
                         response_model=ManagedModel)
    router.add_api_route("/{model_id:path}", configure_model, methods=["PATCH"], operation_id="configureModel",
                         response_model=ManagedModel, openapi_extra=request_body(ConfigureModelRequest))
    router.add_api_route("/{model_id:path}", delete_model, methods=["DELETE"], operation_id="deleteModel")
    return router


async def list_models(request: Request) -> ManagedModelList:
    workers = workers_by_model(request)
    return ManagedModelList(data=[managed_model(r, workers.get(r.name)) for r in request.app.state.registry.list()])


async def get_model(request: Request, model_id: str) -> ManagedModel:
    record = request.app.state.registry.get(model_id)
    return managed_model(record, workers_by_model(request).get(record.name))


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


async def pull_model(request: Request) -> StreamingResponse:
    """Pull in a thread and stream the store's progress events; the last one holds the model."""
    pull = PullModelRequest.model_validate(await read_json(request))
    return sse_response(_pull_events(request, pull))


async def _pull_events(request: Request, pull: PullModelRequest) -> AsyncIterator[dict[str, Any]]:
    paths = request.app.state.settings.paths

    def work(put: Callable[[Any], None]) -> None:  # a client that goes away does not stop the download
        store = Store(paths)
        try:
            put(store.pull(pull.source, pull.name, pull.kind, pull.revision, pull.files, progress=put))
        finally:
            store.close()

    async for item in from_thread(work, threading.Event()):
        if isinstance(item, ModelRecord):
            yield {"event": "success", "model": managed_model(item, None).model_dump()}
            return
        yield item


async def read_json(request: Request) -> dict[str, Any]:
    """A JSON object body; an empty body is an empty object."""
    body = await request.body()
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidRequestError(JSON_PARSE_MESSAGE) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(JSON_PARSE_MESSAGE)
    return data


def managed_model(record: ModelRecord, worker: dict[str, Any] | None) -> ManagedModel:
    state = "available" if worker is None else "loading" if worker.get("state") in LOADING_STATES else "loaded"
    return ManagedModel(
        **openai_model(record, worker).model_dump(),
        state=state, kind=record.kind, engine=record.engine, size=record.size, source=record.source,
        files=[asdict(f) for f in record.files], options=record.options.as_dict(), keep_alive=record.keep_alive,
        worker=worker, expires_at=(worker or {}).get("expires_at"),
    )
