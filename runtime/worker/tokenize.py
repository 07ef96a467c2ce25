"""Worker routes for /v1/tokenize and /v1/detokenize on any llama model, in llama-server's shapes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from runtime.http.jsonbody import JSONBodyRoute
from runtime.protocol import tokenize as tokenize_wire
from runtime.protocol.tokenize import DetokenizeRequest, TokenizeRequest
from runtime.spec import worker_path
from runtime.worker.stats import Stats

TOKENIZE_PATH = worker_path("tokenize")
DETOKENIZE_PATH = worker_path("detokenize")


def create_router(engine: Any, stats: Stats) -> APIRouter:
    router = APIRouter(route_class=JSONBodyRoute)

    @router.post(TOKENIZE_PATH)
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        result = await run_in_threadpool(tokenize_text, engine, body)
        stats.record(TOKENIZE_PATH)
        return result

    @router.post(DETOKENIZE_PATH)
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        pieces = await run_in_threadpool(engine.pieces, body.tokens)
        stats.record(DETOKENIZE_PATH)
        # Special tokens are shown, as llama-server shows them; a character cut in two becomes U+FFFD.
        return {"content": b"".join(pieces).decode("utf-8", "replace")}

    return router


def tokenize_text(engine: Any, body: TokenizeRequest) -> dict[str, Any]:
    tokens = engine.tokenize(body.content, add_special=body.add_special)
    return tokenize_wire.tokenize_response(tokens, engine.pieces(tokens) if body.with_pieces else None)
