"""/v1/completions on real llama.cpp (SmolLM2-135M) through the worker app, with the openai client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

MODEL = "SmolLM2-135M-Instruct"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, smollm_engine: Any) -> str:
    return live_server(text_app(smollm_engine)) + "/v1"


def test_text_prompt_shape_and_usage(client: openai.OpenAI) -> None:
    result = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    assert result.object == "text_completion" and result.model == MODEL
    choice = result.choices[0]
    assert choice.index == 0 and choice.finish_reason == "length" and choice.logprobs is None and choice.text
    assert result.usage.completion_tokens == 6
    assert result.usage.total_tokens == result.usage.prompt_tokens + 6


def test_token_prompts_match_text_prompts(client: openai.OpenAI, smollm_engine: Any) -> None:
    tokens = smollm_engine.tokenize(PROMPT)
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0)
    by_tokens = client.completions.create(model=MODEL, prompt=tokens, max_tokens=5, temperature=0)
    assert by_tokens.choices[0].text == by_text.choices[0].text
    several = client.completions.create(model=MODEL, prompt=[tokens, tokens], max_tokens=5, temperature=0, n=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert {c.text for c in several.choices} == {by_text.choices[0].text}
    assert several.usage.prompt_tokens == 2 * len(tokens)


def test_echo_stop_and_legacy_logprobs(client: openai.OpenAI) -> None:
    echoed = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True,
                                       logprobs=2)
    choice = echoed.choices[0]
    assert choice.text.startswith(PROMPT)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert all(len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == len(PROMPT)
    assert "".join(lp.tokens) == choice.text[len(PROMPT):]
    plain = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0).choices[0].text
    stop = plain.strip()[:2]
    stopped = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=stop)
    assert stopped.choices[0].text == plain[: plain.index(stop)] and stopped.choices[0].finish_reason == "stop"


def test_stream_with_usage(base_url: str) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base_url + "/completions", json=body, timeout=60) as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and {"id", "created", "model", "choices"} <= set(c) for c in chunks)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    plain = httpx.post(base_url + "/completions", json={**body, "stream": False, "stream_options": None},
                       timeout=60).json()
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == plain["choices"][0]["text"]


def test_stream_of_two_prompts_with_n2_numbers_choices_across_prompts(client: openai.OpenAI) -> None:
    prompts = [PROMPT, "Water boils at"]
    stream = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=3, temperature=0, stream=True,
                                       stream_options={"include_usage": True})
    texts: dict[int, str] = {}
    finishes: dict[int, list[str]] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert finishes == {i: ["length"] for i in range(4)}
    whole = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=3, temperature=0)
    assert texts == {c.index: c.text for c in whole.choices}
    assert usage is not None and usage.completion_tokens == 12
    assert usage.prompt_tokens == whole.usage.prompt_tokens


def test_suffix_without_infill_tokens_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt="def f(", suffix="return 1", max_tokens=4)
    assert caught.value.param == "suffix" and "fill-in-the-middle" in caught.value.body["message"]


@pytest.mark.parametrize("body, param", [
    ({"prompt": [999999], "max_tokens": 2}, "prompt"),
    ({"prompt": PROMPT, "logprobs": 6}, "logprobs"),
    ({"prompt": PROMPT, "max_tokens": 100000}, "prompt"),
    ({"prompt": [], "max_tokens": 2}, "prompt"),
])
def test_bad_requests(base_url: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(base_url + "/completions", json={"model": MODEL, **body}, timeout=60)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_stream_errors_before_the_first_token_are_plain_400s(base_url: str) -> None:
    body = {"model": MODEL, "prompt": [5, 10**7], "max_tokens": 2, "stream": True}
    response = httpx.post(base_url + "/completions", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
