"""Tool calls in the formats real models emit, parsed into (name, arguments JSON string) pairs; and
the Hermes format written into prompts for templates that know nothing of tools.

Formats: Hermes/Qwen `<tool_call>{"name": .., "arguments": {..}}</tool_call>` (repeated), Llama 3
JSON `{"name": .., "parameters": {..}}` (optionally after `<|python_tag|>`, several joined by `;`),
Mistral `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]` and the newer `[TOOL_CALLS]name[ARGS]{..}`.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
MARKERS = (HERMES_OPEN, MISTRAL, PYTHON_TAG)
_ALNUM = string.ascii_letters + string.digits


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text


def hermes_call(name: str, arguments: str) -> str:
    """One call in the Hermes format, as `parse_tool_calls` reads it back; `arguments` is a JSON object."""
    return f'{HERMES_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n{HERMES_CLOSE}'


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def parse_tool_calls(text: str, known: set[str]) -> tuple[str, list[ParsedCall]]:
    """(content outside the calls, calls) for `text`; calls to unknown functions are not calls."""
    for marker, parse in ((HERMES_OPEN, _hermes), (MISTRAL, _mistral), (PYTHON_TAG, _json_calls)):
        at = text.find(marker)
        if at >= 0:
            calls = parse(text[at:].removeprefix(PYTHON_TAG))
            if calls and all(c.name in known for c in calls):
                return text[:at].strip(), calls
            return text, []
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        calls = _json_calls(stripped)
        if calls and all(c.name in known for c in calls):
            return "", calls
    return text, []


def parse_forced_call(text: str) -> ParsedCall | None:
    """The `{"name": .., "arguments": {..}}` object a `required` grammar produces."""
    calls = _json_calls(text)
    return calls[0] if calls else None


def _call(obj: Any) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str):
        return None
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name, json.dumps(args, ensure_ascii=False))


def _calls(value: Any) -> list[ParsedCall]:
    items = value if isinstance(value, list) else [value]
    calls = [_call(item) for item in items]
    return [c for c in calls if c is not None] if all(calls) else []


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _hermes(text: str) -> list[ParsedCall]:
    calls: list[ParsedCall] = []
    for body in re.findall(rf"{HERMES_OPEN}\s*(.*?)\s*(?:{HERMES_CLOSE}|$)", text, re.DOTALL):
        found = _calls(_loads(body))
        if not found:
            return []
        calls.extend(found)
    return calls


def _mistral(text: str) -> list[ParsedCall]:
    body = text.removeprefix(MISTRAL).strip()
    if "[ARGS]" in body:
        calls = []
        for part in body.split(MISTRAL):
            name, _, args = part.partition("[ARGS]")
            call = _call({"name": name.strip(), "arguments": _loads(args.strip())})
            if call is None:
                return []
            calls.append(call)
        return calls
    return _calls(_loads(body))


def _json_calls(text: str) -> list[ParsedCall]:
    text = text.strip()
    parsed = _loads(text)
    if parsed is not None:
        return _calls(parsed)
    calls: list[ParsedCall] = []
    for part in text.split(";"):  # Llama 3.x joins parallel calls with ';'
        found = _calls(_loads(part.strip()))
        if not found:
            return []
        calls.extend(found)
    return calls
