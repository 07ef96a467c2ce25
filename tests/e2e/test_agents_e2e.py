"""The agent APIs on the real SmolLM2 model through a real server: OpenAI Responses through the official
openai client, Anthropic Messages through the official anthropic client, plain HTTP for the edges, and
both streams compared with the recorded shapes in tests/data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from serverproc import local_record, server_process

from runtime.config import Settings
from runtime.store.keys import KeyStore

MODEL = "smol"
DATA = Path(__file__).resolve().parent.parent / "data"
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm_gguf: Path) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("agents")
    with server_process(home, [local_record(MODEL, "llm", {"model": smollm_gguf})]) as (root, key):
        other, _ = KeyStore(Settings.load(environ={"STACKLET_HOME": str(home)}).paths).create("other")
        yield {"root": root, "key": key, "other": other}


@pytest.fixture
def oai(server: dict[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["root"] + "/v1", api_key=server["key"], max_retries=0)


@pytest.fixture
def claude(server: dict[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server["root"], api_key=server["key"], max_retries=0)


def sse_events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]


def shape(events: list[dict[str, Any]]) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Each event's type, its keys, and the keys of the object it carries; runs of deltas collapse to one."""
    out: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for event in events:
        if event["type"] == "ping":
            continue  # Anthropic may send pings anywhere
        carried = next((event[key] for key in ("response", "item", "part", "content_block", "delta", "message")
                        if isinstance(event.get(key), dict)), {})
        kind = "response.completed" if event["type"] == "response.incomplete" else event["type"]  # same shape
        keys = (kind, tuple(sorted(event)), tuple(sorted(carried)))
        if not out or out[-1] != keys:
            out.append(keys)
    return out


def recorded(name: str) -> list[dict[str, Any]]:
    return sse_events((DATA / name).read_text())


# OpenAI Responses


def test_response_plain_and_continued_from_the_kv_cache(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=MODEL, input="Name a colour.", instructions="Answer in one word.",
                                 max_output_tokens=32, temperature=0)
    assert first.status == "completed" and first.output_text.strip()
    assert first.model == MODEL and first.usage is not None and first.usage.output_tokens > 0
    second = oai.responses.create(model=MODEL, input="Another one.", previous_response_id=first.id,
                                  max_output_tokens=32, temperature=0)
    assert second.previous_response_id == first.id and second.output_text.strip()
    # The stored conversation went back to the model, and its prefix came from the KV cache.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert second.usage.input_tokens_details.cached_tokens > 0


def test_response_stream_matches_the_final_object_and_the_recorded_shape(oai: openai.OpenAI,
                                                                        server: dict[str, str]) -> None:
    with oai.responses.stream(model=MODEL, input="Count to three.", max_output_tokens=200, temperature=0) as stream:
        events = list(stream)
    final = events[-1].response  # completed, or incomplete should the model run to the limit
    assert events[-1].type == f"response.{final.status}" and final.status in ("completed", "incomplete")
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text
    assert [event.sequence_number for event in events] == list(range(len(events)))
    raw = httpx.post(server["root"] + "/v1/responses", headers={"Authorization": f"Bearer {server['key']}"},
                     json={"model": MODEL, "input": "Hi", "stream": True, "max_output_tokens": 200}, timeout=120)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert shape(sse_events(raw.text)) == shape(recorded("responses-text.sse"))


def test_response_function_call_round_trip(oai: openai.OpenAI, server: dict[str, str]) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": True}]
    called = oai.responses.create(model=MODEL, input="What is the weather in Paris?", tools=tools,
                                  tool_choice="required", max_output_tokens=64)
    call = called.output[0]
    assert [item.type for item in called.output] == ["function_call"] and call.name == "get_weather"
    assert isinstance(json.loads(call.arguments)["city"], str)
    answer = oai.responses.create(model=MODEL, previous_response_id=called.id, tools=tools, max_output_tokens=32,
                                  input=[{"type": "function_call_output", "call_id": call.call_id,
                                          "output": '{"temperature_c": 21}'}])
    assert answer.status in ("completed", "incomplete") and answer.output
    streamed = httpx.post(server["root"] + "/v1-openai/responses", timeout=120,
                          headers={"Authorization": f"Bearer {server['key']}"},
                          json={"model": MODEL, "input": "Weather in Rome?", "tools": tools, "stream": True,
                                "tool_choice": {"type": "function", "name": "get_weather"}})
    assert shape(sse_events(streamed.text)) == shape(recorded("responses-function-call.sse"))


