"""The reranking path of the llama engine on a real BERT encoder under a cross-encoder head: the store tells
a reranker from an embedder, pairs are laid out as transformers lays them out, and the score is what
transformers' BertForSequenceClassification computes (a numpy forward pass from the same checkpoint)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli import demo_models
from runtime.store.metadata import describe, text_kind

QUERY = "how many people live in berlin"
DOCUMENTS = ["berlin has a population of about 3.7 million people.", "the cat sat on the mat.",
             "bananas are yellow and rich in potassium."]


@pytest.fixture(scope="module")
def reranker(minilm_reranker_gguf: Path) -> Iterator[Any]:
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    engine = LlamaEngine(ModelSpec("minilm-rank", "rerank", "llama", {"model": minilm_reranker_gguf}))
    yield engine
    engine.close()


def test_the_store_tells_rerankers_from_embedders(minilm_reranker_gguf: Path, minilm_gguf: Path) -> None:
    kind, meta = describe({"model": [minilm_reranker_gguf]})
    assert kind == "rerank" and meta["pooling"] == "rank" and meta["has_classifier"]
    assert describe({"model": [minilm_gguf]})[0] == "embedding"
    # llama.cpp's converter writes no pooling for cross-encoders: the head alone says "reranker".
    assert text_kind({"architecture": "bert", "pooling": None, "has_classifier": True}) == "rerank"
    assert text_kind({"architecture": "bert", "pooling": "mean", "has_classifier": False}) == "embedding"


def test_capabilities_and_refusals(reranker: Any) -> None:
    assert reranker.capabilities == {"rerank", "tokenize", "detokenize"}
    with pytest.raises(Exception, match="reranker"):
        reranker.embed([[101, 102]], threading.Event())


def test_pairs_are_laid_out_as_transformers_does(reranker: Any) -> None:
    cls, sep = reranker.tokenize("", add_special=True)
    query, document = reranker.tokenize(QUERY, add_special=False), reranker.tokenize(DOCUMENTS[0], add_special=False)
    assert reranker.rank_pair(QUERY, DOCUMENTS[0]) == [cls, *query, sep, *document, sep]


def test_scores_are_the_cross_encoders(reranker: Any) -> None:
    pairs = [reranker.rank_pair(QUERY, text) for text in DOCUMENTS]
    scores = reranker.rank(pairs, threading.Event())
    expected = [sigmoid(logit) for logit in reference_logits(pairs)]
    assert scores == pytest.approx(expected, abs=0.02)
    assert max(expected) - min(expected) > 0.1  # the documents score apart, so a wrong head would show
    # Shared decodes do not mix pairs: each scores the same alone (up to float16 rounding of another batch shape).
    assert [reranker.rank([p], threading.Event())[0] for p in pairs] == pytest.approx(scores, abs=2e-3)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def reference_logits(pairs: list[list[int]]) -> list[float]:
    """transformers' BertForSequenceClassification on the checkpoint the GGUF was made from (token type 0,
    as llama.cpp feeds it), in float32 numpy."""
    src = demo_models.minilm_dir()
    cfg = json.loads((src / "config.json").read_text())
    weights = {k.removeprefix("bert."): v.astype(np.float32)
               for k, v in demo_models._read_safetensors(src / "model.safetensors").items()}
    weights |= demo_models.seeded_rank_head(cfg["hidden_size"])
    return [float(linear(weights, forward(weights, cfg, tokens), "classifier")[0]) for tokens in pairs]


def linear(w: dict[str, np.ndarray], x: np.ndarray, name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def forward(w: dict[str, np.ndarray], cfg: dict[str, Any], tokens: list[int]) -> np.ndarray:
    """The pooled [CLS] state: tanh(pooler(last hidden state of [CLS]))."""
    eps, heads = cfg["layer_norm_eps"], cfg["num_attention_heads"]

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]

    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    n = len(tokens)
    x = w["embeddings.word_embeddings.weight"][tokens] + w["embeddings.position_embeddings.weight"][:n]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        q, k, v = (linear(w, x, p + f"attention.self.{name}").reshape(n, heads, -1).transpose(1, 0, 2)
                   for name in ("query", "key", "value"))
        att = q @ k.transpose(0, 2, 1) / math.sqrt(q.shape[-1])
        att = np.exp(att - att.max(-1, keepdims=True))
        context = (att / att.sum(-1, keepdims=True) @ v).transpose(1, 0, 2).reshape(n, -1)
        x = norm(x + linear(w, context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        hidden = gelu(linear(w, x, p + "intermediate.dense"))
        x = norm(x + linear(w, hidden, p + "output.dense"), p + "output.LayerNorm")
    return np.tanh(linear(w, x[0], "pooler.dense"))
