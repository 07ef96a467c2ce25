"""Custom tools (`tools[].type: "custom"`, OpenAI spec 2.3.0) on real llama.cpp (SmolLM2-135M) through the
worker app and the official openai client; and the form they are written and parsed in."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from runtime.engines.llama.chat_template import ChatTemplate
from runtime.engines.llama.toolcalls import custom_call, parse_forced_call, parse_tool_calls
from runtime.worker.choices import ChoiceOutput

MODEL = "SmolLM2-135M-Instruct"
PHONE = r"[0-9]{3}-[0-9]{4}"
DIAL = {"type": "custom", "custom": {
    "name": "dial", "description": "Dial a phone number.",
    "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": PHONE}}}}
NOTE = {"type": "custom", "custom": {"name": "note", "description": "Write a note down.", "format": {"type": "text"}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}
# OpenAI Codex CLI's apply_patch tool as it declares it (the grammar verbatim, see tests/engines/test_lark.py).
APPLY_PATCH = {"type": "custom", "custom": {
    "name": "apply_patch",
    "description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in "
                   "JSON.",
    "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": """start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"""}}}}
CALL_BOB = [{"role": "user", "content": "Call Bob at 555-1234."}]


def named(name: str) -> dict[str, Any]:
    return {"type": "custom", "custom": {"name": name}}


def is_patch(text: str) -> bool:
    """Codex's apply_patch language as a Python regex (test_lark.py checks it against the grammar)."""
    line = r"[^\n]*\n"
    hunk = (rf"\*\*\* Add File: [^\n]+\n(\+{line})+|\*\*\* Delete File: [^\n]+\n|\*\*\* Update File: [^\n]+\n"
            rf"(\*\*\* Move to: [^\n]+\n)?((@@( [^\n]+)?\n|[-+ ]{line})+(\*\*\* End of File\n)?)?")
    return re.fullmatch(rf"\*\*\* Begin Patch\n({hunk})+\*\*\* End Patch\n?", text) is not None


@pytest.fixture(scope="module")
def base_url(live_server: Any, text_app: Any, smollm_engine: Any) -> str:
    return live_server(text_app(smollm_engine)) + "/v1"


def test_named_regex_tool_returns_a_custom_call_in_the_grammar(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(model=MODEL, messages=CALL_BOB, tools=[DIAL], tool_choice=named("dial"),
                                            max_tokens=20, temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason == "stop" and choice.message.content is None  # as for a named function
    call = choice.message.tool_calls[0]
    assert call.type == "custom" and call.custom.name == "dial" and re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id)
    assert re.fullmatch(PHONE, call.custom.input)


def test_named_codex_apply_patch(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Create the file hello.txt that says Hello world."}],
        tools=[APPLY_PATCH], tool_choice=named("apply_patch"), max_tokens=256, temperature=0)
    choice = result.choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "stop" and call.type == "custom" and call.custom.name == "apply_patch"
    assert is_patch(call.custom.input), call.custom.input


def test_named_text_tool_ends_at_the_closing_tag(client: openai.OpenAI) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Note down: buy milk."}], tools=[NOTE, DIAL],
        tool_choice=named("note"), max_tokens=48, temperature=0)
    call = result.choices[0].message.tool_calls[0]
    assert call.type == "custom" and call.custom.name == "note" and isinstance(call.custom.input, str)
    assert "</tool_call>" not in call.custom.input


def test_streamed_custom_call_deltas(base_url: str, client: openai.OpenAI) -> None:
    body = {"model": MODEL, "messages": CALL_BOB, "tools": [DIAL], "tool_choice": named("dial"), "max_tokens": 20,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=120) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    first = events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant" and first["content"] is None
    head = first["tool_calls"][0]
    assert set(head) == {"index", "id", "type", "custom"} and head["type"] == "custom"
    assert head["custom"] == {"name": "dial", "input": ""}
    fragments = [e["choices"][0]["delta"]["tool_calls"][0] for e in events[1:-1]]
    assert fragments and all(set(f) == {"index", "custom"} and set(f["custom"]) == {"input"} for f in fragments)
    assert re.fullmatch(PHONE, "".join(f["custom"]["input"] for f in fragments))
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    # The openai client passes the custom deltas through (its delta type knows only functions).
    chunks = list(client.chat.completions.create(**{k: v for k, v in body.items() if k != "stream"}, stream=True))
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0].type == "custom" and calls[0].model_extra["custom"]["name"] == "dial"
    assert re.fullmatch(PHONE, "".join(c.model_extra["custom"]["input"] for c in calls))


