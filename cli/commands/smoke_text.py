"""`stacklet test chat|completions|embeddings MODEL`: text endpoints through the official openai client."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import typer

from cli.client import openai_client
from cli.options import ApiKeyOption, BaseUrlOption, JsonOption
from cli.smoke import Check, Report

MESSAGES = [{"role": "user", "content": "Name three colours."}]
PROMPT = "Once upon a time"
MAX_TOKENS = 32
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 24}},
                   "required": ["city"]}}}
PHONE = r"[0-9]{3}-[0-9]{4}"
DIAL_TOOL = {"type": "custom", "custom": {  # a custom tool whose input must match a regex
    "name": "dial", "description": "Dial a phone number.",
    "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": PHONE}}}}


def register(test_app: typer.Typer) -> None:
    test_app.command("chat")(test_chat)
    test_app.command("completions")(test_completions)
    test_app.command("embeddings")(test_embeddings)


def test_chat(model: str = typer.Argument(..., help="Chat model to test."), base_url: BaseUrlOption = None,
              api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Chat completions: plain, streamed with usage, a forced tool call, a custom tool with a grammar and a
    JSON schema answer; for a model that takes images, two images that must give different answers."""
    client = openai_client(base_url, api_key)
    report = Report(f"chat: {model}")
    with report.check("chat") as check:
        start = time.perf_counter()
        result = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS)
        _expect(result.object == "chat.completion", "object is not chat.completion")
        choice = result.choices[0]
        _expect(isinstance(choice.message.content, str) and choice.message.role == "assistant", "no assistant text")
        _expect(choice.finish_reason in ("stop", "length"), f"finish_reason {choice.finish_reason!r}")
        _check_usage(result.usage)
        _rate(check, result.usage.completion_tokens, start)
    with report.check("chat stream") as check:
        stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True,
                                                stream_options={"include_usage": True})
        _check_chat_stream(check, stream)
    with report.check("tool call (required)") as check:
        result = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER_TOOL], tool_choice="required", max_tokens=64)
        calls = result.choices[0].message.tool_calls or []
        _expect(bool(calls) and calls[0].function.name == "get_weather", "no get_weather call")
        _expect("city" in json.loads(calls[0].function.arguments), "arguments lack 'city'")
        check.detail = calls[0].function.arguments
    with report.check("custom tool (grammar)") as check:
        result = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Call Bob at 555-1234."}], tools=[DIAL_TOOL],
            tool_choice={"type": "custom", "custom": {"name": "dial"}}, max_tokens=24)
        custom = result.choices[0].message.tool_calls or []
        _expect(bool(custom) and custom[0].type == "custom" and custom[0].custom.name == "dial", "no custom dial call")
        _expect(re.fullmatch(PHONE, custom[0].custom.input) is not None, "the input does not match the tool's regex")
        check.detail = custom[0].custom.input
    with report.check("json_schema answer") as check:
        schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 16}},
                  "required": ["colour"], "additionalProperties": False}
        result = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Pick a colour."}], max_tokens=64,
            response_format={"type": "json_schema", "json_schema": {"name": "pick", "schema": schema, "strict": True}})
        answer = json.loads(result.choices[0].message.content or "")
        _expect(isinstance(answer.get("colour"), str), "the answer does not match the schema")
        check.detail = result.choices[0].message.content or ""
    if "vision" in _meta(client, model).get("capabilities", []):
        with report.check("image input") as check:
            _check_images(check, client, model)
    report.finish(as_json)


def _meta(client: Any, model: str) -> dict[str, Any]:
    """What the server says about the model (stacklet's `meta`); nothing when it does not say (any
    OpenAI-compatible server)."""
    import openai

    try:
        return (client.models.retrieve(model).model_extra or {}).get("meta") or {}
    except openai.APIError:
        return {}


def _check_images(check: Check, client: Any, model: str) -> None:
    """A red and a blue square, same question, temperature 0: the answers differ, image tokens are counted."""
    question = "What colour is this image? Answer in one word."
    text_only = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}],
                                               max_tokens=1, temperature=0).usage.prompt_tokens
    answers, prompt_tokens = [], 0
    for colour in ("red", "blue"):
        content = [{"type": "text", "text": question},
                   {"type": "image_url", "image_url": {"url": _square(colour), "detail": "low"}}]
        result = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                                max_tokens=16, temperature=0)
        answers.append(result.choices[0].message.content or "")
        prompt_tokens = result.usage.prompt_tokens
    _expect(prompt_tokens > text_only, "usage does not count the image's tokens")
    _expect(answers[0] != answers[1], "a red and a blue image gave the same answer")
    check.detail = f"{prompt_tokens - text_only} image tokens; red: {answers[0][:24]!r}, blue: {answers[1][:24]!r}"


