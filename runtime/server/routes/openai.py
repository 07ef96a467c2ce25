"""The OpenAI endpoints: validate the request here, then hand the raw body to the scheduler.

One generic handler serves every POST endpoint, under both `/v1-openai` and `/v1`. The worker
parses the body again; validating here means bad requests never wake a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from runtime.engines.base import KIND_CAPABILITIES
from runtime.errors import InvalidRequestError, ModelNotFoundError
from runtime.protocol.audio import CreateSpeechRequest, CreateTranscriptionRequest, CreateTranslationRequest
from runtime.protocol.chat import CreateChatCompletionRequest
from runtime.protocol.common import OpenAIRequest
from runtime.protocol.completions import CreateCompletionRequest
from runtime.protocol.embeddings import CreateEmbeddingRequest
from runtime.protocol.images import CreateImageEditRequest, CreateImageRequest
from runtime.protocol.models import Model, ModelList
from runtime.protocol.multipart import form_to_dict
from runtime.scheduler.keepalive import parse_keep_alive
from runtime.scheduler.scheduler import BASE_URL_HEADER
from runtime.server.auth import require_api_key
from runtime.server.errors import JSON_PARSE_MESSAGE, validation_error
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.store.registry import ModelRecord

log = logging.getLogger("stacklet")

PREFIXES = ("/v1-openai", "/v1")
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
OUR_FIELDS = {"keep_alive"}  # stacklet extensions that strict mode still accepts
META_KEYS = ("context_length", "embedding_length", "voices", "sizes", "languages", "sample_rate", "parallel")


@dataclass(frozen=True)
class Endpoint:
    path: str
    schema: type[OpenAIRequest]
    capability: str
    operation_id: str
    multipart: bool = False
    media_types: tuple[str, ...] = ("application/json", "text/event-stream")


ENDPOINTS = (
    Endpoint("/chat/completions", CreateChatCompletionRequest, "chat", "createChatCompletion"),
    Endpoint("/completions", CreateCompletionRequest, "completions", "createCompletion"),
    Endpoint("/embeddings", CreateEmbeddingRequest, "embeddings", "createEmbedding"),
    Endpoint("/images/generations", CreateImageRequest, "images", "createImage"),
    Endpoint("/images/edits", CreateImageEditRequest, "image_edits", "createImageEdit", multipart=True),
    Endpoint("/audio/speech", CreateSpeechRequest, "speech", "createSpeech",
             media_types=("application/octet-stream", "audio/*", "text/event-stream")),
    Endpoint("/audio/transcriptions", CreateTranscriptionRequest, "transcriptions", "createTranscription",
             multipart=True, media_types=("application/json", "text/plain", "text/event-stream")),
    Endpoint("/audio/translations", CreateTranslationRequest, "translations", "createTranslation",
             multipart=True, media_types=("application/json", "text/plain")),
)


def create_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    for prefix in PREFIXES:
        suffix = "" if prefix == "/v1-openai" else "V1"
        for endpoint in ENDPOINTS:
            router.add_api_route(
                prefix + endpoint.path, _handler(endpoint, prefix), methods=["POST"],
                operation_id=endpoint.operation_id + suffix, tags=["openai"],
                openapi_extra=request_body(endpoint.schema, multipart=endpoint.multipart),
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
        payload = await _parse(request, body, endpoint)
        record = _resolve(request, payload.model, endpoint)
        keep_alive = (payload.model_extra or {}).get("keep_alive")
        keep_alive = None if keep_alive is None else parse_keep_alive(keep_alive)
        # The worker builds absolute URLs (images) from the public base URL the client called.
        _set_header(request, BASE_URL_HEADER.encode(), str(request.base_url).rstrip("/") + prefix)
        scheduler = request.app.state.scheduler
        return await scheduler.forward(record.name, "/v1" + endpoint.path, request, body, keep_alive=keep_alive)

    handle.__name__ = endpoint.operation_id
    return handle


async def _parse(request: Request, body: bytes, endpoint: Endpoint) -> OpenAIRequest:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if endpoint.multipart and content_type in FORM_TYPES:
        async with request.form() as form:  # parses the buffered body; closes the spooled files after
            return _validate(request, endpoint.schema, form_to_dict(form))
    try:
        data = json.loads(body)
    except ValueError:
        raise InvalidRequestError(JSON_PARSE_MESSAGE) from None
    if not isinstance(data, dict):
        raise InvalidRequestError(JSON_PARSE_MESSAGE)
    # A JSON body is JSON whatever the client labelled it (curl -d sends a form type); say so downstream.
    _set_header(request, b"content-type", b"application/json")
    return _validate(request, endpoint.schema, data)


def _validate(request: Request, schema: type[OpenAIRequest], data: dict[str, Any]) -> OpenAIRequest:
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


def _resolve(request: Request, name: str, endpoint: Endpoint) -> ModelRecord:
    record = request.app.state.registry.find(name)
    if record is None:
        raise ModelNotFoundError(name)
    if endpoint.capability not in KIND_CAPABILITIES[record.kind]:
        raise InvalidRequestError(
            f"The model `{name}` is a {record.kind} model and does not support /v1{endpoint.path}. "
            "See `stacklet list` for the models that do.",
            param="model", code="model_not_supported",
        )
    return record


def _set_header(request: Request, name: bytes, value: str | bytes) -> None:
    """Replace a request header for the scheduler, which forwards it to the worker."""
    _ = request.headers  # from here on the cached Headers and the scope share one list
    raw = request.scope["headers"]
    raw[:] = [(key, old) for key, old in raw if key != name]
    raw.append((name, value.encode() if isinstance(value, str) else value))


async def list_models(request: Request) -> ModelList:
    workers = workers_by_model(request)
    return ModelList(data=[openai_model(r, workers.get(r.name)) for r in request.app.state.registry.list()])


async def retrieve_model(request: Request, model_id: str) -> Model:
    record = request.app.state.registry.get(model_id)
    return openai_model(record, workers_by_model(request).get(record.name))


def workers_by_model(request: Request) -> dict[str, dict[str, Any]]:
    return {worker["model"]: worker for worker in request.app.state.scheduler.status()}


def openai_model(record: ModelRecord, worker: dict[str, Any] | None) -> Model:
    facts = {**record.metadata, **((worker or {}).get("engine") or {})}
    meta = {"kind": record.kind, "capabilities": sorted(KIND_CAPABILITIES[record.kind])}
    meta.update({key: facts[key] for key in META_KEYS if key in facts})
    return Model(id=record.name, created=record.created, meta=meta)
