"""Unit tests of the text helpers: output splitting (reasoning, tool calls), tool-call formats, stops."""

from __future__ import annotations

import json

import pytest

from runtime.engines.llama.chat_template import ChatTemplate
from runtime.engines.llama.stops import StopScanner
from runtime.engines.llama.toolcalls import parse_tool_calls
from runtime.errors import InvalidRequestError
from runtime.worker.choices import ChoiceOutput

TOOLS = {"get_weather", "get_time"}


def feed_all(out: ChoiceOutput, pieces: list[str]) -> list[dict]:
    deltas = []
    for piece in pieces:
        deltas += out.feed(piece)
    return deltas + out.finish()


def joined(deltas: list[dict], key: str) -> str:
    return "".join(d.get(key, "") for d in deltas)


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 100])
def test_think_block_becomes_reasoning_content(size: int) -> None:
    out = ChoiceOutput("none", set())
    deltas = feed_all(out, split_every("<think>\nLet me see.\n</think>\n\nThe answer is 4.", size))
    assert joined(deltas, "reasoning_content") == "\nLet me see.\n"
    assert joined(deltas, "content") == "The answer is 4."
    message = out.message()
    assert message["reasoning_content"] == "\nLet me see.\n" and message["content"] == "The answer is 4."


def test_reasoning_when_the_prompt_opened_the_think_block() -> None:
    out = ChoiceOutput("none", set(), thinking=True)
    deltas = feed_all(out, ["hmm", "m</th", "ink>", "Yes."])
    assert joined(deltas, "reasoning_content") == "hmmm" and joined(deltas, "content") == "Yes."


def test_text_that_only_looks_like_a_marker_is_content() -> None:
    out = ChoiceOutput("auto", TOOLS)
    deltas = feed_all(out, ["a <", "tool", " b", " <thi", "nk"])
    assert joined(deltas, "content") == "a <tool b <think" and not out.calls
    assert out.finish_reason("stop") == "stop"


@pytest.mark.parametrize("text", [
    'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
    'Sure. [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Oslo"}}]',
    'Sure. [TOOL_CALLS]get_weather[ARGS]{"city": "Oslo"}',
    'Sure. <|python_tag|>{"name": "get_weather", "parameters": {"city": "Oslo"}}',
])
def test_model_tool_call_formats_stream_as_openai_deltas(text: str) -> None:
    out = ChoiceOutput("auto", TOOLS)
    deltas = feed_all(out, split_every(text, 4))
    assert joined(deltas, "content").strip() == "Sure."
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["index"] == 0 and calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert calls[0]["id"].startswith("call_") and len(calls[0]["id"]) == 29
    assert all(set(c) == {"index", "function"} for c in calls[1:])
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Oslo"}
    assert out.finish_reason("stop") == "tool_calls" and out.finish_reason("length") == "length"


def test_llama3_bare_json_and_parallel_calls() -> None:
    content, calls = parse_tool_calls(
        '{"name": "get_weather", "parameters": {"city": "A"}}; {"name": "get_time", "parameters": {}}', TOOLS)
    assert content == "" and [c.name for c in calls] == ["get_weather", "get_time"]
    content, calls = parse_tool_calls(
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><tool_call>{"name": "get_weather", '
        '"arguments": "{\\"city\\": \\"B\\"}"}</tool_call>', TOOLS)
    assert [c.name for c in calls] == ["get_time", "get_weather"] and json.loads(calls[1].arguments) == {"city": "B"}


def test_unknown_functions_and_broken_json_stay_content() -> None:
    assert parse_tool_calls('{"name": "rm_rf", "arguments": {}}', TOOLS)[1] == []
    out = ChoiceOutput("auto", TOOLS)
    deltas = feed_all(out, ['{"answer": 4}'])
    assert joined(deltas, "content") == '{"answer": 4}' and out.message()["content"] == '{"answer": 4}'


def test_named_choice_streams_arguments_and_finishes_with_stop() -> None:
    out = ChoiceOutput("get_time", TOOLS)
    first = out.opening()
    assert first["content"] is None and first["tool_calls"][0]["function"] == {"name": "get_time", "arguments": ""}
    deltas = feed_all(out, ['{"zo', 'ne": "UTC"}'])
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas] == ['{"zo', 'ne": "UTC"}']
    assert out.finish_reason("stop") == "stop"
    assert out.message()["tool_calls"][0]["function"]["arguments"] == '{"zone": "UTC"}'
    assert out.message()["content"] is None


