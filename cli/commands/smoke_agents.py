"""`stacklet test responses|messages MODEL`: the agent APIs through the official openai and anthropic clients."""

from __future__ import annotations

import json
import time
from typing import Any

import typer

from cli.client import OPENAI_TIMEOUT_S, openai_client, openai_target
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Check, Report, expect, rate

PROMPT = "Name three colours."
MAX_TOKENS = 32
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}}, "required": ["city"]}
COLOUR = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 16}},
          "required": ["colour"], "additionalProperties": False}


def register(test_app: typer.Typer) -> None:
    test_app.command("responses")(test_responses)
    test_app.command("messages")(test_messages)


def test_responses(model: str = typer.Argument(..., help="Chat model to test."), base_url: BaseUrlOption = None,
                   api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """OpenAI Responses: plain, streamed, a forced function call, structured output, previous_response_id."""
    client = openai_client(base_url, api_key)
    report = Report(f"responses: {model}")
    first = None
    with report.check("response") as check:
        start = time.perf_counter()
        # Greedy: a sampled first token may end the answer at once, and a small model's empty answer is no fault.
        first = client.responses.create(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS, temperature=0)
        expect(first.object == "response" and first.status in ("completed", "incomplete"), f"status {first.status}")
        expect(bool(first.output_text), "no output text")
        rate(check, first.usage.output_tokens, start)
    with report.check("response stream") as check:
        _check_response_stream(check, client, model)
    with report.check("function call (required)") as check:
        tool = {"type": "function", "name": "get_weather", "parameters": WEATHER}
        result = client.responses.create(model=model, input="What is the weather in Paris?", tools=[tool],
                                         tool_choice="required", max_output_tokens=64)
        calls = [item for item in result.output if item.type == "function_call"]
        expect(bool(calls) and calls[0].name == "get_weather", "no get_weather call")
        expect("city" in json.loads(calls[0].arguments), "arguments lack 'city'")
        check.detail = calls[0].arguments
    with report.check("json_schema answer") as check:
        result = client.responses.create(
            model=model, input="Pick a colour.", max_output_tokens=64,
            text={"format": {"type": "json_schema", "name": "pick", "schema": COLOUR, "strict": True}})
        expect(isinstance(json.loads(result.output_text).get("colour"), str), "the answer does not match the schema")
        check.detail = result.output_text
    with report.check("previous_response_id"):
        expect(first is not None, "no first response to continue")
        later = client.responses.create(model=model, input="One more.", previous_response_id=first.id,
                                        max_output_tokens=MAX_TOKENS)
        expect(later.usage.input_tokens > first.usage.input_tokens, "the earlier turn was not sent to the model")
    report.finish(as_json)


def _check_response_stream(check: Check, client: Any, model: str) -> None:
    start = time.perf_counter()
    with client.responses.stream(model=model, input=PROMPT, max_output_tokens=MAX_TOKENS) as stream:
        numbers, text, final = [], "", None
        for event in stream:
            numbers.append(event.sequence_number)
            if event.type == "response.output_text.delta":
                check.ttft_s = check.ttft_s or time.perf_counter() - start
                text += event.delta
            elif event.type in ("response.completed", "response.incomplete"):
                final = event.response
    expect(final is not None, "the stream did not end with response.completed or response.incomplete")
    expect(numbers == list(range(len(numbers))), "sequence numbers are not 0, 1, 2, ...")
    expect(final.status in ("completed", "incomplete") and final.output_text == text, "deltas differ from the end")
    rate(check, final.usage.output_tokens, start)


def test_messages(model: str = typer.Argument(..., help="Chat model to test."), base_url: BaseUrlOption = None,
                  api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Anthropic Messages: plain, streamed, a forced tool use, count_tokens. --base-url is the Anthropic base
    URL (the server's root, as in ANTHROPIC_BASE_URL)."""
    import anthropic

    url, key = openai_target(base_url, api_key)
    root = url.removesuffix("/v1") if base_url is None else url
    client = anthropic.Anthropic(base_url=root, api_key=key or "none", max_retries=0, timeout=OPENAI_TIMEOUT_S)
    report = Report(f"messages: {model}")
    messages = [{"role": "user", "content": PROMPT}]
    with report.check("message") as check:
        start = time.perf_counter()
        # Greedy, as for responses (this SDK no longer sends temperature itself; the API still takes it).
        made = client.messages.create(model=model, max_tokens=MAX_TOKENS, messages=messages,
                                      extra_body={"temperature": 0})
        expect(made.type == "message" and made.role == "assistant", "not an assistant message")
        expect(made.stop_reason in ("end_turn", "max_tokens") and made.content[0].type == "text", "no text block")
        rate(check, made.usage.output_tokens, start)
    with report.check("message stream") as check:
        start = time.perf_counter()
        with client.messages.stream(model=model, max_tokens=MAX_TOKENS, messages=messages) as stream:
            text = ""
            for delta in stream.text_stream:
                check.ttft_s = check.ttft_s or time.perf_counter() - start
                text += delta
            final = stream.get_final_message()
        expect(final.content[0].text == text, "deltas differ from the final message")
        rate(check, final.usage.output_tokens, start)
    with report.check("tool use (any)") as check:
        made = client.messages.create(model=model, max_tokens=64, tool_choice={"type": "any"},
                                      messages=[{"role": "user", "content": "What is the weather in Paris?"}],
                                      tools=[{"name": "get_weather", "input_schema": WEATHER}])
        uses = [block for block in made.content if block.type == "tool_use"]
        expect(made.stop_reason == "tool_use" and bool(uses), "no tool_use block")
        expect("city" in uses[0].input, "input lacks 'city'")
        check.detail = json.dumps(uses[0].input)
    with report.check("count_tokens") as check:
        counted = client.messages.count_tokens(model=model, messages=messages).input_tokens
        expect(counted > 0, "no tokens counted")
        check.detail = f"{counted} input tokens"
    report.finish(as_json)
