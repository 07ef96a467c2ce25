"""/v1/embeddings on real llama.cpp (all-MiniLM-L6-v2, and a chat model) with the openai client."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import numpy as np
import openai
import pytest

MODEL = "all-MiniLM-L6-v2"
EXAMPLE = "This is an example sentence"
PUBLISHED = [0.0677, 0.0633, 0.0487, 0.0792]  # sentence-transformers' vector for EXAMPLE


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, minilm_engine: Any) -> str:
    return live_server(text_app(minilm_engine)) + "/v1"


def vectors(result: Any) -> np.ndarray:
    return np.array([d.embedding for d in result.data])


def test_known_vector_and_similarity(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=[EXAMPLE, "The cat sits on the mat",
                                                          "The kitten rests on the rug"], encoding_format="float")
    got = vectors(result)
    assert got.shape == (3, 384)
    assert np.allclose(got[0][:4], PUBLISHED, atol=1e-3)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert got[1] @ got[2] == pytest.approx(0.67, abs=0.02)
    assert [d.index for d in result.data] == [0, 1, 2]
    assert result.usage.prompt_tokens == result.usage.total_tokens > 0


def test_base64_decodes_to_the_float_vectors(client: openai.OpenAI, base_url: str) -> None:
    floats = vectors(client.embeddings.create(model=MODEL, input=EXAMPLE, encoding_format="float"))
    default = vectors(client.embeddings.create(model=MODEL, input=EXAMPLE))  # the SDK asks for base64
    raw = httpx.post(base_url + "/embeddings", json={"model": MODEL, "input": EXAMPLE, "encoding_format": "base64"})
    encoded = raw.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert np.allclose(np.frombuffer(base64.b64decode(encoded), dtype="<f4"), floats[0], atol=1e-6)
    assert np.allclose(default, floats, atol=1e-6)


def test_token_inputs_and_dimensions(client: openai.OpenAI, minilm_engine: Any) -> None:
    tokens = minilm_engine.tokenize(EXAMPLE)
    by_text = vectors(client.embeddings.create(model=MODEL, input=EXAMPLE, encoding_format="float"))
    by_tokens = vectors(client.embeddings.create(model=MODEL, input=[tokens, tokens], encoding_format="float"))
    assert np.allclose(by_tokens, np.vstack([by_text, by_text]), atol=1e-4)
    single = vectors(client.embeddings.create(model=MODEL, input=tokens, encoding_format="float"))
    assert single.shape == (1, 384)
    short = vectors(client.embeddings.create(model=MODEL, input=EXAMPLE, dimensions=64, encoding_format="float"))
    assert short.shape == (1, 64) and np.linalg.norm(short[0]) == pytest.approx(1.0)
    assert np.allclose(short[0], by_text[0][:64] / np.linalg.norm(by_text[0][:64]), atol=1e-5)


def test_many_inputs_keep_their_order(client: openai.OpenAI) -> None:
    texts = [f"sentence number {i}" for i in range(40)]
    batched = vectors(client.embeddings.create(model=MODEL, input=texts, encoding_format="float"))
    alone = vectors(client.embeddings.create(model=MODEL, input=texts[17], encoding_format="float"))
    assert np.allclose(batched[17], alone[0], atol=1e-4)


@pytest.mark.parametrize("body, status, param", [
    ({"input": ["ok", ""]}, 400, "input"),
    ({"input": "word " * 600}, 400, "input"),
    ({"input": [[1, 2], [99999999]]}, 400, "input"),
    ({"input": "x", "dimensions": 1000}, 400, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, 400, "encoding_format"),
])
def test_bad_inputs(base_url: str, body: dict[str, Any], status: int, param: str) -> None:
    response = httpx.post(base_url + "/embeddings", json={"model": MODEL, **body}, timeout=60)
    assert response.status_code == status
    assert response.json()["error"]["param"] == param


def test_context_limit_is_named(client: openai.OpenAI, minilm_engine: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input="word " * 600)
    assert f"maximum context length is {minilm_engine.context_length} tokens" in caught.value.body["message"]


def test_chat_model_embeds_with_mean_pooling(live_server: Any, text_app: Any, smollm_engine: Any) -> None:
    url = live_server(text_app(smollm_engine)) + "/v1"
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    result = client.embeddings.create(model="SmolLM2-135M-Instruct", input=["cat", "cat", "a long sentence"])
    got = vectors(result)
    assert got.shape == (3, 576)
    assert np.allclose(got[0], got[1], atol=1e-5) and not np.allclose(got[0], got[2], atol=1e-2)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
