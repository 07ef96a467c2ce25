"""Rerank and tokenize under the paths other servers use, so their clients work unchanged: Cohere's
`/v2/rerank`, and llama-server's `/rerank`, `/tokenize` and `/detokenize` at the root. Each is the same
handler as its `/v1` endpoint (routes/openai.py), behind the same auth."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from runtime.protocol.requests import REQUEST_SCHEMAS
from runtime.server.auth import require_api_key
from runtime.server.openapi import ERROR_RESPONSES, request_body, success_response
from runtime.server.routes.openai import _handler as relay
from runtime.spec import ENDPOINTS

ALIASES = {  # alias path -> the endpoint path it serves
    "/v2/rerank": "/rerank",
    "/rerank": "/rerank",
    "/tokenize": "/tokenize",
    "/detokenize": "/detokenize",
}


def create_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES)
    endpoints = {endpoint.path: endpoint for endpoint in ENDPOINTS}
    for alias, path in ALIASES.items():
        endpoint = endpoints[path]
        suffix = "V2" if alias.startswith("/v2/") else "Root"
        router.add_api_route(
            alias, relay(endpoint, "/v1"), methods=["POST"], operation_id=endpoint.operation_id + suffix,
            tags=["compat"], openapi_extra=request_body(REQUEST_SCHEMAS[endpoint.capability]),
            responses={200: success_response(endpoint.media_types)},
        )
    return router
