"""OpenAI Responses <-> chat completions: the request becomes chat messages, the chat stream becomes
Responses events (`ResponseRenderer`), and the finished response is kept for `previous_response_id`.

What a local server cannot do is accepted and ignored, as OpenAI's own docs allow: hosted tools
(web search, file search, ...) are dropped from `tools`, `include`, `truncation` and `service_tier`
change nothing, and reasoning items sent back by clients are not replayed to the model.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from runtime.agents.chatstream import Event, Failure, Finish, Reasoning, Text, ToolInput, ToolStart, Usage
from runtime.errors import InvalidRequestError
from runtime.http.sse import encode
from runtime.protocol.responses import CreateResponseRequest

HOSTED_TOOLS = frozenset({"web_search", "web_search_preview", "file_search", "code_interpreter", "computer_use",
                          "computer_use_preview", "image_generation", "mcp", "local_shell", "shell",
                          "apply_patch", "tool_search", "web_search_2025_08_26"})
TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# Request


def chat_request(request: CreateResponseRequest, history: list[dict[str, Any]],
                 items: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completions body for `request`, continuing `history` (a stored conversation)."""
    messages = ([{"role": "system", "content": request.instructions}] if request.instructions else [])
    messages += history + chat_messages(items)
    body: dict[str, Any] = {"model": request.model, "messages": messages, "stream": True,
                            "stream_options": {"include_usage": True}}
    tools = chat_tools(request.tools or [])
    if tools:
        body["tools"] = tools
    if request.tool_choice is not None and tools:
        body["tool_choice"] = chat_tool_choice(request.tool_choice, tools)
    response_format = chat_response_format(request.text)
    if response_format is not None:
        body["response_format"] = response_format
    optional = {"temperature": request.temperature, "top_p": request.top_p, "seed": request.seed,
                "max_completion_tokens": request.max_output_tokens, "user": request.user,
                "parallel_tool_calls": request.parallel_tool_calls if tools else None,
                "reasoning_effort": (request.reasoning or {}).get("effort")}
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def input_items(request: CreateResponseRequest) -> list[dict[str, Any]]:
    """The request's input as items with ids (a string input is one user message)."""
    raw = request.input
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}]
    items = []
    for item in raw:
        item = dict(item)
        kind = item.setdefault("type", "message")
        if kind == "message":
            item.setdefault("id", new_id("msg"))
            item.setdefault("status", "completed")
            if isinstance(item.get("content"), str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": item["content"]}]
        items.append(item)
    return items


def chat_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        kind = item.get("type")
        if kind == "message":
            messages.append(_message(item, f"input[{i}]"))
        elif kind in ("function_call", "custom_tool_call"):
            _append_call(messages, _call(item, f"input[{i}]"))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append({"role": "tool", "tool_call_id": _text_field(item, "call_id", f"input[{i}]"),
                             "content": _output_text(item.get("output"), f"input[{i}].output")})
        elif kind == "reasoning":
            continue  # the model's own earlier reasoning: not replayed
        else:
            raise InvalidRequestError(f"Invalid value for 'input[{i}].type': items of type '{kind}' are not "
                                      "supported by this server.", param=f"input[{i}].type", code="invalid_value")
    return messages


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequestError(f"Invalid value for '{where}.role': expected one of 'user', 'assistant', "
                                  "'system' or 'developer'.", param=f"{where}.role", code="invalid_value")
    content = item.get("content")
    if not isinstance(content, list):
        raise InvalidRequestError(f"Invalid type for '{where}.content': expected a string or an array of "
                                  "content parts.", param=f"{where}.content", code="invalid_type")
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if all(part["type"] == "text" for part in parts):
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    return {"role": role, "content": parts}


def _part(part: Any, where: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "refusal" and isinstance(part.get("refusal"), str):
        return {"type": "text", "text": part["refusal"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail") or "auto"}}
    raise InvalidRequestError(f"Invalid value for '{where}': content parts of type '{kind}' are not supported "
                              "by this server (use input_text, or input_image with an image_url).",
                              param=where, code="invalid_value")


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = _text_field(item, "call_id", where)
    name = _text_field(item, "name", where)
    if item["type"] == "custom_tool_call":
        return {"id": call_id, "type": "custom", "custom": {"name": name, "input": _text_field(item, "input", where)}}
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": _text_field(item, "arguments", where)}}


def _append_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """Calls join the assistant turn they follow, as chat has them: one message with every call."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _text_field(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidRequestError(f"Missing required parameter: '{where}.{name}'.", param=f"{where}.{name}",
                                  code="missing_required_parameter")
    return value


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(_part(part, f"{where}[{j}]").get("text", "") for j, part in enumerate(output))
    raise InvalidRequestError(f"Invalid type for '{where}': expected a string.", param=where, code="invalid_type")


def chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type")
        if kind == "function":
            function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
            out.append({"type": "function", "function": function})
        elif kind == "custom":
            custom = {key: tool[key] for key in ("name", "description") if key in tool}
            if isinstance(tool.get("format"), dict):
                custom["format"] = _custom_format(tool["format"])
            out.append({"type": "custom", "custom": custom})
        elif kind not in HOSTED_TOOLS:
            raise InvalidRequestError(f"Invalid value for 'tools[{i}].type': '{kind}' is not a tool type.",
                                      param=f"tools[{i}].type", code="invalid_value")
    return out


def _custom_format(fmt: dict[str, Any]) -> dict[str, Any]:
    """Responses puts a grammar's syntax and definition beside its type; chat nests them under `grammar`."""
    if fmt.get("type") != "grammar":
        return fmt
    return {"type": "grammar", "grammar": {key: fmt[key] for key in ("syntax", "definition") if key in fmt}}


def chat_tool_choice(choice: str | dict[str, Any], tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    kind = choice.get("type")
    if kind in ("function", "custom"):
        return {"type": kind, kind: {"name": choice.get("name")}}
    if kind == "allowed_tools":
        allowed = [{"type": tool.get("type"), tool.get("type"): {"name": tool.get("name")}}
                   for tool in choice.get("tools") or [] if isinstance(tool, dict)]
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": allowed}}
    raise InvalidRequestError(f"Invalid value for 'tool_choice.type': '{kind}' names a tool this server does not "
                              "run.", param="tool_choice.type", code="invalid_value")


def chat_response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    if fmt["type"] == "json_schema":
        schema = {key: fmt[key] for key in ("name", "schema", "strict", "description") if key in fmt}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError(f"Invalid value for 'text.format.type': '{fmt['type']}'. Expected 'text', "
                              "'json_object' or 'json_schema'.", param="text.format.type", code="invalid_value")


# Response


def skeleton(request: CreateResponseRequest, model: str) -> dict[str, Any]:
    """The response object before any output: every field OpenAI sends, echoing the request."""
    fmt = (request.text or {}).get("format") or {"type": "text"}
    return {
        "id": new_id("resp"), "object": "response", "created_at": int(time.time()), "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None, "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens, "max_tool_calls": request.max_tool_calls,
        "model": model, "output": [], "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": (request.reasoning or {}).get("effort"), "summary": None},
        "service_tier": "default", "store": request.store is not False,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "text": {"format": fmt, "verbosity": "medium"},
        "tool_choice": request.tool_choice if request.tool_choice is not None else "auto",
        "tools": request.tools or [], "top_logprobs": 0, "top_p": 1.0 if request.top_p is None else request.top_p,
        "truncation": request.truncation or "disabled", "usage": None, "user": request.user,
        "metadata": request.metadata or {},
    }


class ResponseRenderer:
    """Chat events -> Responses SSE events, building the final response object as it goes."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self._sequence = 0
        self._open: dict[str, Any] | None = None  # the output item receiving deltas
        self._tools: dict[int, dict[str, Any]] = {}  # chat tool call index -> its output item
        self._finish: Finish | None = None

    def start(self) -> bytes:
        return self._emit("response.created", response=self._snapshot()) + \
            self._emit("response.in_progress", response=self._snapshot())

    def feed(self, event: Event) -> bytes:
        if isinstance(event, Text):
            return self._delta("message", event.text)
        if isinstance(event, Reasoning):
            return self._delta("reasoning", event.text)
        if isinstance(event, ToolStart):
            return self._tool_start(event)
        if isinstance(event, ToolInput):
            return self._tool_input(event)
        if isinstance(event, Finish):
            self._finish = event
        elif isinstance(event, Usage):
            self.response["usage"] = {
                "input_tokens": event.input_tokens,
                "input_tokens_details": {"cached_tokens": event.cached_tokens, "cache_write_tokens": 0},
                "output_tokens": event.output_tokens,
                "output_tokens_details": {"reasoning_tokens": event.reasoning_tokens},
                "total_tokens": event.input_tokens + event.output_tokens}
        elif isinstance(event, Failure):
            return self.fail(event.message, event.code)
        return b""

    def finish(self) -> bytes:
        """The closing events: the open item ends, then `response.completed` or `.incomplete`."""
        out = self._close()
        reason = self._finish.reason if self._finish else "stop"
        if reason in ("length", "content_filter"):
            self.response["status"] = "incomplete"
            detail = "max_output_tokens" if reason == "length" else "content_filter"
            self.response["incomplete_details"] = {"reason": detail}
            return out + self._emit("response.incomplete", response=self._snapshot())
        self.response["status"] = "completed"
        return out + self._emit("response.completed", response=self._snapshot())

    def fail(self, message: str, code: str | None) -> bytes:
        out = self._close()
        self.response["status"] = "failed"
        self.response["error"] = {"code": code or "server_error", "message": message}
        return out + self._emit("response.failed", response=self._snapshot())

    def assistant_messages(self) -> list[dict[str, Any]]:
        """The output as chat messages, for the conversation a later `previous_response_id` continues."""
        text = "".join(part["text"] for item in self.response["output"] if item["type"] == "message"
                       for part in item["content"])
        calls = []
        for item in self.response["output"]:
            if item["type"] == "function_call":
                calls.append({"id": item["call_id"], "type": "function",
                              "function": {"name": item["name"], "arguments": item["arguments"]}})
            elif item["type"] == "custom_tool_call":
                calls.append({"id": item["call_id"], "type": "custom",
                              "custom": {"name": item["name"], "input": item["input"]}})
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        return [message]

    def _delta(self, kind: str, text: str) -> bytes:
        out = b""
        if self._open is None or self._open["type"] != kind:
            out += self._close()
            out += self._open_item(_message_item() if kind == "message" else _reasoning_item())
            part = ({"type": "output_text", "text": "", "annotations": [], "logprobs": []} if kind == "message"
                    else {"type": "reasoning_text", "text": ""})
            out += self._emit("response.content_part.added", **self._where(), content_index=0, part=part)
        assert self._open is not None
        self._open["content"][0]["text"] += text
        name = "response.output_text.delta" if kind == "message" else "response.reasoning_text.delta"
        extra = {"logprobs": []} if kind == "message" else {}
        return out + self._emit(name, **self._where(), content_index=0, delta=text, **extra)

    def _tool_start(self, event: ToolStart) -> bytes:
        out = self._close()
        if event.custom:
            item = {"id": new_id("ctc"), "type": "custom_tool_call", "status": "in_progress",
                    "call_id": event.call_id, "name": event.name, "input": ""}
        else:
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": event.call_id, "name": event.name, "arguments": ""}
        self._tools[event.index] = item
        return out + self._open_item(item)

    def _tool_input(self, event: ToolInput) -> bytes:
        item = self._tools.get(event.index)
        if item is None or item is not self._open:
            return b""  # chat streams each call whole before the next; anything else is dropped
        field = "input" if item["type"] == "custom_tool_call" else "arguments"
        item[field] += event.text
        name = ("response.custom_tool_call_input.delta" if field == "input"
                else "response.function_call_arguments.delta")
        return self._emit(name, **self._where(), delta=event.text)

    def _open_item(self, item: dict[str, Any]) -> bytes:
        self.response["output"].append(item)
        self._open = item
        announced = {**_copy(item), "content": []} if "content" in item else _copy(item)
        return self._emit("response.output_item.added", output_index=len(self.response["output"]) - 1,
                          item=announced)

    def _close(self) -> bytes:
        item, self._open = self._open, None
        if item is None:
            return b""
        out = b""
        where = {"item_id": item["id"], "output_index": self.response["output"].index(item)}
        if item["type"] in ("message", "reasoning"):
            part = item["content"][0]
            if item["type"] == "message":
                out += self._emit("response.output_text.done", **where, content_index=0, text=part["text"],
                                  logprobs=[])
            else:
                out += self._emit("response.reasoning_text.done", **where, content_index=0, text=part["text"])
            out += self._emit("response.content_part.done", **where, content_index=0, part=_copy(part))
        elif item["type"] == "function_call":
            out += self._emit("response.function_call_arguments.done", **where, arguments=item["arguments"])
        else:
            out += self._emit("response.custom_tool_call_input.done", **where, input=item["input"])
        item["status"] = "completed"
        return out + self._emit("response.output_item.done", output_index=where["output_index"], item=_copy(item))

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": self.response["output"].index(self._open)}

    def _snapshot(self) -> dict[str, Any]:
        return _copy(self.response)

    def _emit(self, kind: str, **fields: Any) -> bytes:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return encode(event, kind)


def _message_item() -> dict[str, Any]:
    return {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
            "content": [{"type": "output_text", "text": "", "annotations": [], "logprobs": []}]}


def _reasoning_item() -> dict[str, Any]:
    return {"id": new_id("rs"), "type": "reasoning", "summary": [], "encrypted_content": None,
            "content": [{"type": "reasoning_text", "text": ""}]}


def _copy(value: Any) -> Any:
    """A deep copy of plain JSON data: events must not change when the item grows later."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
