"""The agent APIs: OpenAI Responses (under both prefixes) and Anthropic Messages (/v1/messages).

Each request is translated to one chat completions request for the model's worker
(runtime/agents/), relayed by runtime/server/translate.py, and answered in the API's own shapes.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from runtime.agents import messages, responses
from runtime.agents.chatstream import Event, Failure, Usage
from runtime.errors import InvalidRequestError, NotFoundError, StackletError
from runtime.http.jsonbody import parse_json_body
from runtime.protocol.messages import AnthropicError, CountTokensRequest, CreateMessageRequest
from runtime.protocol.requests import REQUEST_SCHEMAS
from runtime.protocol.responses import CreateResponseRequest
from runtime.server.auth import check_key, presented_key, require_api_key
from runtime.server.balancer import prefix_key
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.server.proxy import forward_headers
from runtime.server.routes.openai import resolve_model, validate_request
from runtime.server.translate import TranslatedResponse
from runtime.spec import API_PREFIXES, ENDPOINTS, worker_path
from runtime.store.responses import StoredResponse

CHAT = next(endpoint for endpoint in ENDPOINTS if endpoint.capability == "chat")
CHAT_SCHEMA = REQUEST_SCHEMAS["chat"]
AGENT_SCHEMAS = (CreateResponseRequest, CreateMessageRequest, CountTokensRequest)  # for the OpenAPI document


def create_router() -> APIRouter:
    router = APIRouter(responses=ERROR_RESPONSES)
    openai_auth = [Depends(require_api_key)]
    for prefix in API_PREFIXES:
        suffix = "" if prefix == "/v1-openai" else "V1"
        base = prefix + "/responses"
        router.add_api_route(base, create_response, methods=["POST"], operation_id="createResponse" + suffix,
                             tags=["agents"], dependencies=openai_auth,
                             openapi_extra=request_body(CreateResponseRequest),
                             responses={200: success_response(("application/json", "text/event-stream"))})
        router.add_api_route(base + "/{response_id}", get_response, methods=["GET"], tags=["agents"],
                             operation_id="getResponse" + suffix, dependencies=openai_auth)
        router.add_api_route(base + "/{response_id}", delete_response, methods=["DELETE"], tags=["agents"],
                             operation_id="deleteResponse" + suffix, dependencies=openai_auth)
        router.add_api_route(base + "/{response_id}/input_items", list_input_items, methods=["GET"],
                             tags=["agents"], operation_id="listInputItems" + suffix, dependencies=openai_auth)
    # Anthropic's clients read Anthropic's error envelope, so these handlers check the key themselves.
    errors = {status: {"model": AnthropicError, "description": detail["description"]}
              for status, detail in ERROR_RESPONSES.items()}
    router.add_api_route("/v1/messages", create_message, methods=["POST"], operation_id="createMessage",
                         tags=["agents"], openapi_extra=request_body(CreateMessageRequest),
                         responses={**errors, 200: success_response(("application/json", "text/event-stream"))})
    router.add_api_route("/v1/messages/count_tokens", count_tokens, methods=["POST"], tags=["agents"],
                         operation_id="countMessageTokens", openapi_extra=request_body(CountTokensRequest),
                         responses=errors)
    return router


def owner(request: Request) -> str:
    """Whose stored responses these are: a digest of the key the client presented."""
    key = presented_key(request) or ""
    return hashlib.sha256(key.encode()).hexdigest() if key else ""


async def _json(request: Request) -> dict[str, Any]:
    return parse_json_body(await request.body())


def _relay(request: Request, model: str, body: dict[str, Any], translation: Any) -> TranslatedResponse:
    target = resolve_model(request, model, CHAT, prefix=lambda: prefix_key(body.get("messages")))
    validate_request(request, CHAT_SCHEMA, body)  # a translation that chat refuses fails before a model loads
    headers = forward_headers("application/json", str(request.base_url).rstrip("/") + "/v1")
    return TranslatedResponse(target, worker_path("chat"), body, headers, translation)


# Responses


async def create_response(request: Request) -> Response:
    payload = validate_request(request, CreateResponseRequest, await _json(request))
    history: list[dict[str, Any]] = []
    if payload.previous_response_id is not None:
        history = _stored(request, payload.previous_response_id).conversation
    items = responses.input_items(payload)
    body = responses.chat_request(payload, history, items)
    translation = ResponsesTranslation(request, payload, items, history)
    return _relay(request, payload.model, body, translation)


class ResponsesTranslation:
    def __init__(self, request: Request, payload: CreateResponseRequest, items: list[dict[str, Any]],
                 history: list[dict[str, Any]]) -> None:
        self.stream = bool(payload.stream)
        self.renderer = responses.ResponseRenderer(responses.skeleton(payload, payload.model))
        self.store = request.app.state.responses if payload.store is not False else None
        self.owner = owner(request)
        self.items = items
        self.conversation = history + responses.chat_messages(items)

    def start(self) -> bytes:
        return self.renderer.start()

    def feed(self, event: Event) -> bytes:
        return self.renderer.feed(event)

    def finish(self) -> bytes:
        return self.renderer.finish()

    def fail(self, message: str) -> bytes:
        return self.renderer.fail(message, "server_error")

    def failure(self) -> str | None:
        error = self.renderer.response["error"]
        return None if error is None else error["message"]

    def result(self) -> dict[str, Any]:
        return self.renderer.response

    def error(self, status: int, error: dict[str, Any], headers: dict[str, str]) -> Response:
        return JSONResponse({"error": error}, status_code=status, headers=headers)

    def completed(self) -> None:
        if self.store is None or self.failure() is not None:
            return
        conversation = self.conversation + self.renderer.assistant_messages()
        self.store.save(self.owner, StoredResponse(self.renderer.response, self.items, conversation))


def _stored(request: Request, response_id: str) -> StoredResponse:
    stored = request.app.state.responses.get(owner(request), response_id)
    if stored is None:
        raise NotFoundError(f"Response with id '{response_id}' not found.", param="previous_response_id")
    return stored


async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    return _stored(request, response_id).response


async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    if not request.app.state.responses.delete(owner(request), response_id):
        raise NotFoundError(f"Response with id '{response_id}' not found.")
    return {"id": response_id, "object": "response", "deleted": True}


async def list_input_items(request: Request, response_id: str, after: str | None = None, limit: int = 20,
                           order: str = "desc") -> dict[str, Any]:
    if not 1 <= limit <= 100:
        raise InvalidRequestError("Invalid 'limit': expected an integer between 1 and 100.", param="limit")
    if order not in ("asc", "desc"):
        raise InvalidRequestError("Invalid 'order': expected 'asc' or 'desc'.", param="order")
    items = _stored(request, response_id).input_items
    items = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0].get("id") if page else None,
            "last_id": page[-1].get("id") if page else None, "has_more": len(items) > limit}


# Anthropic Messages


async def create_message(request: Request) -> Response:
    try:
        _anthropic_auth(request)
        payload = validate_request(request, CreateMessageRequest, await _json(request))
        translation = MessagesTranslation(payload)
        return _relay(request, payload.model, messages.chat_request(payload), translation)
    except StackletError as exc:
        return anthropic_error(exc.status, exc.message, exc.headers())


async def count_tokens(request: Request) -> Response:
    try:
        _anthropic_auth(request)
        payload = validate_request(request, CountTokensRequest, await _json(request))
        body = {**messages.chat_request(payload), "max_completion_tokens": 1}
        return _relay(request, payload.model, body, CountTokensTranslation())
    except StackletError as exc:
        return anthropic_error(exc.status, exc.message, exc.headers())


def _anthropic_auth(request: Request) -> None:
    check_key(request, presented_key(request))


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(messages.error_body(status, message), status_code=status, headers=headers)


class MessagesTranslation:
    def __init__(self, payload: CreateMessageRequest) -> None:
        self.stream = bool(payload.stream)
        self.renderer = messages.MessageRenderer(payload.model, messages.thinking_enabled(payload))
        self._failure: str | None = None

    def start(self) -> bytes:
        return self.renderer.start()

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Failure):
            self._failure = event.message
        return self.renderer.feed(event)

    def finish(self) -> bytes:
        return self.renderer.finish()

    def fail(self, message: str) -> bytes:
        self._failure = message
        return self.renderer.fail(message)

    def failure(self) -> str | None:
        return self._failure

    def result(self) -> dict[str, Any]:
        return self.renderer.message

    def error(self, status: int, error: dict[str, Any], headers: dict[str, str]) -> Response:
        return anthropic_error(status, error["message"], headers)

    def completed(self) -> None:
        return None


class CountTokensTranslation(MessagesTranslation):
    """Counts with the model's own template: the prompt of a one-token generation (its prefix stays cached)."""

    def __init__(self) -> None:
        self.stream = False
        self.input_tokens = 0
        self._failure = None

    def start(self) -> bytes:
        return b""

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Usage):
            self.input_tokens = event.input_tokens
        if isinstance(event, Failure):
            self._failure = event.message
        return b""

    def finish(self) -> bytes:
        return b""

    def result(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens}

