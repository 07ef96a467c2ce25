"""`stacklet test chat|completions|embeddings` against a real llama.cpp worker app."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from cli.app import app


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_smoke_tests_pass_on_real_models(live_server: Any, text_app: Any, smollm_engine: Any,
                                         minilm_engine: Any) -> None:
    chat_url = live_server(text_app(smollm_engine)) + "/v1"
    embed_url = live_server(text_app(minilm_engine)) + "/v1"
    for command, url in (("chat", chat_url), ("completions", chat_url), ("embeddings", embed_url)):
        result = invoke("test", command, "any-model", "--base-url", url, "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert report["ok"] and all(check["ok"] for check in report["checks"])
        assert command != "chat" or "custom tool (grammar)" in [check["name"] for check in report["checks"]]
    streamed = [c for c in json.loads(invoke("test", "chat", "m", "--base-url", chat_url, "--json").output)["checks"]
                if c["name"] == "chat stream"][0]
    assert streamed["ttft_s"] is not None and streamed["tokens_per_s"] > 0


def test_smoke_test_fails_on_the_wrong_capability(live_server: Any, text_app: Any, minilm_engine: Any) -> None:
    url = live_server(text_app(minilm_engine)) + "/v1"
    result = invoke("test", "chat", "all-MiniLM-L6-v2", "--base-url", url)
    assert result.exit_code == 1
    assert "FAIL" in result.output


def test_bench_reports_every_level_the_prefix_cache_and_embeddings(live_server: Any, text_app: Any,
                                                                   smollm_engine: Any, minilm_engine: Any) -> None:
    url = live_server(without_embeddings(text_app(smollm_engine))) + "/v1"
    result = invoke("bench", "SmolLM2-135M-Instruct", "--base-url", url, "--concurrency", "1,3", "--max-tokens", "4",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [level["concurrency"] for level in report["levels"]] == [1, 3]
    for level in report["levels"]:
        assert level["errors"] == 0 and level["tokens"] == level["requested_tokens"] == level["requests"] * 4
        assert level["ttft_p50_s"] > 0 and level["aggregate_tok_s"] > 0
    assert len(report["prefix"]) == 6 and all(value > 0 for value in report["prefix"].values())
    assert report["embeddings"] == {}  # the server does not serve them: skipped, not failed
    result = invoke("bench", "all-MiniLM-L6-v2", "--base-url", live_server(text_app(minilm_engine)) + "/v1", "--json")
    assert result.exit_code == 0, result.output
    embed_only = json.loads(result.stdout)
    assert embed_only["levels"] == [] and embed_only["embeddings"]["inputs"] == 256


def without_embeddings(app: Any) -> Any:
    """The app, answering 404 on /v1/embeddings like a chat-only server."""
    from starlette.responses import JSONResponse

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/embeddings"):
            await JSONResponse({"error": {"message": "Not found"}}, status_code=404)(scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve
