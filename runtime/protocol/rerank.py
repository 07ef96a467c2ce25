"""Wire schema for /rerank: the request Cohere, Jina and llama-server clients send, and the response in the
shape they all parse (LiteLLM, LangChain, LlamaIndex and Dify read `results[].index` and `relevance_score`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, Field

from runtime.errors import InvalidRequestError
from runtime.protocol.common import OpenAIRequest

MAX_DOCUMENTS = 1000  # Cohere's own limit per request
MAX_TEXT_CHARS = 4 * 1024 * 1024  # the query and every document together


class RerankDocument(BaseModel):
    """Jina's and Cohere v1's document object; only its text is ranked."""

    text: str


class RerankRequest(OpenAIRequest):
    model: str
    query: str
    documents: Annotated[list[str | RerankDocument], Field(min_length=1, max_length=MAX_DOCUMENTS)]
    top_n: Annotated[int | None, Field(ge=1)] = None
    return_documents: bool | None = None

    def validate_semantics(self) -> None:
        if not self.query.strip():
            raise InvalidRequestError("'query' is empty: send the text to rank the documents against.",
                                      param="query")
        size = len(self.query) + sum(len(text) for text in self.texts())
        if size > MAX_TEXT_CHARS:
            raise InvalidRequestError(f"The query and documents hold {size} characters; at most {MAX_TEXT_CHARS} "
                                      "are ranked in one request. Split the documents over several requests.",
                                      param="documents")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def response(body: RerankRequest, scores: list[float], prompt_tokens: int) -> dict[str, Any]:
    """Results best first, at most `top_n`, with each `document` unless `return_documents` is false (Jina's
    default: clients written for Jina read it without asking; Cohere's SDKs take it as an optional field)."""
    texts = body.texts()
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: body.top_n or len(scores)]
    results: list[dict[str, Any]] = []
    for index in order:
        result: dict[str, Any] = {"index": index, "relevance_score": scores[index]}
        if body.return_documents is not False:
            result["document"] = {"text": texts[index]}
        results.append(result)
    return {
        "id": str(uuid.uuid4()),
        "object": "list",
        "model": body.model,
        "results": results,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
        "meta": {"api_version": {"version": "2"}, "tokens": {"input_tokens": prompt_tokens, "output_tokens": 0}},
    }
