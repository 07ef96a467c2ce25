"""/v1/rerank on real llama.cpp rank pooling, over plain HTTP and in the JSON that LangChain's, LiteLLM's and
Dify's rerankers send. The model is MiniLM fine-tuned as a cross-encoder (no cross-encoder's weights are on the
package index); tests/engines/test_llama_rank.py measures its relevance on held-out queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apps
import httpx
import pytest

from runtime.protocol.rerank import MAX_DOCUMENTS

MODEL = "minilm-rank"
QUERY = "What is the capital of France?"
DOCUMENTS = ["Berlin is the capital of Germany.", "Paris is the capital and largest city of France.",
             "The Eiffel Tower was finished in 1889.", "Bananas are rich in potassium."]


@pytest.fixture(scope="module")
def reranker(minilm_reranker_gguf: Path) -> Iterator[Any]:
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    engine = LlamaEngine(ModelSpec(MODEL, "rerank", "llama", {"model": minilm_reranker_gguf}))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def url(live_server: Any, reranker: Any) -> str:
    return live_server(apps.rerank_app(reranker)) + "/v1/rerank"


def rerank(url: str, **body: Any) -> httpx.Response:
    return httpx.post(url, json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS, **body}, timeout=120)


def test_every_document_scored_and_sorted(url: str, reranker: Any) -> None:
    answer = rerank(url).json()
    results = answer["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in results)  # Jina's default
    pairs = [reranker.rank_pair(QUERY, text) for text in DOCUMENTS]
    assert answer["usage"] == {"prompt_tokens": sum(map(len, pairs)), "total_tokens": sum(map(len, pairs))}
    assert answer["model"] == MODEL and answer["id"] and answer["meta"]["api_version"]["version"] == "2"
    # Each pair is scored on its own: the same document scores the same alone and among others (up to the
    # rounding a different batch shape gives llama.cpp's float16 kernels).
    alone = {text: rerank(url, documents=[text]).json()["results"][0]["relevance_score"] for text in DOCUMENTS}
    assert all(r["relevance_score"] == pytest.approx(alone[DOCUMENTS[r["index"]]], abs=2e-3) for r in results)


def test_top_n_and_return_documents(url: str) -> None:
    full = rerank(url).json()["results"]
    top = rerank(url, top_n=2, return_documents=False).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    assert all(set(r) == {"index", "relevance_score"} for r in top)
    assert len(rerank(url, top_n=50).json()["results"]) == 4  # more than there are: all of them


def test_client_shapes(url: str) -> None:
    # LangChain's JinaRerank and Dify send Jina's body; LiteLLM's Cohere provider sends Cohere's (with its extra
    # fields); llama-server's clients may send only query and documents.
    jina = {"model": MODEL, "query": QUERY, "documents": [{"text": t} for t in DOCUMENTS], "top_n": 3,
            "return_documents": True}
    litellm = {"model": MODEL, "query": QUERY, "documents": DOCUMENTS, "top_n": 3, "return_documents": None,
               "rank_fields": None, "max_chunks_per_doc": None}
    expected = [r["index"] for r in rerank(url).json()["results"][:3]]
    assert expected[0] == 1  # Paris, not Berlin: the distractor shares more of the query's words
    for body in (jina, litellm):
        answer = httpx.post(url, json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        assert [r["index"] for r in answer.json()["results"]] == expected
    assert httpx.post(url, json={"model": MODEL, "query": QUERY, "documents": DOCUMENTS}).status_code == 200


@pytest.mark.parametrize(("body", "param"), [
    ({"documents": []}, "documents"),
    ({"documents": ["x"] * (MAX_DOCUMENTS + 1)}, "documents"),
    ({"documents": ["x", 3]}, "documents"),
    ({"query": "   "}, "query"),
    ({"top_n": 0}, "top_n"),
    ({"documents": ["word " * 600]}, "documents[0]"),  # past MiniLM's 512-token context
])
def test_bad_requests_are_400s(url: str, body: dict[str, Any], param: str) -> None:
    answer = rerank(url, **body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and str(error["param"]).startswith(param)


def test_a_model_that_is_not_a_reranker_is_refused(live_server: Any, minilm_engine: Any) -> None:
    other = live_server(apps.rerank_app(minilm_engine)) + "/v1/rerank"
    answer = httpx.post(other, json={"model": "all-MiniLM-L6-v2", "query": QUERY, "documents": DOCUMENTS})
    assert answer.status_code == 400
    assert "not a reranker" in answer.json()["error"]["message"]