def test_required_picks_one_tool_of_either_kind(client: openai.OpenAI, base_url: str) -> None:
    result = client.chat.completions.create(model=MODEL, messages=CALL_BOB, tools=[WEATHER, DIAL, NOTE],
                                            tool_choice="required", max_tokens=48, temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    if call.type == "function":
        assert call.function.name == "get_weather" and set(json.loads(call.function.arguments)) == {"city"}
    else:
        assert call.custom.name in ("dial", "note")
        assert call.custom.name == "note" or re.fullmatch(PHONE, call.custom.input)
    body = {"model": MODEL, "messages": CALL_BOB, "tools": [DIAL], "tool_choice": "required", "max_tokens": 40,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", base_url + "/chat/completions", json=body, timeout=120) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    parts = [d["tool_calls"][0] for e in events if "tool_calls" in (d := e["choices"][0]["delta"])]
    assert parts[0]["type"] == "custom" and parts[0]["custom"] == {"name": "dial", "input": ""}
    assert re.fullmatch(PHONE, "".join(p["custom"]["input"] for p in parts))
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_allowed_tools_narrow_what_may_be_called(client: openai.OpenAI) -> None:
    only_dial = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [named("dial")]}}
    result = client.chat.completions.create(model=MODEL, messages=CALL_BOB, tools=[WEATHER, DIAL, NOTE],
                                            tool_choice=only_dial, max_tokens=40, temperature=0)
    [call] = result.choices[0].message.tool_calls
    assert call.type == "custom" and call.custom.name == "dial" and re.fullmatch(PHONE, call.custom.input)
    only_weather = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "function", "function": {"name": "get_weather"}}]}}
    result = client.chat.completions.create(model=MODEL, messages=CALL_BOB, tools=[WEATHER, DIAL],
                                            tool_choice=only_weather, max_tokens=40, temperature=0)
    [call] = result.choices[0].message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    auto = {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [named("dial")]}}
    result = client.chat.completions.create(model=MODEL, messages=CALL_BOB, tools=[WEATHER, DIAL],
                                            tool_choice=auto, max_tokens=40, temperature=0)
    message = result.choices[0].message
    assert all(c.type == "custom" and c.custom.name == "dial" for c in message.tool_calls or [])
    assert message.tool_calls or isinstance(message.content, str)


def test_auto_and_custom_call_history_are_accepted(client: openai.OpenAI) -> None:
    messages = [*CALL_BOB,
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_1", "type": "custom", "custom": {"name": "dial", "input": "555-1234"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Bob answered."}]
    result = client.chat.completions.create(model=MODEL, messages=messages, tools=[DIAL, APPLY_PATCH, WEATHER],
                                            max_tokens=16, temperature=0)
    choice = result.choices[0]
    assert choice.finish_reason in ("stop", "length", "tool_calls")
    for call in choice.message.tool_calls or []:  # a named custom tool comes back as a custom call
        name = call.custom.name if call.type == "custom" else call.function.name
        assert (call.type, name) in {("custom", "dial"), ("custom", "apply_patch"), ("function", "get_weather")}


@pytest.mark.parametrize("body, param, wording", [
    ({"tools": [DIAL], "tool_choice": named("nope")}, "tool_choice", "no custom tool named 'nope'"),
    ({"tools": [WEATHER], "tool_choice": named("get_weather")}, "tool_choice", "no custom tool named 'get_weather'"),
    ({"tools": [DIAL], "tool_choice": {"type": "function", "function": {"name": "dial"}}}, "tool_choice",
     "no function named 'dial'"),
    ({"tools": [DIAL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
        named("other")]}}}, "tool_choice.allowed_tools.tools[0]", "no custom tool named 'other'"),
    ({"tools": [DIAL, {**DIAL}]}, "tools", "the name 'dial' is used by more than one tool"),
    ({"tools": [WEATHER, {"type": "custom", "custom": {"name": "bad", "format": {"type": "grammar", "grammar": {
        "syntax": "regex", "definition": "(a)\\1"}}}}]}, "tools[1].custom.format.grammar.definition",
     "Invalid grammar for custom tool 'bad': backreferences"),
    ({"tools": [{"type": "custom", "custom": {"name": "big", "format": {"type": "grammar", "grammar": {
        "syntax": "lark", "definition": 'start: "a" ~ 5000'}}}}]}, "tools[0].custom.format.grammar.definition",
     "over this server's limit of 1000"),
    ({"tools": [{"type": "custom", "custom": {"name": "x", "format": {"type": "grammar", "grammar": {
        "syntax": "lark", "definition": "start: a\na: a"}}}}], "tool_choice": "none"},
     "tools[0].custom.format.grammar.definition", "always begins with itself"),
])
def test_bad_custom_tool_requests_are_400s(base_url: str, body: dict[str, Any], param: str, wording: str) -> None:
    response = httpx.post(base_url + "/chat/completions", json={"model": MODEL, "messages": CALL_BOB, **body},
                          timeout=60)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and wording in error["message"], error


