"""Tool calls in the formats real models emit, parsed into (name, arguments JSON string) pairs; and
the Hermes format written into prompts for templates that know nothing of tools.

Formats: Hermes/Qwen `<tool_call>{"name": .., "arguments": {..}}</tool_call>` (repeated), Llama 3
JSON `{"name": .., "parameters": {..}}` (optionally after `<|python_tag|>`, several joined by `;`),
Mistral `[TOOL_CALLS][{"name": .., "arguments": {..}}, ..]` and the newer `[TOOL_CALLS]name[ARGS]{..}`.

Custom tools (free-form input) have a raw form of their own, so that their input needs no JSON
escaping and a grammar for it applies to the generated characters as they are:

    <tool_call name="apply_patch">
    *** Begin Patch
    ...
    </tool_call>

The name is a JSON string; the newline after the opening tag and the one before the closing tag belong
to the form, everything between is the input. A model that writes a custom tool's call in the JSON
form instead gets it read too: `"arguments"` (or `"input"`) as a string, or an object holding one
string, is the input.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
CUSTOM_OPEN = "<tool_call name="
CUSTOM_CLOSE = "\n" + HERMES_CLOSE
MISTRAL = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
MARKERS = (HERMES_OPEN, CUSTOM_OPEN, MISTRAL, PYTHON_TAG)
_TAG = re.compile(r'<tool_call(?: name=("(?:[^"\\\n]|\\.)*"))?>')
_ALNUM = string.ascii_letters + string.digits


@dataclass
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as text; a custom tool's input as it is
    custom: bool = False


def hermes_call(name: str, arguments: str) -> str:
    """One call in the Hermes format, as `parse_tool_calls` reads it back; `arguments` is a JSON object."""
    return f'{HERMES_OPEN}\n{{"name": {json.dumps(name)}, "arguments": {arguments}}}\n{HERMES_CLOSE}'


def custom_call_open(name: str) -> str:
    """What a custom tool's call starts with, up to its input."""
    return f"{CUSTOM_OPEN}{json.dumps(name)}>\n"


def custom_call(name: str, input_: str) -> str:
    """One custom tool call in its raw form, as `parse_tool_calls` reads it back."""
    return custom_call_open(name) + input_ + CUSTOM_CLOSE


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def parse_tool_calls(text: str, known: set[str], custom: frozenset[str] | set[str] = frozenset()
                     ) -> tuple[str, list[ParsedCall]]:
    """(content outside the calls, calls) for `text`; calls to unknown tools are not calls. `known`
    names the functions, `custom` the custom tools."""
    tagged = [at for at in (text.find(HERMES_OPEN), text.find(CUSTOM_OPEN)) if at >= 0]
    for at, parse in ((min(tagged, default=-1), _tagged), (text.find(MISTRAL), _mistral),
                      (text.find(PYTHON_TAG), _json_calls)):
        if at >= 0:
            calls = parse(text[at:].removeprefix(PYTHON_TAG), custom)
            if calls and all(c.name in (custom if c.custom else known) for c in calls):
                return text[:at].strip(), calls
            return text, []
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        calls = _json_calls(stripped, custom)
        if calls and all(c.name in (custom if c.custom else known) for c in calls):
            return "", calls
    return text, []


def parse_forced_call(text: str, custom: frozenset[str] | set[str] = frozenset()) -> ParsedCall | None:
    """The one call a `required` grammar produces: a function's `{"name": .., "arguments": {..}}`
    object, or a custom tool's raw form (its input may contain anything, so the form's end is the
    text's end)."""
    if text.startswith(CUSTOM_OPEN):
        found = _TAG.match(text)
        name = _loads(found.group(1)) if found and found.group(1) else None
        if not isinstance(name, str) or name not in custom:
            return None
        return ParsedCall(name, text[found.end():].removeprefix("\n").removesuffix(CUSTOM_CLOSE), custom=True)
    calls = _json_calls(text, custom)
    return calls[0] if calls else None


def _call(obj: Any, custom: frozenset[str] | set[str] = frozenset()) -> ParsedCall | None:
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):  # {"type": "function", "function": {...}}
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(name, str):
        return None
    if name in custom:
        given = obj.get("input", obj.get("arguments", obj.get("parameters")))
        return None if given is None else ParsedCall(name, _custom_input(given), custom=True)
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(name, json.dumps(args, ensure_ascii=False))


def _custom_input(given: Any) -> str:
    """A custom tool's input from a JSON-form call: a string, or the one string in an object."""
    if isinstance(given, dict) and len(given) == 1:
        given = next(iter(given.values()))
    return given if isinstance(given, str) else json.dumps(given, ensure_ascii=False)


def _calls(value: Any, custom: frozenset[str] | set[str] = frozenset()) -> list[ParsedCall]:
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, custom) for item in items]
    return [c for c in calls if c is not None] if all(calls) else []


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _tagged(text: str, custom: frozenset[str] | set[str]) -> list[ParsedCall]:
    """Hermes calls and custom tools' raw-form calls, in any mix."""
    calls: list[ParsedCall] = []
    at = 0
    while (tag := _TAG.search(text, at)) is not None:
        end = text.find(HERMES_CLOSE, tag.end())
        body = text[tag.end():end if end >= 0 else len(text)]
        at = end + len(HERMES_CLOSE) if end >= 0 else len(text)
        if tag.group(1) is None:
            found = _calls(_loads(body.strip()), custom)
        else:
            found = _raw_call(_loads(tag.group(1)), body.removeprefix("\n").removesuffix("\n"), custom)
        if not found:
            return []
        calls.extend(found)
    return calls


def _raw_call(name: Any, body: str, custom: frozenset[str] | set[str]) -> list[ParsedCall]:
    if not isinstance(name, str):
        return []
    if name in custom:
        return [ParsedCall(name, body, custom=True)]
    call = _call({"name": name, "arguments": _loads(body)})  # a function called in the raw form
    return [call] if call else []


def _mistral(text: str, custom: frozenset[str] | set[str]) -> list[ParsedCall]:
    body = text.removeprefix(MISTRAL).strip()
    if "[ARGS]" in body:
        calls = []
        for part in body.split(MISTRAL):
            name, _, args = part.partition("[ARGS]")
            call = _call({"name": name.strip(), "arguments": _loads(args.strip())}, custom)
            if call is None:
                return []
            calls.append(call)
        return calls
    return _calls(_loads(body), custom)


def _json_calls(text: str, custom: frozenset[str] | set[str] = frozenset()) -> list[ParsedCall]:
    text = text.strip()
    parsed = _loads(text)
    if parsed is not None:
        return _calls(parsed, custom)
    calls: list[ParsedCall] = []
    for part in text.split(";"):  # Llama 3.x joins parallel calls with ';'
        found = _calls(_loads(part.strip()), custom)
        if not found:
            return []
        calls.extend(found)
    return calls
