"""best_of ranks its candidates by mean log-probability: exact on the fake engine, whose log-probabilities
are fixed (the real model's shape and counts are checked in test_completions_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from runtime.engines.fake import FakeEngine, word_token
from runtime.spec import ModelSpec


@pytest.fixture(scope="module")
def client(live_server: Any, text_app: Any) -> Iterator[openai.OpenAI]:
    engine = FakeEngine(ModelSpec("fake-llm", "llm", "fake", {"model": Path("none")}))
    yield openai.OpenAI(base_url=live_server(text_app(engine)) + "/v1", api_key="none", max_retries=0)
    engine.close()


def mean(choice: Any) -> float:
    return sum(choice.logprobs.token_logprobs) / len(choice.logprobs.token_logprobs)


def test_best_of_returns_the_candidates_with_the_highest_mean_logprob(client: openai.OpenAI) -> None:
    # A bias makes "alpha" win where it is less likely than the favourite, so the candidates score apart.
    body = {"model": "fake-llm", "prompt": ["one", "two"], "max_tokens": 6, "logprobs": 1, "seed": 3,
            "logit_bias": {str(word_token("alpha")): 5.5}}
    every = client.completions.create(**body, n=4).choices  # the same four candidates per prompt
    best = client.completions.create(**body, n=2, best_of=4).choices
    assert [c.index for c in best] == [0, 1, 2, 3]
    for prompt in range(2):
        candidates = sorted(every[prompt * 4:prompt * 4 + 4], key=mean, reverse=True)
        assert [c.text for c in best[prompt * 2:prompt * 2 + 2]] == [c.text for c in candidates[:2]]
    assert len({round(mean(c), 6) for c in every}) > 2  # the candidates really differ in score
