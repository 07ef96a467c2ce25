"""/v1/completions on real llama.cpp (SmolLM2-135M) through the worker app, with the openai client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from greedy import completion_scored, greedy_prefix, same_greedy_run, text_of

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
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, temperature=0, logprobs=2)
    by_tokens = client.completions.create(model=MODEL, prompt=tokens, max_tokens=5, temperature=0, logprobs=2)
    assert by_tokens.usage.prompt_tokens == by_text.usage.prompt_tokens == len(tokens)
    several = client.completions.create(model=MODEL, prompt=[tokens, tokens], max_tokens=5, temperature=0, n=2,
                                        logprobs=2)
    assert [c.index for c in several.choices] == [0, 1, 2, 3]
    assert several.usage.prompt_tokens == 2 * len(tokens)
    # Each a separate greedy run (a warm cache, forked choices, a batch of sequences): the same tokens
    # as the text prompt's up to a near-tie.
    reference = completion_scored(by_text.choices[0].logprobs)
    assert text_of(reference) == by_text.choices[0].text
    for choice in [by_tokens.choices[0], *several.choices]:
        mine = completion_scored(choice.logprobs)
        assert text_of(mine) == choice.text
        if same_greedy_run(mine, reference):
            assert choice.text == by_text.choices[0].text


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
    free = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2).choices[0]
    plain = free.text
    # Cut before the free run's first near-tie: up to there every greedy run of the request is the same.
    stop = greedy_prefix(completion_scored(free.logprobs)).strip()[:2]
    assert len(stop) == 2, free.logprobs
    stopped = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, stop=stop)
    assert stopped.choices[0].text == plain[: plain.index(stop)] and stopped.choices[0].finish_reason == "stop"


def test_stream_with_usage(base_url: str) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logprobs": 2}
    with httpx.stream("POST", base_url + "/completions", json=body, timeout=60) as response:
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "text_completion" and {"id", "created", "model", "choices"} <= set(c) for c in chunks)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and finishes[:-1] == [None] * (len(finishes) - 1)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    plain = httpx.post(base_url + "/completions", json={**body, "stream": False, "stream_options": None},
                       timeout=60).json()["choices"][0]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    streamed = [lp for c in chunks if c["choices"] for lp in completion_scored(c["choices"][0]["logprobs"])]
    whole = completion_scored(plain["logprobs"])
    assert text_of(streamed) == text and text_of(whole) == plain["text"]
    if same_greedy_run(streamed, whole):  # else they parted at a near-tie, which same_greedy_run checked
        assert text == plain["text"]


def test_stream_of_two_prompts_with_n2_numbers_choices_across_prompts(client: openai.OpenAI) -> None:
    prompts = [PROMPT, "Water boils at"]
    stream = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=3, temperature=0, stream=True,
                                       stream_options={"include_usage": True}, logprobs=2)
    texts: dict[int, str] = {}
    scored: dict[int, list[Any]] = {}
    finishes: dict[int, list[str]] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            scored.setdefault(choice.index, []).extend(completion_scored(choice.logprobs))
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert finishes == {i: ["length"] for i in range(4)}
    whole = client.completions.create(model=MODEL, prompt=prompts, n=2, max_tokens=3, temperature=0, logprobs=2)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3] and set(texts) == {0, 1, 2, 3}
    # Streamed and whole are separate greedy runs, forked and batched: the same up to a near-tie.
    for choice in whole.choices:
        mine, reference = scored[choice.index], completion_scored(choice.logprobs)
        assert text_of(mine) == texts[choice.index] and text_of(reference) == choice.text
        if same_greedy_run(mine, reference):
            assert texts[choice.index] == choice.text
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


@pytest.mark.parametrize("prompt", ["", [""], [[]]])
def test_an_empty_prompt_starts_a_document(client: openai.OpenAI, smollm_engine: Any, prompt: Any) -> None:
    result = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0,
                                       logit_bias={"0": -100, "2": -100})  # no end of text before 4 tokens
    assert result.usage.prompt_tokens == 1 and result.usage.completion_tokens == 4
    assert result.choices[0].finish_reason == "length" and result.choices[0].text


def test_an_omitted_or_null_prompt_starts_a_document(base_url: str, smollm_engine: Any) -> None:
    for body in ({"model": MODEL, "max_tokens": 2}, {"model": MODEL, "max_tokens": 2, "prompt": None}):
        response = httpx.post(base_url + "/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["prompt_tokens"] == len(smollm_engine.document_start()) == 1


def test_best_of_returns_n_of_its_candidates_and_counts_them_all(client: openai.OpenAI) -> None:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 4, "logit_bias": {"0": -100, "2": -100}}
    result = client.completions.create(**body, n=2, best_of=3, seed=5)
    assert [c.index for c in result.choices] == [0, 1]
    assert all(c.logprobs is None and c.finish_reason == "length" for c in result.choices)  # not asked for
    assert result.usage.completion_tokens == 3 * 4  # every candidate is generated (and billed, as OpenAI does)
    scored = client.completions.create(**body, n=1, best_of=2, logprobs=1, seed=5).choices
    assert len(scored) == 1 and len(scored[0].logprobs.tokens) == 4


def test_best_of_beyond_parallel_generates_in_rounds(client: openai.OpenAI, smollm_engine: Any) -> None:
    candidates = smollm_engine.parallel + 2
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "logit_bias": {"0": -100, "2": -100}}
    result = client.completions.create(**body, n=2, best_of=candidates, seed=11)
    assert [c.index for c in result.choices] == [0, 1]
    assert result.usage.completion_tokens == candidates * 3


@pytest.mark.parametrize(("fields", "message"), [
    ({"n": 3, "best_of": 2}, "best_of must be greater than or equal to n."),
    ({"best_of": 2, "stream": True}, "Cannot stream results with best_of greater than n."),
])
def test_best_of_refusals(base_url: str, fields: dict[str, Any], message: str) -> None:
    response = httpx.post(base_url + "/completions", json={"model": MODEL, "prompt": PROMPT, **fields}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["message"] == message
    assert response.json()["error"]["param"] == "best_of"
