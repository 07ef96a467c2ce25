"""The translation layer on its own: requests to chat bodies, chat events to each API's events, checked
against the official SDKs' own types (reasoning and custom tool calls, which SmolLM2 never produces)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from runtime.agents import messages, responses
from runtime.agents.chatstream import ChatEvents, Failure, Finish, Reasoning, Text, ToolInput, ToolStart, Usage
from runtime.errors import InvalidRequestError
from runtime.protocol.messages import CreateMessageRequest
from runtime.protocol.responses import CreateResponseRequest

OPENAI_EVENTS = TypeAdapter(ResponseStreamEvent)
ANTHROPIC_EVENTS = TypeAdapter(RawMessageStreamEvent)
THINK_THEN_CALL = [Reasoning("Let me "), Reasoning("think."), Text("Calling."),
                   ToolStart(0, "call_1", "apply_patch", True),
                   ToolInput(0, "*** Begin Patch\n"), ToolInput(0, "*** End Patch"), Finish("tool_calls", None),
                   Usage(10, 7, 4, 2)]


def sse(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line[5:]) for line in data.decode().splitlines() if line.startswith("data:")]


def render_response(events: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    renderer = responses.ResponseRenderer(responses.skeleton(CreateResponseRequest(model="m", input="x"), "m"))
    out = renderer.start() + b"".join(renderer.feed(event) for event in events)
    if not isinstance(events[-1], Failure):
        out += renderer.finish()
    return sse(out), renderer.response


def test_reasoning_text_and_a_custom_call_are_valid_responses_events() -> None:
    events, final = render_response(THINK_THEN_CALL)
    for event in events:
        OPENAI_EVENTS.validate_python(event)
    Response.model_validate(final)
    assert [item["type"] for item in final["output"]] == ["reasoning", "message", "custom_tool_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me think."
    assert final["output"][2]["input"] == "*** Begin Patch\n*** End Patch" and final["output"][2]["call_id"] == "call_1"
    kinds = [event["type"] for event in events]
    assert kinds.count("response.reasoning_text.delta") == 2 and "response.custom_tool_call_input.done" in kinds
    assert kinds[-1] == "response.completed" and final["usage"]["output_tokens_details"]["reasoning_tokens"] == 2
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    added = next(event for event in events
                 if event["type"] == "response.output_item.added" and event["item"]["type"] == "message")
    assert added["item"]["status"] == "in_progress"  # events are snapshots, not the item as it ends


def test_a_failed_stream_ends_with_response_failed() -> None:
    events, final = render_response([Text("Hi"), Failure("worker died", "server_error")])
    assert events[-1]["type"] == "response.failed" and final["error"]["message"] == "worker died"
    for event in events:
        OPENAI_EVENTS.validate_python(event)


def test_length_is_incomplete_with_the_reason() -> None:
    events, final = render_response([Text("Hi"), Finish("length", None)])
    assert events[-1]["type"] == "response.incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}


def test_input_items_become_chat_messages_with_calls_joined_to_their_turn() -> None:
    request = CreateResponseRequest(model="m", instructions="Be kind.", input=[
        {"role": "user", "content": "Fix it"},
        {"type": "reasoning", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it."}]},
        {"type": "function_call", "call_id": "c1", "name": "ls", "arguments": "{}"},
        {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
        {"type": "function_call_output", "call_id": "c1", "output": "a.py"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Done"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Look: "},
                                     {"type": "input_image", "image_url": "data:image/png;base64,AA"}]}])
    body = responses.chat_request(request, [], responses.input_items(request))
    roles = [message["role"] for message in body["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "user"]
    assistant = body["messages"][2]
    assert assistant["content"] == "On it." and [c["type"] for c in assistant["tool_calls"]] == ["function", "custom"]
    assert body["messages"][4] == {"role": "tool", "tool_call_id": "c2", "content": "Done"}
    assert body["messages"][5]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "data:image/png;base64,AA", "detail": "auto"}}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_tools_choices_and_formats_map_to_chat_and_hosted_tools_are_dropped() -> None:
    request = CreateResponseRequest(model="m", input="x", tool_choice={"type": "custom", "name": "apply_patch"},
                                    tools=[{"type": "web_search"}, {"type": "function", "name": "ls", "parameters": {}},
                                           {"type": "custom", "name": "apply_patch",
                                            "format": {"type": "grammar", "syntax": "lark",
                                                       "definition": "start: /x/"}}],
                                    text={"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}})
    body = responses.chat_request(request, [], responses.input_items(request))
    assert [tool["type"] for tool in body["tools"]] == ["function", "custom"]
    assert body["tools"][1]["custom"]["format"] == {"type": "grammar",
                                                     "grammar": {"syntax": "lark", "definition": "start: /x/"}}
    assert body["tool_choice"] == {"type": "custom", "custom": {"name": "apply_patch"}}
    assert body["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "n", "schema": {"type": "object"}}}


@pytest.mark.parametrize(("item", "param"), [
    ({"type": "item_reference", "id": "x"}, "input[0].type"),
    ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
    ({"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}, "input[0].content[0]"),
    ({"role": "user", "content": 5}, "input[0].content"),
])
def test_bad_items_name_their_field(item: dict[str, Any], param: str) -> None:
    request = CreateResponseRequest(model="m", input=[item])
    with pytest.raises(InvalidRequestError) as caught:
        responses.chat_request(request, [], responses.input_items(request))
    assert caught.value.param == param


def test_chat_stream_bytes_split_anywhere_give_the_same_events() -> None:
    first_call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a"'}}
    chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hé"}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [first_call]}}]},
              {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                            "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}]
    data = b"".join(f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks) + b"data: [DONE]\n\n"
    whole = list(ChatEvents().feed(data))
    reader = ChatEvents()
    pieces = [event for i in range(0, len(data), 7) for event in reader.feed(data[i:i + 7])]
    assert pieces == whole == [Text("Hé"), ToolStart(0, "call_9", "f", False), ToolInput(0, "{\"a\""),
                               ToolInput(0, ":1}"), Finish("tool_calls", None), Usage(3, 2, 0, 0)]


def render_message(events: list[Any], thinking: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    renderer = messages.MessageRenderer("m", thinking)
    out = renderer.start() + b"".join(renderer.feed(event) for event in events) + renderer.finish()
    return sse(out), renderer.message


def test_thinking_blocks_show_only_when_asked_and_are_valid_anthropic_events() -> None:
    events = [Reasoning("Hmm."), Text("Hi"), ToolStart(0, "call_x", "get", False), ToolInput(0, '{"a": 1}'),
              Finish("tool_calls", None), Usage(10, 5, 4, 0)]
    shown, message = render_message(events, thinking=True)
    for event in shown:
        if event["type"] != "ping":  # the SDK reads pings but has no type for them
            ANTHROPIC_EVENTS.validate_python(event)
    Message.model_validate(message)
    assert [block["type"] for block in message["content"]] == ["thinking", "text", "tool_use"]
    assert message["content"][2]["input"] == {"a": 1} and message["stop_reason"] == "tool_use"
    assert message["usage"]["input_tokens"] == 6 and message["usage"]["cache_read_input_tokens"] == 4
    _, hidden = render_message(events, thinking=False)
    assert [block["type"] for block in hidden["content"]] == ["text", "tool_use"]


@pytest.mark.parametrize(("finish", "stop_reason", "stop_sequence"), [
    (Finish("stop", None), "end_turn", None), (Finish("length", None), "max_tokens", None),
    (Finish("stop", "END"), "stop_sequence", "END"), (Finish("content_filter", None), "refusal", None)])
def test_stop_reasons(finish: Finish, stop_reason: str, stop_sequence: str | None) -> None:
    _, message = render_message([Text("x"), finish], thinking=False)
    assert (message["stop_reason"], message["stop_sequence"]) == (stop_reason, stop_sequence)


def test_anthropic_request_becomes_chat() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    history = [{"role": "user", "content": "Hi"},
               {"role": "assistant", "content": [
                   {"type": "thinking", "thinking": "..", "signature": "s"},
                   {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"a": 1}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"},
                                            {"type": "text", "text": "Thanks"}, image]}]
    tools = [{"name": "get", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]
    request = CreateMessageRequest(model="m", max_tokens=9, system=[{"type": "text", "text": "Sys"}], tools=tools,
                                   stop_sequences=["END"], messages=history,
                                   tool_choice={"type": "any", "disable_parallel_tool_use": True})
    body = messages.chat_request(request)
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][2]["tool_calls"][0]["function"] == {"name": "get", "arguments": '{"a": 1}'}
    assert body["messages"][4]["content"][1]["image_url"]["url"] == "data:image/png;base64,AA"
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is False
    assert [tool["function"]["name"] for tool in body["tools"]] == ["get"]
    assert body["stop"] == ["END"] and body["max_completion_tokens"] == 9
