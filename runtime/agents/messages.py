"""Anthropic Messages <-> chat completions: the request becomes chat messages, the chat stream becomes
Messages events (`MessageRenderer`), and errors use Anthropic's envelope.

Accepted and ignored: `top_k` (the sampler has none), server tools (web search, code execution, ...)
and Anthropic-defined client tools without an `input_schema`, `service_tier`, cache_control marks.
Thinking blocks are shown when `thinking` is enabled, for models that think (`<think>` templates).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from runtime.agents.chatstream import Event, Failure, Finish, Reasoning, Text, ToolInput, ToolStart, Usage
from runtime.errors import InvalidRequestError
from runtime.http.sse import encode
from runtime.protocol.messages import CountTokensRequest, CreateMessageRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
               529: "overloaded_error"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


# Request


def chat_request(request: CountTokensRequest) -> dict[str, Any]:
    messages = []
    system = _system_text(request.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(request.messages):
        messages += _chat_messages(message, f"messages.{i}")
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}
    tools = chat_tools(request.tools or [])
    if tools:
        body["tools"] = tools
        body.update(_tool_choice(request.tool_choice))
    if isinstance(request, CreateMessageRequest):
        optional = {"max_completion_tokens": request.max_tokens, "temperature": request.temperature,
                    "top_p": request.top_p, "stop": request.stop_sequences or None,
                    "user": (request.metadata or {}).get("user_id")}
        body.update({key: value for key, value in optional.items() if value is not None})
    return body


def thinking_enabled(request: CountTokensRequest) -> bool:
    return (request.thinking or {}).get("type") in ("enabled", "adaptive")


def _system_text(system: str | list[dict[str, Any]] | None) -> str:
    if isinstance(system, list):
        return "\n".join(_text(block, f"system.{i}") for i, block in enumerate(system))
    return system or ""


def _chat_messages(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise InvalidRequestError(f"{where}.role: Input should be 'user' or 'assistant'", param=f"{where}.role")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequestError(f"{where}.content: Input should be a valid string or list of content blocks",
                                  param=f"{where}.content")
    results, parts, calls = [], [], []
    for j, block in enumerate(content):
        at = f"{where}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, at)})
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "tool_use" and role == "assistant":
            arguments = json.dumps(block.get("input", {}))
            calls.append({"id": str(block.get("id")), "type": "function",
                          "function": {"name": str(block.get("name")), "arguments": arguments}})
        elif kind == "tool_result" and role == "user":
            results.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                            "content": _tool_result_text(block, at)})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # earlier reasoning is not replayed to the model
        else:
            raise InvalidRequestError(f"{at}: content blocks of type '{kind}' are not supported in {role} messages "
                                      "by this server.", param=at)
    out: dict[str, Any] = {"role": role}
    if all(part["type"] == "text" for part in parts):
        out["content"] = "".join(part["text"] for part in parts) or (None if calls else "")
    else:
        out["content"] = parts
    if calls:
        out["tool_calls"] = calls
    # Tool results answer the previous assistant turn, so they come before the user's own words.
    return results + ([out] if parts or calls or not results else [])


def _text(block: Any, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("text"), str):
        raise InvalidRequestError(f"{where}.text: Field required", param=f"{where}.text")
    return block["text"]


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise InvalidRequestError(f"{where}.source: expected a base64 or url image source", param=f"{where}.source")


def _tool_result_text(block: dict[str, Any], where: str) -> str:
    content = block.get("content", "")
    if isinstance(content, list):
        content = "".join(_text(part, f"{where}.content.{k}") for k, part in enumerate(content)
                          if isinstance(part, dict) and part.get("type") == "text")
    if not isinstance(content, str):
        raise InvalidRequestError(f"{where}.content: Input should be a string or a list of blocks",
                                  param=f"{where}.content")
    return f"Error: {content}" if block.get("is_error") else content


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            continue  # a server tool or an Anthropic-defined one: nothing here can run it
        if not isinstance(tool.get("name"), str):
            raise InvalidRequestError(f"tools.{i}.name: Field required", param=f"tools.{i}.name")
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: dict[str, Any] | None) -> dict[str, Any]:
    choice = choice or {"type": "auto"}
    kind = choice.get("type")
    out: dict[str, Any] = {}
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise InvalidRequestError("tool_choice: expected type 'auto', 'any', 'tool' (with a name) or 'none'",
                                  param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# Response


class MessageRenderer:
    """Chat events -> Messages SSE events, building the final message as it goes."""

    def __init__(self, model: str, thinking: bool) -> None:
        self.message: dict[str, Any] = {
            "id": new_id("msg"), "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}
        self.thinking = thinking
        self._open: dict[str, Any] | None = None
        self._arguments: dict[int, str] = {}  # block index -> the tool input JSON streamed so far
        self._tools: dict[int, int] = {}  # chat tool call index -> block index

    def start(self) -> bytes:
        start = {**self.message, "content": [], "usage": dict(self.message["usage"])}
        return _emit("message_start", message=start) + _emit("ping")

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Text):
            return self._delta("text", event.text)
        if isinstance(event, Reasoning):
            return self._delta("thinking", event.text) if self.thinking else b""
        if isinstance(event, ToolStart):
            out = self._close()
            block = {"type": "tool_use", "id": event.call_id.replace("call_", "toolu_", 1), "name": event.name,
                     "input": {}}
            self._tools[event.index] = len(self.message["content"])
            return out + self._open_block(block)
        if isinstance(event, ToolInput):
            index = self._tools.get(event.index)
            if index is None or self._open is not self.message["content"][index]:
                return b""
            self._arguments[index] = self._arguments.get(index, "") + event.text
            return _emit("content_block_delta", index=index,
                         delta={"type": "input_json_delta", "partial_json": event.text})
        if isinstance(event, Finish):
            stop = "stop_sequence" if event.stop_sequence else STOP_REASONS.get(event.reason, "end_turn")
            self.message["stop_reason"], self.message["stop_sequence"] = stop, event.stop_sequence
        elif isinstance(event, Usage):
            self.message["usage"].update(input_tokens=event.input_tokens - event.cached_tokens,
                                         output_tokens=event.output_tokens,
                                         cache_read_input_tokens=event.cached_tokens)
        elif isinstance(event, Failure):
            return self.fail(event.message)
        return b""

    def finish(self) -> bytes:
        out = self._close()
        if self.message["stop_reason"] is None:
            self.message["stop_reason"] = "end_turn"
        delta = {"stop_reason": self.message["stop_reason"], "stop_sequence": self.message["stop_sequence"]}
        return out + _emit("message_delta", delta=delta, usage=dict(self.message["usage"])) + _emit("message_stop")

    def fail(self, message: str) -> bytes:
        return self._close() + encode(error_body(500, message), "error")

    def _delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != kind:
            out += self._close()
            block = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": "",
                                                                         "signature": ""}
            out += self._open_block(block)
        assert self._open is not None
        self._open[kind] += text
        delta = {"type": "text_delta", "text": text} if kind == "text" else {"type": "thinking_delta",
                                                                              "thinking": text}
        return out + _emit("content_block_delta", index=len(self.message["content"]) - 1, delta=delta)

    def _open_block(self, block: dict[str, Any]) -> bytes:
        self.message["content"].append(block)
        self._open = block
        return _emit("content_block_start", index=len(self.message["content"]) - 1, content_block=dict(block))

    def _close(self) -> bytes:
        block, self._open = self._open, None
        if block is None:
            return b""
        index = self.message["content"].index(block)
        if block["type"] == "tool_use":
            block["input"] = _parsed_input(self._arguments.get(index, ""))
        return _emit("content_block_stop", index=index)


def _parsed_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _emit(kind: str, **fields: Any) -> bytes:
    return encode({"type": kind, **fields}, kind)
