"""The OpenAI endpoints: validate the request here, take a lease on the model, relay the raw body.

One generic handler serves every POST endpoint of runtime/spec.py's table, under both `/v1-openai`
and `/v1`. The worker parses the body again; validating here means bad requests never wake a model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from runtime.errors import InvalidRequestError
from runtime.http.errors import validation_error
from runtime.http.jsonbody import parse_json_body
from runtime.http.multipart import form_to_dict
from runtime.options import parse_keep_alive
from runtime.protocol.common import OpenAIRequest
from runtime.protocol.models import Model, ModelList
from runtime.protocol.openai_ids import decoded_inputs, vocabulary
from runtime.protocol.requests import REQUEST_SCHEMAS
from runtime.server.auth import require_api_key
from runtime.server.balancer import prefix_key
from runtime.server.dispatch import HOPS_HEADER, MAX_HOPS, Dispatch
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.server.proxy import ProxyResponse, forward_headers
from runtime.server.resolve import dispatch
from runtime.spec import API_PREFIXES, ENDPOINTS, WORKER_PREFIX, Endpoint, model_capabilities, served_apis
from runtime.store.registry import ModelRecord
from runtime.store.routes import Route

log = logging.getLogger("stacklet")
ModelT = TypeVar("ModelT", bound=Model)

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
OUR_FIELDS = {"keep_alive"}  # stacklet extensions that strict mode still accepts
META_KEYS = ("context_length", "embedding_length", "voices", "sizes", "languages", "sample_rate", "parallel")


def create_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    for prefix in API_PREFIXES:
        suffix = "" if prefix == "/v1-openai" else "V1"
        for endpoint in ENDPOINTS:
            router.add_api_route(
                prefix + endpoint.path, _handler(endpoint, prefix), methods=["POST"],
                operation_id=endpoint.operation_id + suffix, tags=["openai"],
                openapi_extra=request_body(REQUEST_SCHEMAS[endpoint.capability], multipart=endpoint.multipart),
                responses={200: success_response(endpoint.media_types)},
            )
    router.add_api_route("/v1-openai/models", list_models, methods=["GET"], operation_id="listModels",
                         tags=["openai"], response_model=ModelList)
    router.add_api_route("/v1-openai/models/{model_id:path}", retrieve_model, methods=["GET"],
                         operation_id="retrieveModel", tags=["openai"], response_model=Model)
    return router


def _handler(endpoint: Endpoint, prefix: str) -> Any:
    async def handle(request: Request) -> Response:
        body = await request.body()
        payload, content_type = await _parse(request, body, endpoint)
        keep_alive = (payload.model_extra or {}).get("keep_alive")
        keep = None if keep_alive is None else parse_keep_alive(keep_alive)
        target = resolve_model(request, payload.model, endpoint, keep,
                               lambda: prefix_key(getattr(payload, "messages", None), getattr(payload, "prompt", None)))
        if endpoint.capability == "embeddings":
            body = await _openai_ids_as_text(request.app.state, payload, body)
        # The worker builds absolute URLs (images) from the public base URL the client called.
        headers = forward_headers(content_type, str(request.base_url).rstrip("/") + prefix)
        return ProxyResponse(target, WORKER_PREFIX + endpoint.path, body, headers)

    handle.__name__ = endpoint.operation_id
    return handle


async def _openai_ids_as_text(state: Any, payload: Any, body: bytes) -> bytes:
    """The body with OpenAI's cl100k_base ids (LangChain's OpenAIEmbeddings sends them) turned into their text,
    for a name that takes such ids; otherwise as it came."""
    inputs = payload.inputs()
    if all(isinstance(item, str) for item in inputs) or token_ids(state, payload.model) != "cl100k_base":
        return body
    texts = await asyncio.to_thread(decoded_inputs, inputs)  # the first call loads the vocabulary (~0.5 s)
    return json.dumps({**parse_json_body(body), "input": texts}).encode()


def token_ids(state: Any, name: str) -> str:
    """How `name` reads integer inputs: its route's setting or a model's, else by name (openai_ids.vocabulary).
    A route that says nothing reads them as its first local target does."""
    route = state.routes.route(name)
    if route is not None and (route.token_ids is not None or vocabulary(name, None) != "model"):
        return vocabulary(name, route.token_ids)
    local = [name] if route is None else [t.target for t in route.targets] + route.fallbacks
    record = next((r for r in map(state.registry.find, local) if r is not None), None)
    declared = None if record is None else state.settings.engine.merge(record.options).token_ids
    return vocabulary(name if record is None else record.name, declared)


async def _parse(request: Request, body: bytes, endpoint: Endpoint) -> tuple[OpenAIRequest, str | None]:
    """The validated request, and the content type to forward it with."""
    schema = REQUEST_SCHEMAS[endpoint.capability]
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if endpoint.multipart and content_type in FORM_TYPES:
        async with request.form() as form:  # parses the buffered body; closes the spooled files after
            return validate_request(request, schema, form_to_dict(form)), request.headers.get("content-type")
    data = parse_json_body(body)
    # A JSON body is JSON whatever the client labelled it (curl -d sends a form type); say so downstream.
    return validate_request(request, schema, data), "application/json"


def validate_request(request: Request, schema: type[OpenAIRequest], data: dict[str, Any]) -> OpenAIRequest:
    try:
        payload = schema.model_validate(data)
    except ValidationError as exc:
        raise validation_error(list(exc.errors())) from None
    validate_semantics = getattr(payload, "validate_semantics", None)
    if validate_semantics is not None:
        validate_semantics()
    unknown = [name for name in payload.unknown_fields() if name not in OUR_FIELDS]
    if unknown and request.app.state.settings.strict_params:
        noun = "argument" if len(unknown) == 1 else "arguments"
        raise InvalidRequestError(f"Unrecognized request {noun} supplied: {', '.join(unknown)}")
    if unknown:
        log.debug("ignoring unknown request arguments: %s", ", ".join(unknown))
    return payload


def resolve_model(request: Request, name: str, endpoint: Endpoint, keep_alive: float | None = None,
                  prefix: Callable[[], str | None] = lambda: None) -> Dispatch:
    """The targets that serve `name` (a route, a local model or `remote:model`) on `endpoint`, in order."""
    hops = request.headers.get(HOPS_HEADER, "0")
    return dispatch(request.app.state, name, endpoint.capability, endpoint.path, keep_alive, prefix,
                    int(hops) if hops.isdigit() and len(hops) < 4 else MAX_HOPS)


async def list_models(request: Request) -> ModelList:
    workers = workers_by_model(request)
    state = request.app.state
    models = [openai_model(r, workers.get(r.name)) for r in state.registry.list()]
    return ModelList(data=[say_token_ids(state, m) for m in models + [route_model(r) for r in state.routes.routes()]])


async def retrieve_model(request: Request, model_id: str) -> Model:
    route = request.app.state.routes.route(model_id)
    if route is not None:
        return say_token_ids(request.app.state, route_model(route))
    record = request.app.state.registry.get(model_id)
    return say_token_ids(request.app.state, openai_model(record, workers_by_model(request).get(record.name)))


def say_token_ids(state: Any, model: ModelT) -> ModelT:
    """Embedding models and routes say how they read integer inputs (`stacklet test embeddings` checks it)."""
    if model.meta.get("kind") == "route" or "embeddings" in model.meta.get("capabilities", []):
        model.meta["token_ids"] = token_ids(state, model.id)
    return model


def route_model(route: Route) -> Model:
    """A route, listed like a model (the management API adds its targets)."""
    return Model(id=route.name, created=route.created, meta={"kind": "route"})


def workers_by_model(request: Request) -> dict[str, dict[str, Any]]:
    return {worker["model"]: worker for worker in request.app.state.scheduler.status()}


def openai_model(record: ModelRecord, worker: dict[str, Any] | None) -> Model:
    facts = {**record.metadata, **((worker or {}).get("engine") or {})}
    capabilities = model_capabilities(record.kind, record.metadata)
    meta = {"kind": record.kind, "capabilities": sorted(capabilities), "apis": served_apis(capabilities)}
    meta.update({key: facts[key] for key in META_KEYS if key in facts})
    return Model(id=record.name, created=record.created, meta=meta)
