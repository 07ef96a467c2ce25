"""LangChain's OpenAIEmbeddings with its defaults sends OpenAI's cl100k_base token ids, not text. On a real
server with MiniLM, a route named after an OpenAI embedding model, or a model declared to take such ids,
reads them as the text they spell; every other name reads ids as the model's own."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import bpe_openai
import httpx
import numpy as np
import openai
import pytest
from nodes import admin, cli, node
from serverproc import local_record

from runtime.errors import InvalidRequestError
from runtime.options import EngineOptions

EMBED, DECLARED = "all-MiniLM-L6-v2", "minilm-openai-ids"
TEXTS = ["The cat sits on the mat", "Stock markets fell sharply on Tuesday", "Ünïcode and emoji: 🌍"]
TIKTOKEN_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm_gguf: Path) -> Iterator[tuple[str, str]]:
    """(root URL, admin key): MiniLM as itself and as a copy declared to take OpenAI's ids, and two routes."""
    home = tmp_path_factory.mktemp("openai-ids")
    records = [local_record(EMBED, "embedding", {"model": minilm_gguf}),
               local_record(DECLARED, "embedding", {"model": minilm_gguf},
                            options=EngineOptions(token_ids="cl100k_base"))]
    with node(home, records) as (root, key):
        assert cli(home, "route", "set", "text-embedding-3-small", EMBED).exit_code == 0
        declined = cli(home, "route", "set", "text-embedding-3-large", EMBED, "--token-ids", "model")
        assert declined.exit_code == 0, declined.stdout
        yield root, key


@pytest.fixture(scope="module")
def tiktoken_offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """tiktoken downloads cl100k_base on first use: seed its cache with the copy bpe-openai ships (the same
    bytes; tiktoken checks their sha256)."""
    cache = tmp_path_factory.mktemp("tiktoken")
    packed = resources.files("bpe_openai.data").joinpath("cl100k_base.tiktoken.gz").read_bytes()
    (cache / hashlib.sha1(TIKTOKEN_URL.encode()).hexdigest()).write_bytes(gzip.decompress(packed))
    patch = pytest.MonkeyPatch()
    patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    yield
    patch.undo()


def embed(root: str, key: str, model: str, inputs: list) -> np.ndarray:
    client = openai.OpenAI(base_url=root + "/v1", api_key=key, max_retries=0)
    return np.array([d.embedding for d in client.embeddings.create(model=model, input=inputs).data])


def openai_ids(texts: list[str]) -> list[list[int]]:
    encoding = bpe_openai.get_encoding("cl100k_base")
    return [encoding.encode(text) for text in texts]


def test_langchain_defaults_on_a_route_named_after_openai(server, tiktoken_offline):
    from langchain_openai import OpenAIEmbeddings

    root, key = server
    langchain = OpenAIEmbeddings(model="text-embedding-3-small", base_url=root + "/v1", api_key=key, max_retries=0)
    expected = embed(root, key, EMBED, TEXTS)
    assert np.allclose(langchain.embed_documents(TEXTS), expected, atol=1e-4)
    assert np.allclose(langchain.embed_query(TEXTS[0]), expected[0], atol=1e-4)
    # What LangChain sent, read as MiniLM's own ids (all in its range), is another text's vector.
    misread = embed(root, key, EMBED, openai_ids(TEXTS[:1]))
    assert not np.allclose(misread[0], expected[0], atol=1e-2)


def test_langchain_defaults_on_a_model_that_declares_openai_ids(server, tiktoken_offline):
    from langchain_openai import OpenAIEmbeddings

    root, key = server
    langchain = OpenAIEmbeddings(model=DECLARED, base_url=root + "/v1", api_key=key, max_retries=0)
    assert np.allclose(langchain.embed_documents(TEXTS), embed(root, key, EMBED, TEXTS), atol=1e-4)


def test_langchain_with_text_on_any_model(server):
    from langchain_openai import OpenAIEmbeddings

    root, key = server
    langchain = OpenAIEmbeddings(model=EMBED, base_url=root + "/v1", api_key=key, max_retries=0,
                                 check_embedding_ctx_length=False)
    assert np.allclose(langchain.embed_documents(TEXTS), embed(root, key, EMBED, TEXTS), atol=1e-4)


def test_a_route_can_keep_the_models_ids(server):
    root, key = server
    ids = openai_ids(TEXTS[:1])
    assert np.allclose(embed(root, key, "text-embedding-3-large", ids), embed(root, key, EMBED, ids), atol=1e-4)


def test_models_and_routes_say_which_ids_they_read(server):
    root, key = server
    with admin(root, key) as http:
        listed = {m["id"]: m["meta"] for m in http.get("/v1-openai/models").json()["data"]}
        route = http.get("/v1/routes/text-embedding-3-large").json()
    assert listed[EMBED]["token_ids"] == "model" and listed[DECLARED]["token_ids"] == "cl100k_base"
    assert listed["text-embedding-3-small"]["token_ids"] == "cl100k_base"
    assert route["token_ids"] == "model"


@pytest.mark.parametrize("ids", [[100256], [100257], [-1], [791, 200000]])
def test_ids_outside_cl100k_are_refused(server, ids):
    root, key = server
    answer = httpx.post(root + "/v1/embeddings", json={"model": "text-embedding-3-small", "input": ids},
                        headers={"Authorization": f"Bearer {key}"}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == "input" and f"Token id {ids[-1] if ids[0] == 791 else ids[0]}" in error["message"]


def test_stacklet_test_embeddings_checks_openai_ids(server, tmp_path):
    root, key = server
    result = cli(tmp_path, "test", "embeddings", "text-embedding-3-small", "--base-url", root + "/v1",
                 "--api-key", key)
    assert result.exit_code == 0, result.stdout
    assert "OpenAI token ids" in result.stdout


def test_a_bad_declaration_is_refused(tmp_path):
    result = cli(tmp_path, "route", "set", "embed", EMBED, "--token-ids", "gpt2")
    assert isinstance(result.exception, InvalidRequestError)
    assert "'token_ids': use model or cl100k_base" in str(result.exception)
    with pytest.raises(InvalidRequestError, match="token_ids"):
        EngineOptions.from_dict({"token_ids": "gpt2"})