# The form the model writes (no engine)


def test_raw_form_and_json_form_parse_as_custom_calls() -> None:
    text = "Sure. " + custom_call("apply_patch", '*** Begin Patch\n"quoted"\n*** End Patch\n') + \
        '<tool_call>\n{"name": "dial", "arguments": {"input": "555-1234"}}\n</tool_call>' + \
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    content, calls = parse_tool_calls(text, {"get_weather"}, {"apply_patch", "dial"})
    assert content == "Sure."
    assert [(c.name, c.custom, c.arguments) for c in calls] == [
        ("apply_patch", True, '*** Begin Patch\n"quoted"\n*** End Patch\n'), ("dial", True, "555-1234"),
        ("get_weather", False, '{"city": "Oslo"}')]
    assert parse_tool_calls(custom_call("other", "x"), {"get_weather"}, {"dial"})[1] == []  # unknown: content
    assert parse_tool_calls('{"name": "dial", "arguments": "555-0000"}', set(), {"dial"})[1][0].arguments == \
        "555-0000"
    forced = parse_forced_call(custom_call("note", "a\n</tool_call> inside\n"), {"note"})
    assert forced is not None and forced.custom and forced.arguments == "a\n</tool_call> inside\n"


@pytest.mark.parametrize("size", [1, 5, 1000])
def test_streamed_deltas_of_custom_calls(size: int) -> None:
    text = "Calling. " + custom_call("dial", "555-1234")
    out = ChoiceOutput("auto", {"get_weather"}, custom_names={"dial"})
    deltas = []
    for i in range(0, len(text), size):
        deltas += out.feed(text[i:i + size])
    deltas += out.finish()
    assert "".join(d.get("content", "") for d in deltas).strip() == "Calling."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["type"] == "custom" and calls[0]["custom"] == {"name": "dial", "input": ""}
    assert calls[1] == {"index": 0, "custom": {"input": "555-1234"}}
    assert out.finish_reason("stop") == "tool_calls"
    assert out.message()["tool_calls"][0]["custom"] == {"name": "dial", "input": "555-1234"}
    named_out = ChoiceOutput("dial", set(), custom_names={"dial"})
    assert named_out.opening()["tool_calls"][0]["type"] == "custom"
    assert named_out.feed("555") == [{"tool_calls": [{"index": 0, "custom": {"input": "555"}}]}]
    assert named_out.finish_reason("stop") == "stop"


def test_templates_see_custom_tools_and_their_calls() -> None:
    history = [{"role": "user", "content": "Call Bob."},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c1", "type": "custom", "custom": {"name": "dial", "input": "555-1234"}}]},
               {"role": "tool", "content": "ok", "tool_call_id": "c1"}]
    plain = ChatTemplate(None, "", "").render(history, [DIAL])
    assert plain.startswith("<|im_start|>system\nYou may use tools to help with the user's request. To use a tool "
                            "that takes free-form input, reply with only\n<tool_call name=\"TOOL_NAME\">")
    assert json.dumps(DIAL["custom"]) in plain and custom_call("dial", "555-1234") in plain
    aware = ChatTemplate("{% for t in tools %}{{ t.function.name }}:{{ t.function.parameters.properties | list }}"
                         "{% endfor %}{% for m in messages %}{% for c in m.tool_calls or [] %}"
                         "{{ c.function.arguments }}{% endfor %}{% endfor %}", "", "")
    assert aware.render(history, [DIAL, WEATHER]) == "dial:['input']get_weather:['city']{\"input\": \"555-1234\"}"
