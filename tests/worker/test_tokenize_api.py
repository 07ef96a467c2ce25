"""/v1/tokenize and /v1/detokenize in llama-server's shapes, on real SmolLM2 (byte-level BPE) and MiniLM
(WordPiece)."""

from __future__ import annotations

from typing import Any

import apps
import httpx
import pytest

from runtime.protocol.tokenize import MAX_CONTENT_CHARS, MAX_TOKENS

TEXT = "Hello world, this is stacklet."


@pytest.fixture(scope="module")
def smollm(live_server: Any, smollm_engine: Any) -> str:
    return live_server(apps.tokenize_app(smollm_engine)) + "/v1"


@pytest.fixture(scope="module")
def minilm(live_server: Any, minilm_engine: Any) -> str:
    return live_server(apps.tokenize_app(minilm_engine)) + "/v1"


def post(url: str, path: str, **body: Any) -> httpx.Response:
    return httpx.post(url + path, json={"model": "m", **body}, timeout=60)


def test_token_ids_round_trip(smollm: str, smollm_engine: Any) -> None:
    tokens = post(smollm, "/tokenize", content=TEXT).json()["tokens"]
    assert tokens == smollm_engine.tokenize(TEXT, add_special=False) and len(tokens) > 3
    assert post(smollm, "/detokenize", tokens=tokens).json() == {"content": TEXT}
    assert post(smollm, "/tokenize", content="").json() == {"tokens": []}


def test_add_special_adds_what_the_model_adds(minilm: str, minilm_engine: Any) -> None:
    plain = post(minilm, "/tokenize", content=TEXT).json()["tokens"]
    special = post(minilm, "/tokenize", content=TEXT, add_special=True).json()["tokens"]
    cls, sep = minilm_engine.tokenize("", add_special=True)  # WordPiece wraps text in [CLS] ... [SEP]
    assert special == [cls, *plain, sep]
    assert post(minilm, "/detokenize", tokens=[cls]).json()["content"] == "[CLS]"  # special tokens are shown


def test_add_special_follows_the_model(smollm: str, smollm_engine: Any) -> None:
    # SmolLM2's GGUF asks for no BOS (its chat template writes <|im_start|> itself): add_special adds nothing.
    plain = post(smollm, "/tokenize", content=TEXT).json()["tokens"]
    assert post(smollm, "/tokenize", content=TEXT, add_special=True).json()["tokens"] == plain
    bos = smollm_engine.document_start()[0]
    assert post(smollm, "/detokenize", tokens=[bos, *plain]).json()["content"] == "<|im_start|>" + TEXT
    assert post(smollm, "/tokenize", content="<|im_start|>" + TEXT).json()["tokens"] == [bos, *plain]


def test_pieces_with_bytes_for_split_characters(smollm: str) -> None:
    text = "naïve 🙂 日本"
    pieces = post(smollm, "/tokenize", content=text, with_pieces=True).json()["tokens"]
    assert all(set(p) == {"id", "piece"} for p in pieces)
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined.decode() == text
    assert any(isinstance(p["piece"], list) for p in pieces)  # the emoji's four bytes span several tokens
    ids = [p["id"] for p in pieces]
    assert post(smollm, "/detokenize", tokens=ids).json()["content"] == text
    partial = next(p["id"] for p in pieces if isinstance(p["piece"], list))
    assert "\ufffd" in post(smollm, "/detokenize", tokens=[partial]).json()["content"]  # half a character


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/detokenize", {"tokens": [-1]}, "tokens"),
    ("/detokenize", {"tokens": [10**9]}, "tokens"),
    ("/detokenize", {"tokens": ["a"]}, "tokens"),
    ("/detokenize", {"tokens": [1] * (MAX_TOKENS + 1)}, "tokens"),
    ("/tokenize", {"content": "x" * (MAX_CONTENT_CHARS + 1)}, "content"),
    ("/tokenize", {"content": 5}, "content"),
    ("/tokenize", {}, "content"),
])
def test_bad_requests_are_400s(smollm: str, path: str, body: dict[str, Any], param: str) -> None:
    answer = post(smollm, path, **body)
    assert answer.status_code == 400, answer.text
    assert str(answer.json()["error"]["param"]).startswith(param)