def test_response_json_schema_and_incomplete(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 20}},
              "required": ["colour"], "additionalProperties": False}
    answer = oai.responses.create(model=MODEL, input="Give a colour as JSON.", max_output_tokens=100,
                                  text={"format": {"type": "json_schema", "name": "c", "schema": schema,
                                                   "strict": True}})
    assert isinstance(json.loads(answer.output_text)["colour"], str)
    cut = oai.responses.create(model=MODEL, input="Write a long story.", max_output_tokens=3)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"


def test_stored_responses_get_delete_items_and_belong_to_their_key(oai: openai.OpenAI,
                                                                    server: dict[str, str]) -> None:
    made = oai.responses.create(model=MODEL, input=[{"role": "user", "content": "Hello"}], max_output_tokens=8)
    assert oai.responses.retrieve(made.id).id == made.id
    items = oai.responses.input_items.list(made.id)
    assert [item.type for item in items.data] == ["message"] and items.data[0].content[0].text == "Hello"
    stranger = openai.OpenAI(base_url=server["root"] + "/v1", api_key=server["other"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.create(model=MODEL, input="Hi", previous_response_id=made.id)
    oai.responses.delete(made.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(made.id)
    unstored = oai.responses.create(model=MODEL, input="Hi", store=False, max_output_tokens=4)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": MODEL}, "input"),
    ({"model": MODEL, "input": [{"type": "file_search_call"}]}, "input[0].type"),
    ({"model": MODEL, "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"model": MODEL, "input": "x", "background": True}, "background"),
    ({"model": MODEL, "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": MODEL, "input": "x", "temperature": 3}, "temperature"),
])
def test_response_bad_requests_name_the_field(server: dict[str, str], body: dict[str, Any], param: str) -> None:
    reply = httpx.post(server["root"] + "/v1/responses", json=body,
                       headers={"Authorization": f"Bearer {server['key']}"})
    assert reply.status_code == 400
    assert reply.json()["error"]["param"] == param and reply.json()["error"]["type"] == "invalid_request_error"


def test_unknown_model_is_404_before_anything_loads(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.responses.create(model="nope", input="Hi")


# Anthropic Messages


def test_message_plain_stream_and_count_tokens(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    made = claude.messages.create(model=MODEL, max_tokens=24, messages=messages, system="Be brief.")
    assert made.type == "message" and made.role == "assistant" and made.content[0].type == "text"
    assert made.stop_reason in ("end_turn", "max_tokens") and made.usage.output_tokens > 0
    counted = claude.messages.count_tokens(model=MODEL, messages=messages, system="Be brief.")
    assert counted.input_tokens == made.usage.input_tokens + made.usage.cache_read_input_tokens
    with claude.messages.stream(model=MODEL, max_tokens=24, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text and final.usage.output_tokens > 0


def test_message_tool_use_and_result(claude: anthropic.Anthropic, server: dict[str, str]) -> None:
    tools = [{"name": "get_weather", "description": "Weather for a city", "input_schema": WEATHER}]
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    made = claude.messages.create(model=MODEL, max_tokens=64, messages=asked, tools=tools,
                                  tool_choice={"type": "any"})
    use = next(block for block in made.content if block.type == "tool_use")
    assert made.stop_reason == "tool_use" and use.name == "get_weather" and isinstance(use.input["city"], str)
    followed = claude.messages.create(model=MODEL, max_tokens=24, tools=tools, messages=[
        *asked, {"role": "assistant", "content": made.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C"}]}])
    assert followed.content
    raw = httpx.post(server["root"] + "/v1/messages", headers={"x-api-key": server["key"]}, timeout=120,
                     json={"model": MODEL, "max_tokens": 64, "messages": asked, "tools": tools, "stream": True,
                           "tool_choice": {"type": "tool", "name": "get_weather"}})
    # The recording has a text block (index 0) before its tool call; a forced call starts with the call.
    assert shape(sse_events(raw.text)) == shape([e for e in recorded("messages-tool-use.sse") if e.get("index") != 0])


def test_message_stream_has_the_recorded_shape(server: dict[str, str]) -> None:
    raw = httpx.post(server["root"] + "/v1/messages", timeout=120,
                     headers={"x-api-key": server["key"], "anthropic-version": "2023-06-01"},
                     json={"model": MODEL, "max_tokens": 16, "stream": True,
                           "messages": [{"role": "user", "content": "Hi"}]})
    assert shape(sse_events(raw.text)) == shape(recorded("messages-text.sse"))


@pytest.mark.parametrize(("headers", "body", "status", "kind"), [
    ({"x-api-key": "sk-wrong"}, {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]},
     401, "authentication_error"),
    ({}, {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]},
     401, "authentication_error"),
    (None, {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, 400, "invalid_request_error"),
    (None, {"model": "nope", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]},
     404, "not_found_error"),
    (None, {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
     400, "invalid_request_error"),
])
def test_message_errors_use_anthropics_envelope(server: dict[str, str], headers: dict[str, str] | None,
                                                body: dict[str, Any], status: int, kind: str) -> None:
    reply = httpx.post(server["root"] + "/v1/messages", json=body,
                       headers={"x-api-key": server["key"]} if headers is None else headers)
    assert reply.status_code == status
    assert reply.json()["type"] == "error" and reply.json()["error"]["type"] == kind
    assert reply.json()["error"]["message"]


def test_stacklet_test_responses_and_messages(server: dict[str, str]) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    for command, url in (("responses", server["root"] + "/v1"), ("messages", server["root"])):
        result = CliRunner().invoke(app, ["test", command, MODEL, "--base-url", url, "--api-key", server["key"],
                                          "--json"])
        report = json.loads(result.stdout)
        assert result.exit_code == 0 and report["ok"], result.output
        assert len(report["checks"]) >= 4
    failed = CliRunner().invoke(app, ["test", "messages", "nope", "--base-url", server["root"],
                                      "--api-key", server["key"]])
    assert failed.exit_code == 1 and "FAIL" in failed.output


def test_the_model_list_says_which_apis_a_model_serves(oai: openai.OpenAI, server: dict[str, str]) -> None:
    model = oai.models.retrieve(MODEL)
    assert {"/chat/completions", "/responses", "/messages"} <= set(model.meta["apis"])
    auth = {"Authorization": f"Bearer {server['key']}"}
    for path in ("/v1/responses", "/v1/messages"):
        httpx.post(server["root"] + path, headers=auth, json={"model": "nope", "input": "x"})
    metrics = httpx.get(server["root"] + "/metrics", headers=auth).text
    assert "/v1/responses" in metrics and "/v1/messages" in metrics  # requests are counted per API route


def test_response_custom_tool_with_codex_apply_patch_grammar(oai: openai.OpenAI, server: dict[str, str]) -> None:
    grammar = (DATA / "codex-apply-patch.lark").read_text()
    tool = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch.",
            "format": {"type": "grammar", "syntax": "lark", "definition": grammar}}
    made = oai.responses.create(model=MODEL, input="Create the file hello.txt that says Hello world.",
                                tools=[tool], max_output_tokens=256, temperature=0,
                                tool_choice={"type": "custom", "name": "apply_patch"})
    call = made.output[-1]
    assert call.type == "custom_tool_call" and call.name == "apply_patch"  # never a function_call: Codex aborts
    assert call.input.startswith("*** Begin Patch\n")
    # The grammar makes a finished call a whole patch; a small model may still run out of tokens first.
    assert made.status == "incomplete" or call.input.rstrip("\n").endswith("*** End Patch"), call.input
    later = oai.responses.create(model=MODEL, previous_response_id=made.id, tools=[tool], max_output_tokens=16,
                                 input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Done"}])
    assert later.output
    raw = httpx.post(server["root"] + "/v1/responses", headers={"Authorization": f"Bearer {server['key']}"},
                     timeout=120, json={"model": MODEL, "input": "Add a.txt", "tools": [tool], "stream": True,
                                        "max_output_tokens": 120,
                                        "tool_choice": {"type": "custom", "name": "apply_patch"}})
    events = sse_events(raw.text)
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta")
    done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert deltas == done["input"] and done["input"].startswith("*** Begin Patch")


def test_message_names_the_stop_sequence_that_ended_it(server: dict[str, str]) -> None:
    body = {"model": MODEL, "max_tokens": 32, "temperature": 0, "stop_sequences": ["zzz", " "],
            "messages": [{"role": "user", "content": "Write a sentence about the sea."}]}
    made = httpx.post(server["root"] + "/v1/messages", headers={"x-api-key": server["key"]}, json=body,
                      timeout=120).json()
    assert (made["stop_reason"], made["stop_sequence"]) == ("stop_sequence", " ")
    assert " " not in made["content"][0]["text"]