def _square(colour: str) -> str:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_completions(model: str = typer.Argument(..., help="Model to test."), base_url: BaseUrlOption = None,
                     api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Legacy completions: plain with logprobs, and streamed with usage."""
    client = openai_client(base_url, api_key)
    report = Report(f"completions: {model}")
    with report.check("completion") as check:
        start = time.perf_counter()
        result = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, logprobs=2)
        _expect(result.object == "text_completion", "object is not text_completion")
        choice = result.choices[0]
        _expect(isinstance(choice.text, str) and choice.finish_reason in ("stop", "length"), "no text or finish")
        _expect(choice.logprobs is not None and len(choice.logprobs.tokens) > 0, "no logprobs")
        _check_usage(result.usage)
        _rate(check, result.usage.completion_tokens, start)
    with report.check("completion stream") as check:
        start = time.perf_counter()
        stream = client.completions.create(model=model, prompt=PROMPT, max_tokens=MAX_TOKENS, stream=True,
                                           stream_options={"include_usage": True})
        finishes, usage = [], None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text and check.ttft_s is None:
                check.ttft_s = time.perf_counter() - start
            finishes += [c.finish_reason for c in chunk.choices if c.finish_reason]
            usage = chunk.usage or usage
        _expect(len(finishes) == 1, f"{len(finishes)} finish reasons, expected 1")
        _expect(usage is not None, "no usage chunk")
        _check_usage(usage)
        _rate(check, usage.completion_tokens, start)
    report.finish(as_json)


def test_embeddings(model: str = typer.Argument(..., help="Embedding model to test."),
                    base_url: BaseUrlOption = None, api_key: ApiKeyOption = None,
                    as_json: JsonOption = False) -> None:
    """Embeddings: float and base64 give the same unit vectors, in input order."""
    client = openai_client(base_url, api_key)
    report = Report(f"embeddings: {model}")
    texts = ["The cat sits on the mat", "The kitten rests on the rug", "Stock markets fell sharply"]
    vectors: dict[str, Any] = {}
    for encoding in ("float", "base64"):
        with report.check(f"embeddings ({encoding})") as check:
            result = client.embeddings.create(model=model, input=texts, encoding_format=encoding)
            _expect([d.index for d in result.data] == [0, 1, 2], "data is not in input order")
            _expect(result.usage.prompt_tokens == result.usage.total_tokens > 0, "bad usage")
            vectors[encoding] = [_as_floats(d.embedding) for d in result.data]
            check.detail = f"{len(vectors[encoding][0])} dimensions"
    with report.check("vectors agree") as check:
        import numpy as np

        floats, decoded = np.array(vectors["float"]), np.array(vectors["base64"])
        _expect(np.allclose(floats, decoded, atol=1e-5), "base64 and float vectors differ")
        _expect(np.allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-3), "vectors are not normalised")
        near, far = float(floats[0] @ floats[1]), float(floats[0] @ floats[2])
        _expect(near > far, "similar sentences are not closer than unrelated ones")
        check.detail = f"cos(cat, kitten)={near:.2f} > cos(cat, stocks)={far:.2f}"
    if _meta(client, model).get("token_ids") == "cl100k_base":
        with report.check("OpenAI token ids") as check:
            _check_openai_ids(client, model, texts, vectors["float"])
            check.detail = "cl100k_base ids give the vectors of the text they spell"
    report.finish(as_json)


def _check_openai_ids(client: Any, model: str, texts: list[str], expected: list[list[float]]) -> None:
    """What LangChain's OpenAIEmbeddings sends: the texts as OpenAI's cl100k_base token ids."""
    import bpe_openai
    import numpy as np

    encoding = bpe_openai.get_encoding("cl100k_base")
    result = client.embeddings.create(model=model, input=[encoding.encode(text) for text in texts])
    vectors = np.array([d.embedding for d in result.data])
    _expect(np.allclose(vectors, np.array(expected), atol=1e-4), "token ids and their text give different vectors")


def _check_chat_stream(check: Check, stream: Any) -> None:
    start = time.perf_counter()
    roles, finishes, usage_chunks, usage = 0, 0, 0, None
    for chunk in stream:
        _expect(chunk.object == "chat.completion.chunk" and bool(chunk.id) and bool(chunk.created), "bad envelope")
        if chunk.usage is not None:
            usage_chunks += 1
            usage = chunk.usage
        for choice in chunk.choices:
            roles += choice.delta.role == "assistant"
            finishes += choice.finish_reason is not None
            if choice.delta.content and check.ttft_s is None:
                check.ttft_s = time.perf_counter() - start
    _expect(roles == 1, f"role sent {roles} times, expected once")
    _expect(finishes == 1, f"{finishes} finish reasons, expected 1")
    _expect(usage_chunks == 1 and usage is not None, "expected exactly one usage chunk")
    _check_usage(usage)
    _rate(check, usage.completion_tokens, start)


def _check_usage(usage: Any) -> None:
    _expect(usage is not None, "no usage")
    _expect(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, "total != prompt + completion")


def _rate(check: Check, tokens: int, start: float) -> None:
    check.latency_s = time.perf_counter() - start
    check.tokens_per_s = tokens / check.latency_s if check.latency_s else None


def _as_floats(embedding: Any) -> list[float]:
    """The SDK decodes base64 itself; a raw string would mean it did not."""
    if isinstance(embedding, str):
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
    return list(embedding)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)
