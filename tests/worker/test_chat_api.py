"""/v1/chat/completions on real llama.cpp (SmolLM2-135M) through the worker app, with the openai client."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from greedy import chat_scored, greedy_prefix, same_greedy_run, text_of

STREAMS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "openai-streams"  # beside the repo
MODEL = "SmolLM2-135M-Instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
SUM = [{"role": "user", "content": "What is 2+2?"}]  # answered with no near-tie early on
SCORED = {"logprobs": True, "top_logprobs": 2}  # what comparing two greedy runs needs (greedy.py)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}}, "required": ["zone"]}}}


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, smollm_engine: Any) -> str:
    return live_server(text_app(smollm_engine)) + "/v1"


def recorded_chunks(name: str) -> list[dict[str, Any]]:
    lines = (STREAMS / name).read_text().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def raw_stream(base_url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def keys(obj: Any) -> Any:
    """The key structure of a JSON value, for comparing shapes key by key."""
    if isinstance(obj, dict):
        return {k: keys(v) for k, v in obj.items()}
    return type(obj).__name__


def test_non_stream_shape_and_usage(client: openai.OpenAI, base_url: str) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 8, "temperature": 0}
    data = httpx.post(base_url + "/chat/completions", json=body, timeout=120).json()
    assert set(data) >= {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert data["object"] == "chat.completion" and data["model"] == MODEL and isinstance(data["created"], int)
    choice = data["choices"][0]
    assert set(choice) == {"index", "message", "logprobs", "finish_reason"} and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 8
    # The typed client, with max_completion_tokens, against the raw JSON with max_tokens: the same run up
    # to a near-tie (each a separate run: the second reuses the first's cached prompt).
    typed = client.chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=8, temperature=0,
                                           **SCORED).choices[0]
    raw = httpx.post(base_url + "/chat/completions", json={**body, **SCORED}, timeout=120).json()["choices"][0]
    mine, reference = chat_scored(typed.logprobs), chat_scored(raw["logprobs"])
    assert text_of(mine) == typed.message.content and text_of(reference) == raw["message"]["content"]
    if same_greedy_run(mine, reference):
        assert typed.message.content == raw["message"]["content"] and typed.finish_reason == raw["finish_reason"]


def test_stream_matches_recorded_chunk_shapes(base_url: str) -> None:
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    ours = raw_stream(base_url, body)
    theirs = recorded_chunks("finish-length.sse")
    assert keys(ours[0]) == keys(theirs[0])  # role chunk
    assert keys(ours[1]) == keys(theirs[1])  # content chunk
    assert keys(ours[-2]) == keys(theirs[-2])  # finish chunk
    assert set(ours[-1]) == set(theirs[-1]) and ours[-1]["choices"] == []
    assert ours[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert all("role" not in c["choices"][0]["delta"] for c in ours[1:-1])
    assert ours[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert len({(c["id"], c["created"], c["system_fingerprint"]) for c in ours}) == 1
    assert all(c["object"] == "chat.completion.chunk" for c in ours)
    assert ours[-1]["usage"]["completion_tokens"] == 6
    assert sum("usage" in c for c in ours) == 1


def test_stream_equals_non_stream_with_temperature_zero(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, temperature=0, **SCORED)
    parts = [c.choices[0] for c in client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12,
                                                                  temperature=0, stream=True, **SCORED) if c.choices]
    text = "".join(c.delta.content or "" for c in parts)
    streamed, whole = [lp for c in parts for lp in chat_scored(c.logprobs)], chat_scored(full.choices[0].logprobs)
    assert text_of(streamed) == text and text_of(whole) == full.choices[0].message.content
    if same_greedy_run(streamed, whole):  # else they parted at a near-tie, which same_greedy_run checked
        assert text == full.choices[0].message.content


def test_seed_makes_sampling_repeatable(client: openai.OpenAI, live_server: Any, text_app: Any,
                                       smollm_gguf: Path) -> None:
    from runtime.engines.llama.engine import LlamaEngine
    from runtime.spec import ModelSpec

    def ask(on: openai.OpenAI, seed: int) -> str:
        r = on.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=16, temperature=1.0, seed=seed)
        return r.choices[0].message.content or ""

    # The repeat on a fresh engine of its own: on a warm one it reuses the first run's cached KV cells,
    # which sit elsewhere in the cache, and multi-threaded attention may then round a near-tie (here: a
    # draw on the edge of two tokens' shares) the other way.
    answers = []
    for _ in range(2):
        engine = LlamaEngine(ModelSpec(MODEL, "llm", "llama", {"model": smollm_gguf}))
        try:
            url = live_server(text_app(engine)) + "/v1"
            answers.append(ask(openai.OpenAI(base_url=url, api_key="none", max_retries=0), 7))
        finally:
            engine.close()
    assert answers[0] == answers[1]
    assert len({ask(client, s) for s in (1, 2, 3)}) > 1


def test_stop_and_length(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model=MODEL, messages=SUM, max_tokens=16, temperature=0, **SCORED)
    text = free.choices[0].message.content or ""
    assert free.choices[0].finish_reason in ("stop", "length")
    # Cut before the free run's first near-tie: up to there every greedy run of the request is the same.
    cut = greedy_prefix(chat_scored(free.choices[0].logprobs))[3:6]
    assert len(cut) == 3, free.choices[0].logprobs
    stopped = client.chat.completions.create(model=MODEL, messages=SUM, max_tokens=16, temperature=0, stop=[cut])
    assert stopped.choices[0].message.content == text[: text.index(cut)]
    assert stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=2, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 2


def test_n_choices_stream_and_non_stream(client: openai.OpenAI, base_url: str) -> None:
    result = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, n=2, seed=1)
    assert [c.index for c in result.choices] == [0, 1]
    # End-of-turn tokens banned: each choice runs to max_tokens, whatever it samples.
    events = raw_stream(base_url, {"model": MODEL, "messages": HELLO, "max_tokens": 4, "n": 2, "stream": True,
                                   "logit_bias": {"0": -100, "2": -100}})
    for index in (0, 1):
        mine = [e["choices"][0] for e in events if e["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert sum("role" in c["delta"] for c in mine) == 1
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["length"]


def test_logprobs_shapes(client: openai.OpenAI, base_url: str) -> None:
    result = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4, logprobs=True,
                                            top_logprobs=3, temperature=0)
    entries = result.choices[0].logprobs.content
    assert len(entries) == 4
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode() == entry.token
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.top_logprobs[0].token == entry.token  # greedy picks the most likely token
    events = raw_stream(base_url, {"model": MODEL, "messages": HELLO, "max_tokens": 2, "logprobs": True,
                                   "stream": True, "temperature": 0})
    recorded = recorded_chunks("logprobs.sse")
    assert keys(events[0]) == keys(recorded[0])
    assert events[0]["choices"][0]["logprobs"] == {"content": [], "refusal": None}
    entry = events[1]["choices"][0]["logprobs"]["content"][0]
    assert keys(entry) == keys(recorded[1]["choices"][0]["logprobs"]["content"][0])
    assert events[1]["choices"][0]["logprobs"]["content"][0]["top_logprobs"] == []


def test_required_tool_call_is_valid(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="required", max_tokens=64, temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id) and call.type == "function"
    arguments = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(arguments) == {"city"} and isinstance(arguments["city"], str)
    else:
        assert call.function.name == "get_time" and arguments["zone"] in ("UTC", "CET")


def test_named_tool_call_streams_openai_deltas(base_url: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Oslo?"}], "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 64,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    events = raw_stream(base_url, body)
    recorded = recorded_chunks("tool-call.sse")
    assert keys(events[0]) == keys(recorded[0])
    first = events[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["function"] == {"name": "get_weather", "arguments": ""} and first["index"] == 0
    fragments = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[1:-2]]
    assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments)
    arguments = json.loads("".join(f["function"]["arguments"] for f in fragments))
    assert set(arguments) == {"city"}
    assert events[-2]["choices"][0]["finish_reason"] == "stop"  # OpenAI: a named choice finishes with stop
    assert keys(events[-2]) == keys(recorded[-2])


def test_tool_history_and_developer_role_render(client: openai.OpenAI) -> None:
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny"}]},
    ]
    result = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL], max_tokens=8)
    assert result.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 150}},
              "required": ["name", "age"], "additionalProperties": False}
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Invent a person."}], max_tokens=40, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    data = json.loads(result.choices[0].message.content or "")
    assert set(data) == {"name", "age"} and isinstance(data["age"], int) and isinstance(data["name"], str)
    loose = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=24, temperature=0,
                                           response_format={"type": "json_object"})
    if loose.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)


def test_context_length_exceeded_wording(client: openai.OpenAI, smollm_engine: Any) -> None:
    long = "word " * (smollm_engine.context_length + 10)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": long}], max_tokens=5)
    error = caught.value
    assert error.code == "context_length_exceeded" and error.param == "messages"
    limit = smollm_engine.context_length
    assert error.body["message"].startswith(f"This model's maximum context length is {limit} tokens.")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=smollm_engine.context_length)
    assert "in the completion" in caught.value.message


@pytest.mark.parametrize("body, param", [
    ({"messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"messages": HELLO, "top_logprobs": 2}, "top_logprobs"),
    ({"messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"messages": HELLO, "tool_choice": "required"}, "tool_choice"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]},
     "messages[0].content"),
    ({}, "messages"),
    ({"messages": HELLO, "logit_bias": {"99999999": 5}}, "logit_bias"),
    ({"messages": HELLO, "logit_bias": {"hello": 5}}, "logit_bias"),
])
def test_bad_requests_are_400_envelopes(base_url: str, body: dict[str, Any], param: str) -> None:
    response = httpx.post(base_url + "/chat/completions", json={"model": MODEL, **body}, timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_client_disconnect_frees_the_engine(base_url: str, client: openai.OpenAI, smollm_engine: Any) -> None:
    # End-of-turn tokens banned: only the disconnect can end this request within the next minute.
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 4000, "stream": True, "temperature": 1.0,
            "logit_bias": {"0": -100, "2": -100}}
    with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=60) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert smollm_engine.info()["active_sequences"] == 1
    deadline = time.monotonic() + 5
    while smollm_engine.info()["active_sequences"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smollm_engine.info()["active_sequences"] == 0
    after = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=3, temperature=0)
    assert after.choices[0].finish_reason == "length"


def test_sdk_parse_with_a_nested_pydantic_model(client: openai.OpenAI) -> None:
    from pydantic import BaseModel, Field

    # Bounded strings and lists: the grammar then guarantees the answer fits in max_tokens, whatever
    # a tiny model would ramble (its greedy choices can flip between runs at near-ties).
    class City(BaseModel):
        name: str = Field(max_length=16)
        country: str = Field(max_length=16)

    class Trip(BaseModel):
        cities: list[City] = Field(min_length=1, max_length=2)
        days: int

    result = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": "Plan a trip."}],
                                           response_format=Trip, max_tokens=200, temperature=0)
    trip = result.choices[0].message.parsed
    assert isinstance(trip, Trip) and all(isinstance(c, City) for c in trip.cities)
