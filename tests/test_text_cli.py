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
    streamed = [c for c in json.loads(invoke("test", "chat", "m", "--base-url", chat_url, "--json").output)["checks"]
                if c["name"] == "chat stream"][0]
    assert streamed["ttft_s"] is not None and streamed["tokens_per_s"] > 0


def test_smoke_test_fails_on_the_wrong_capability(live_server: Any, text_app: Any, minilm_engine: Any) -> None:
    url = live_server(text_app(minilm_engine)) + "/v1"
    result = invoke("test", "chat", "all-MiniLM-L6-v2", "--base-url", url)
    assert result.exit_code == 1
    assert "FAIL" in result.output
