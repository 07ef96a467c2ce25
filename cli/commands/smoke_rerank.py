"""`stacklet test rerank MODEL`: /rerank in the shapes Cohere, Jina and LiteLLM clients send (plain HTTP: the
openai client has no rerank call)."""

from __future__ import annotations

from typing import Any

import typer

from cli.client import OPENAI_TIMEOUT_S, openai_target
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Report, expect

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Berlin is the capital and largest city of Germany.",
    "Paris is the capital and most populous city of France.",
    "The Eiffel Tower was finished in 1889.",
    "Bananas are rich in potassium.",
]
ANSWER = 1


def register(test_app: typer.Typer) -> None:
    test_app.command("rerank")(test_rerank)


def test_rerank(model: str = typer.Argument(..., help="Reranker (cross-encoder) model to test."),
                base_url: BaseUrlOption = None, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Rerank: every document scored and sorted (with its text), the answer first, top_n without documents,
    Jina's document objects."""
    import httpx

    url, key = openai_target(base_url, api_key)
    http = httpx.Client(base_url=url, timeout=OPENAI_TIMEOUT_S, headers={"Authorization": f"Bearer {key or 'none'}"})
    report = Report(f"rerank: {model}")
    with report.check("rerank") as check:
        result = _rerank(http, {"model": model, "query": QUERY, "documents": DOCUMENTS})
        results = result["results"]
        expect(sorted(r["index"] for r in results) == list(range(len(DOCUMENTS))), "not one result per document")
        scores = [r["relevance_score"] for r in results]
        expect(scores == sorted(scores, reverse=True), "results are not sorted by relevance_score")
        expect(all(r["document"]["text"] == DOCUMENTS[r["index"]] for r in results), "documents do not match")
        expect(results[0]["index"] == ANSWER, f"the answer is not first: {DOCUMENTS[results[0]['index']]!r} is")
        expect(result["usage"]["prompt_tokens"] > 0, "usage counts no tokens")
        check.detail = f"first: {DOCUMENTS[results[0]['index']][:40]!r} ({scores[0]:.3f})"
    with report.check("top_n, return_documents false"):
        result = _rerank(http, {"model": model, "query": QUERY, "documents": DOCUMENTS, "top_n": 2,
                                "return_documents": False})
        results = result["results"]
        expect(len(results) == 2, f"{len(results)} results for top_n 2")
        expect(all("document" not in r for r in results), "documents returned with return_documents false")
    with report.check("document objects (Jina)"):
        objects = [{"text": text} for text in DOCUMENTS]
        result = _rerank(http, {"model": model, "query": QUERY, "documents": objects, "top_n": 1})
        expect(len(result["results"]) == 1, "top_n 1 gave more than one result")
    http.close()
    report.finish(as_json)


def _rerank(http: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/rerank", json=body)
    if response.status_code != 200:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:160]}")
    return response.json()