@pytest.mark.parametrize("size", [1, 2, 50])
def test_stop_strings_split_across_tokens(size: int) -> None:
    scanner = StopScanner(["END", "\n\n"])
    emitted, stopped = "", False
    for piece in split_every("abc EN xyz EN", size) + split_every("D tail", size):
        text, stopped = scanner.feed(piece)
        emitted += text
        if stopped:
            break
    assert stopped and emitted == "abc EN xyz "


def test_chat_template_fallback_and_errors() -> None:
    chatml = ChatTemplate(None, "<s>", "</s>")
    rendered = chatml.render([{"role": "user", "content": "hi"}], None)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    strict = ChatTemplate("{{ raise_exception('roles must alternate') }}", "", "")
    with pytest.raises(InvalidRequestError, match="roles must alternate"):
        strict.render([{"role": "user", "content": "hi"}], None)
    sandboxed = ChatTemplate("{{ messages.__class__.__mro__ }}", "", "")
    with pytest.raises(InvalidRequestError):
        sandboxed.render([], None)


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><tool_call>{"name": "get_weather", ' \
           '"arguments": {"city": "B"}}</tool_call>'
    single = ChoiceOutput("auto", TOOLS, parallel=False)
    feed_all(single, [text])
    assert [c["function"]["name"] for c in single.calls] == ["get_time"]
    both = ChoiceOutput("auto", TOOLS)
    feed_all(both, [text])
    assert [c["function"]["name"] for c in both.calls] == ["get_time", "get_weather"]
    assert len({c["id"] for c in both.calls}) == 2


class ScriptedEngine:
    """Plumbing only: a TextEngine whose answer is a fixed list of text pieces."""

    capabilities = frozenset({"chat"})
    context_length = 4096

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def info(self) -> dict:
        return {"engine": "scripted"}

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return [ord(c) for c in text]

    def render_chat(self, messages: list[dict], tools: list[dict] | None) -> str:
        return "".join(m["content"] for m in messages)

    def generate(self, prompt, params, n, usage, cancel):
        from runtime.engines.base import TextDelta

        usage.prompt_tokens = len(prompt)
        for piece in self.pieces:
            usage.completion_tokens += 1
            yield TextDelta(0, piece)
        yield TextDelta(0, "", finish_reason="stop")


def test_reasoning_content_through_the_router(live_server, text_app) -> None:
    import openai

    engine = ScriptedEngine(["<th", "ink>", "Two and two.", "</thi", "nk>\n\n", "It is ", "4."])
    client = openai.OpenAI(base_url=live_server(text_app(engine)) + "/v1", api_key="none", max_retries=0)
    messages = [{"role": "user", "content": "2+2?"}]
    message = client.chat.completions.create(model="m", messages=messages).choices[0].message
    assert message.content == "It is 4." and message.model_extra["reasoning_content"] == "Two and two."
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "Two and two."
    assert "".join(d.content or "" for d in deltas) == "It is 4."
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == len("Two and two.")


def test_tools_are_described_to_templates_that_ignore_them() -> None:
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Time?"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "c1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
               {"role": "tool", "content": "12:00", "tool_call_id": "c1"}]
    text = ChatTemplate(None, "", "").render(history, tools)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou may call functions")
    assert '{"name": "get_time", "parameters": {"type": "object"}}' in text
    content, calls = parse_tool_calls(text.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0], TOOLS)
    assert [c.name for c in calls] == ["get_time"]
    aware = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}{{ tools | length }}", "", "")
    assert aware.render([{"role": "user", "content": "hi"}], tools) == "hi1"
