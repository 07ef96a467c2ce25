"""One chat choice's raw text -> OpenAI delta fields: reasoning, content and tool calls.

The same object serves streaming (each `feed` returns the deltas to send now) and non-streaming
(`message()` after `finish`). Text that might be the start of a marker (`<think>`, `<tool_call>`, ...)
is held back until it is clear which field it belongs to.
"""

from __future__ import annotations

from typing import Any

from runtime.engines.llama.stops import held_back
from runtime.engines.llama.toolcalls import MARKERS, ParsedCall, new_call_id, parse_forced_call, parse_tool_calls
from runtime.protocol import chat as wire

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
FIXED_CHOICES = ("none", "auto", "required")


class ChoiceOutput:
    def __init__(self, tool_choice: str, tool_names: set[str], thinking: bool = False, parallel: bool = True,
                 custom_names: frozenset[str] | set[str] = frozenset()) -> None:
        self.tool_choice = tool_choice  # "none", "auto", "required" or the tool to call
        self.tool_names = tool_names  # the functions it may call
        self.custom_names = custom_names  # the custom tools it may call
        self.parallel = parallel
        self.named = tool_choice not in FIXED_CHOICES
        self.forced = self.named or tool_choice == "required"
        self.state = "content" if self.forced else ("reasoning" if thinking else "start")
        self.pending = ""
        self.tool_text: str | None = "" if tool_choice == "required" else None
        self.content = ""
        self.reasoning = ""
        self.calls: list[dict[str, Any]] = []
        if self.named:
            make = wire.custom_tool_call if tool_choice in custom_names else wire.tool_call
            self.calls.append(make(new_call_id(), tool_choice, ""))

    def opening(self) -> dict[str, Any]:
        """The first delta of the choice."""
        if not self.forced:
            return {"role": "assistant", "content": "", "refusal": None}
        first: dict[str, Any] = {"role": "assistant", "content": None}
        if self.named:
            call = self.calls[0]
            first["tool_calls"] = [{"index": 0, **call}]
        first["refusal"] = None
        return first

    def feed(self, text: str) -> list[dict[str, Any]]:
        self.pending += text
        deltas: list[dict[str, Any]] = []
        while self.pending and self._step(deltas):
            pass
        return deltas

    def finish(self) -> list[dict[str, Any]]:
        deltas: list[dict[str, Any]] = []
        rest, self.pending = self.pending, ""
        if self.state == "answer":
            rest = rest.lstrip()
        if self.state == "reasoning":
            self._reason(rest, deltas)
        elif self.tool_text is None:
            self._say(rest, deltas)
        else:
            self.tool_text += rest
            self._emit_calls(deltas)
        return deltas

    def finish_reason(self, engine_reason: str | None) -> str:
        if engine_reason == "length":
            return "length"
        if self.calls and not self.named:
            return "tool_calls"
        return "stop"

    def message(self) -> dict[str, Any]:
        content = self.content if not (self.calls and not self.content.strip()) else None
        return wire.message(content, self.calls or None, self.reasoning or None)

    # Routing

    def _step(self, deltas: list[dict[str, Any]]) -> bool:
        """Route some pending text; True if there may be more to route now."""
        if self.state == "start":
            head = self.pending.lstrip()
            if head.startswith(THINK_OPEN):
                self.state, self.pending = "reasoning", head[len(THINK_OPEN):]
                return True
            if THINK_OPEN.startswith(head):
                return False
            self.state = "content"
        if self.state == "reasoning":
            at = self.pending.find(THINK_CLOSE)
            if at >= 0:
                self._reason(self.pending[:at], deltas)
                self.state, self.pending = "answer", self.pending[at + len(THINK_CLOSE):]
                return True
            keep = held_back(self.pending, (THINK_CLOSE,))
            self._reason(self.pending[: len(self.pending) - keep], deltas)
            self.pending = self.pending[len(self.pending) - keep:]
            return False
        if self.state == "answer":  # the blank lines between the think block and the answer are dropped
            self.pending = self.pending.lstrip()
            if not self.pending:
                return False
            self.state = "content"
        self._route_content(deltas)
        return False

    def _route_content(self, deltas: list[dict[str, Any]]) -> None:
        text, self.pending = self.pending, ""
        if self.named:  # the whole answer is the call's arguments (a custom tool's input)
            kind, field = ("custom", "input") if self.calls[0]["type"] == "custom" else ("function", "arguments")
            self.calls[0][kind][field] += text
            deltas.append({"tool_calls": [{"index": 0, kind: {field: text}}]})
            return
        if self.tool_text is not None or self.tool_choice == "none" or not (self.tool_names or self.custom_names):
            if self.tool_text is not None:
                self.tool_text += text
            else:
                self._say(text, deltas)
            return
        if not self.content.strip() and text.lstrip().startswith("{"):
            self.tool_text = text  # Llama 3 style: the whole answer is a JSON call
            return
        hits = [at for at in (text.find(m) for m in MARKERS) if at >= 0]
        if hits:
            self._say(text[: min(hits)], deltas)
            self.tool_text = text[min(hits):]
            return
        keep = held_back(text, MARKERS)
        self._say(text[: len(text) - keep], deltas)
        self.pending = text[len(text) - keep:]

    def _emit_calls(self, deltas: list[dict[str, Any]]) -> None:
        text = self.tool_text or ""
        if self.tool_choice == "required":
            forced = parse_forced_call(text, self.custom_names)
            content, calls = ("", [forced]) if forced else (text, [])
        else:
            content, calls = parse_tool_calls(text, self.tool_names, self.custom_names)
        self._say(content, deltas)
        for call in calls if self.parallel else calls[:1]:
            self._add_call(call, deltas)

    def _add_call(self, call: ParsedCall, deltas: list[dict[str, Any]]) -> None:
        """The call, and its deltas as OpenAI streams them: the head (id, type, name), then the text."""
        index = len(self.calls)
        make, kind, field = ((wire.custom_tool_call, "custom", "input") if call.custom
                             else (wire.tool_call, "function", "arguments"))
        call_id = new_call_id()
        self.calls.append(make(call_id, call.name, call.arguments))
        deltas.append({"tool_calls": [{"index": index, **make(call_id, call.name, "")}]})
        deltas.append({"tool_calls": [{"index": index, kind: {field: call.arguments}}]})

    def _say(self, text: str, deltas: list[dict[str, Any]]) -> None:
        if text:
            self.content += text
            deltas.append({"content": text})

    def _reason(self, text: str, deltas: list[dict[str, Any]]) -> None:
        if text:
            self.reasoning += text
            deltas.append({"reasoning_content": text})
