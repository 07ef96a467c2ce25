"""Worker routes for text: /v1/chat/completions, /v1/completions and /v1/embeddings on a TextEngine."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from runtime.engines.base import TextEngine, Usage
from runtime.errors import InvalidRequestError, check_context
from runtime.http.bridge import primed, run_cancellable
from runtime.http.jsonbody import JSONBodyRoute
from runtime.http.sse import sse_response
from runtime.protocol import embeddings as embedding_wire
from runtime.protocol.chat import CreateChatCompletionRequest
from runtime.protocol.completions import CreateCompletionRequest
from runtime.protocol.embeddings import CreateEmbeddingRequest
from runtime.spec import WorkerLimits, worker_path
from runtime.worker import chat, completions, images_in
from runtime.worker.stats import Stats

CHAT_PATH = worker_path("chat")
COMPLETIONS_PATH = worker_path("completions")
EMBEDDINGS_PATH = worker_path("embeddings")


def create_router(engine: TextEngine, stats: Stats, limits: WorkerLimits | None = None) -> APIRouter:
    router = APIRouter(route_class=JSONBodyRoute)
    limits = limits or WorkerLimits()
    fetch = images_in.FetchPolicy(limits.max_upload_bytes, limits.image_fetch_private)  # chat image URLs
    capabilities = frozenset(engine.capabilities)  # type: ignore[attr-defined]
    fingerprint = chat.fingerprint(engine)

    def require(capability: str, what: str) -> None:
        if capability not in capabilities:
            raise InvalidRequestError(f"This model does not support {what}. Use a model that does.",
                                      code="unsupported_model")

    @router.post(CHAT_PATH)
    async def create_chat_completion(body: CreateChatCompletionRequest, request: Request) -> Response:
        require("chat", "chat completions")
        body.validate_semantics()
        job = await run_in_threadpool(chat.prepare, engine, body, fingerprint, fetch)
        usage, cancel = Usage(), threading.Event()
        if body.stream:
            events = await primed(chat.stream(engine, job, usage, cancel))
            tokens = lambda: (usage.prompt_tokens, usage.completion_tokens)  # noqa: E731
            return sse_response(stats.counted(CHAT_PATH, tokens, events))
        result = await run_cancellable(request, lambda: chat.collect(engine, job, usage, cancel), cancel)
        stats.record(CHAT_PATH, usage.prompt_tokens, usage.completion_tokens)
        return JSONResponse(result)

    @router.post(COMPLETIONS_PATH)
    async def create_completion(body: CreateCompletionRequest, request: Request) -> Response:
        require("completions", "text completions")
        body.validate_semantics()
        job = await run_in_threadpool(completions.prepare, engine, body, fingerprint)
        cancel = threading.Event()
        if body.stream:
            events = await primed(completions.stream(engine, job, cancel))
            return sse_response(stats.counted(COMPLETIONS_PATH, job.token_counts, events))
        result = await run_cancellable(request, lambda: completions.collect(engine, job, cancel), cancel)
        stats.record(COMPLETIONS_PATH, *job.token_counts())
        return JSONResponse(result)

    @router.post(EMBEDDINGS_PATH)
    async def create_embedding(body: CreateEmbeddingRequest, request: Request) -> Response:
        require("embeddings", "embeddings")
        body.validate_semantics()
        cancel = threading.Event()
        result = await run_cancellable(request, lambda: embed(engine, body, cancel), cancel)
        stats.record(EMBEDDINGS_PATH, result["usage"]["prompt_tokens"])
        return JSONResponse(result)

    return router


def embed(engine: TextEngine, body: CreateEmbeddingRequest, cancel: threading.Event) -> dict[str, Any]:
    """Tokenize, check each input fits, embed in one engine call, then shape (blocking)."""
    inputs = [engine.tokenize(i) if isinstance(i, str) else i for i in body.inputs()]
    for position, tokens in enumerate(inputs):
        param = "input" if len(inputs) == 1 else f"input[{position}]"
        check_context(engine.context_length, len(tokens), param=param, generating=False)
    vectors = engine.embed(inputs, cancel)
    if body.dimensions is not None:
        vectors = [shorten(v, body.dimensions) for v in vectors]
    encoded = [embedding_wire.encode(v, body.encoding_format) for v in vectors]
    return embedding_wire.response(body.model, encoded, sum(len(t) for t in inputs))


def shorten(vector: list[float], dimensions: int) -> list[float]:
    """Matryoshka-style: keep the first `dimensions` values and re-normalise."""
    if dimensions > len(vector):
        raise InvalidRequestError(f"Invalid value for 'dimensions': this model's embeddings have {len(vector)} "
                                  f"dimensions; ask for {len(vector)} or fewer.", param="dimensions",
                                  code="invalid_value")
    head = np.asarray(vector[:dimensions], dtype=np.float64)
    norm = float(np.linalg.norm(head)) or 1.0
    return (head / norm).tolist()
