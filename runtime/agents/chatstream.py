"""Chat completion stream chunks -> the few things an agent API renders: text, reasoning, tool calls.

The worker (or an upstream) always answers these translations with a chat completions event stream
(`stream: true`, usage included); `ChatEvents` reads its bytes and yields plain events in order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one SSE event from the worker; more means a broken stream


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Reasoning:
    text: str


@dataclass(frozen=True)
class ToolStart:
    index: int
    call_id: str
    name: str
    custom: bool  # a custom (free-form) tool call rather than a function call


@dataclass(frozen=True)
class ToolInput:
    index: int
    text: str  # function arguments (JSON text) or a custom tool's input


@dataclass(frozen=True)
class Finish:
    reason: str  # stop, length, tool_calls, content_filter
    stop_sequence: str | None  # the stop string that ended the text, when the chat side says


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True)
class Failure:
    message: str
    code: str | None


Event = Text | Reasoning | ToolStart | ToolInput | Finish | Usage | Failure


class ChatEvents:
    """Feed the raw bytes of a chat completion event stream; get events as each SSE event completes."""

    def __init__(self) -> None:
        self._buffer = b""
        self._tools: set[int] = set()

    def feed(self, data: bytes) -> Iterator[Event]:
        self._buffer += data.replace(b"\r\n", b"\n")
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            yield from self._event(raw)
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._buffer = b""
            yield Failure("The model's reply could not be read.", "server_error")

    def _event(self, raw: bytes) -> Iterator[Event]:
        data = b"\n".join(line[5:].strip() for line in raw.split(b"\n") if line.startswith(b"data:"))
        if not data or data == b"[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            yield Failure("The model's reply could not be read.", "server_error")
            return
        if not isinstance(chunk, dict):
            return
        yield from chunk_events(chunk, self._tools)


def chunk_events(chunk: dict[str, Any], started_tools: set[int]) -> Iterator[Event]:
    """The events in one chat chunk; `started_tools` remembers which tool call indexes were seen."""
    if isinstance(chunk.get("error"), dict):
        error = chunk["error"]
        yield Failure(str(error.get("message") or "The model failed."), error.get("code") or error.get("type"))
        return
    for choice in chunk.get("choices") or []:
        if choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if delta.get("reasoning_content"):
            yield Reasoning(delta["reasoning_content"])
        if delta.get("content"):
            yield Text(delta["content"])
        for call in delta.get("tool_calls") or []:
            yield from _tool_events(call, started_tools)
        if choice.get("finish_reason"):
            stop = choice.get("stop_reason")
            yield Finish(choice["finish_reason"], stop if isinstance(stop, str) else None)
    if isinstance(chunk.get("usage"), dict):
        yield usage_event(chunk["usage"])


def _tool_events(call: dict[str, Any], started: set[int]) -> Iterator[Event]:
    index = int(call.get("index", 0))
    custom = call.get("type") == "custom" or "custom" in call
    body = (call.get("custom") if custom else call.get("function")) or {}
    if index not in started:
        started.add(index)
        yield ToolStart(index, call.get("id") or f"call_{index}", body.get("name") or "", custom)
    text = body.get("input") if custom else body.get("arguments")
    if text:
        yield ToolInput(index, text)


def usage_event(usage: dict[str, Any]) -> Usage:
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                 int(prompt.get("cached_tokens") or 0), int(completion.get("reasoning_tokens") or 0))


def error_detail(body: bytes) -> dict[str, Any]:
    """The `error` object of an OpenAI error body from the chat side (message, type, param, code)."""
    try:
        error = json.loads(body)["error"]
        return {"message": str(error["message"]), "type": str(error.get("type") or "server_error"),
                "param": error.get("param"), "code": error.get("code")}
    except (ValueError, KeyError, TypeError):
        return {"message": "The model failed to answer.", "type": "server_error", "param": None, "code": None}
