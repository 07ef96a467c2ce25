"""Worker route for /v1/rerank on a llama reranker: one (query, document) pair per document, each checked
against the context, all scored in shared decodes."""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from runtime.errors import InvalidRequestError
from runtime.http.bridge import run_cancellable
from runtime.http.jsonbody import JSONBodyRoute
from runtime.protocol import rerank as rerank_wire
from runtime.protocol.rerank import RerankRequest
from runtime.spec import worker_path
from runtime.worker.stats import Stats

RERANK_PATH = worker_path("rerank")


def create_router(engine: Any, stats: Stats) -> APIRouter:
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post(RERANK_PATH)
    async def create_rerank(body: RerankRequest, request: Request) -> JSONResponse:
        if "rerank" not in engine.capabilities:
            raise InvalidRequestError("This model is not a reranker: /v1/rerank needs a cross-encoder GGUF "
                                      "(bge-reranker, jina-reranker, ms-marco cross-encoders).", param="model",
                                      code="model_not_supported")
        body.validate_semantics()
        cancel = threading.Event()
        result = await run_cancellable(request, lambda: rerank(engine, body, cancel), cancel)
        stats.record(RERANK_PATH, result["usage"]["prompt_tokens"])
        return JSONResponse(result)

    return router


def rerank(engine: Any, body: RerankRequest, cancel: threading.Event) -> dict[str, Any]:
    """Tokenize each pair, check it fits, score them all in one engine call, then shape (blocking)."""
    pairs = [engine.rank_pair(body.query, text) for text in body.texts()]
    for index, tokens in enumerate(pairs):
        if len(tokens) > engine.context_length:
            raise InvalidRequestError(
                f"Document {index} and the query together are {len(tokens)} tokens; this model reads at most "
                f"{engine.context_length}. Shorten the document or split it.", param=f"documents[{index}]",
                code="context_length_exceeded")
    scores = engine.rank(pairs, cancel)
    return rerank_wire.response(body, scores, sum(len(tokens) for tokens in pairs))
