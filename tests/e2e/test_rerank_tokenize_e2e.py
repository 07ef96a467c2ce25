"""Rerank and tokenize end to end: `stacklet pull` tells a cross-encoder GGUF from an embedder, the server
routes /rerank (and its Cohere and llama-server paths) to a reranker's worker and refuses other models, and
`stacklet tokenize` and `stacklet test rerank` work against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runtime.config import Settings
from runtime.store.keys import admin_key

RERANK, EMBED, CHAT = "MiniLM-L6-reranker", "all-MiniLM-L6-v2", "SmolLM2-135M-Instruct"
BODY = {"query": "capital of France", "documents": ["Bananas are yellow.", "Paris is the capital of France.",
                                                    "Cats sleep most of the day.", "Rust is a programming language."]}


def stacklet(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, minilm_reranker_gguf: Path, minilm_gguf: Path,
        smollm_gguf: Path) -> Iterator[dict[str, str]]:
    from serverproc import free_port

    home = tmp_path_factory.mktemp("rerank-e2e")
    port = free_port()
    env = {**os.environ, "STACKLET_HOME": str(home), "STACKLET_PORT": str(port)}
    for path in (minilm_reranker_gguf, minilm_gguf, smollm_gguf):
        pulled = stacklet(env, "pull", str(path), "--json")
        assert pulled.returncode == 0, pulled.stderr
    started = stacklet(env, "serve", "-d", "--port", str(port))
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        stacklet(env, "stop")


@pytest.fixture(scope="module")
def http(env: dict[str, str]) -> Iterator[httpx.Client]:
    key = admin_key(Settings.load(environ=env).paths)
    with httpx.Client(base_url=f"http://127.0.0.1:{env['STACKLET_PORT']}", timeout=120,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        yield client


def test_pull_detects_the_reranker(env: dict[str, str]) -> None:
    shown = json.loads(stacklet(env, "show", RERANK, "--json").stdout)
    assert shown["kind"] == "rerank"
    assert json.loads(stacklet(env, "show", EMBED, "--json").stdout)["kind"] == "embedding"


def test_rerank_on_every_path_and_only_on_rerankers(http: httpx.Client) -> None:
    answers = [http.post(path, json={"model": RERANK, **BODY}) for path in
               ("/v1/rerank", "/v1-openai/rerank", "/v2/rerank", "/rerank")]
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert len({json.dumps(a.json()["results"]) for a in answers}) == 1  # the same answer everywhere
    ranked = answers[0].json()["results"]  # Paris first, of four: a real (fine-tuned) cross-encoder
    assert [r["index"] for r in ranked][0] == 1 and sorted(r["index"] for r in ranked) == [0, 1, 2, 3]
    for model in (EMBED, CHAT):
        refused = http.post("/v1/rerank", json={"model": model, **BODY})
        assert refused.status_code == 400 and "does not support /v1/rerank" in refused.json()["error"]["message"]
    assert http.post("/v1/rerank", json={"model": RERANK, **BODY}, headers={"Authorization": "Bearer no"}) \
        .status_code == 401
    listed = {m["id"]: m for m in http.get("/v1-openai/models").json()["data"]}
    assert listed[RERANK]["meta"]["kind"] == "rerank" and "/rerank" in listed[RERANK]["meta"]["apis"]


def test_tokenize_on_every_path(http: httpx.Client) -> None:
    for path in ("/v1/tokenize", "/v1-openai/tokenize", "/tokenize"):
        tokens = http.post(path, json={"model": CHAT, "content": "Hello there"}).json()["tokens"]
        assert http.post(path.replace("tokenize", "detokenize"), json={"model": CHAT, "tokens": tokens}) \
            .json() == {"content": "Hello there"}
    assert http.post("/tokenize", json={"model": CHAT, "content": "x"}, headers={"Authorization": "Bearer no"}) \
        .status_code == 401
    assert http.post("/v1/detokenize", json={"model": CHAT, "tokens": [-5]}).status_code == 400


def test_cli_tokenize_and_smoke_test(env: dict[str, str], http: httpx.Client) -> None:
    shown = stacklet(env, "tokenize", CHAT, "Hello there", "--json")
    assert shown.returncode == 0, shown.stderr
    expected = http.post("/v1/tokenize", json={"model": CHAT, "content": "Hello there"}).json()["tokens"]
    assert [t["id"] for t in json.loads(shown.stdout)["tokens"]] == expected
    missing = stacklet(env, "tokenize", "no-such-model", "hi")
    assert missing.returncode != 0 and "does not exist" in missing.stderr
    smoke = stacklet(env, "test", "rerank", RERANK, "--json")
    assert smoke.returncode == 0 and json.loads(smoke.stdout)["ok"], smoke.stdout + smoke.stderr
    assert stacklet(env, "test", "rerank", EMBED, "--json").returncode != 0
