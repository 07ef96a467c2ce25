"""Chat templates: the model's own Jinja template from its GGUF metadata, in a sandbox.

Templates are Hugging Face style: they see `messages`, `tools`, `add_generation_prompt`, `bos_token`,
`eos_token`, and may call `raise_exception(msg)` and `strftime_now(fmt)`. A model without a template
gets ChatML, the most common format among small instruct models.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from runtime.engines.llama.toolcalls import CUSTOM_OPEN, HERMES_CLOSE, HERMES_OPEN, custom_call, hermes_call
from runtime.errors import InvalidRequestError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# For templates that know nothing of tools: describe them in the system prompt, in the formats
# that toolcalls.py parses (Hermes for functions, the raw form for custom tools).
FUNCTION_PROMPT = (
    "You may call functions to help with the user's request. To call one, reply with only\n"
    f'{HERMES_OPEN}\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n{HERMES_CLOSE}\n'
    "Available functions:\n"
)
CUSTOM_PROMPT = (
    "To use a tool that takes free-form input, reply with only\n"
    f'{CUSTOM_OPEN}"TOOL_NAME">\nINPUT\n{HERMES_CLOSE}\n'
    "where INPUT is the tool's input written out as it is (plain text, not JSON).\n"
    "Tools that take free-form input:\n"
)
# For templates that know tools: a custom tool as the function of one string they can render.
CUSTOM_AS_FUNCTION_PARAMETERS = {"type": "object", "properties": {"input": {"type": "string"}}, "required": ["input"]}


class TemplateError(InvalidRequestError):
    """The template refused the conversation (raise_exception), e.g. roles in an order it can't render."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"The model's chat template rejected the messages: {message}", param="messages")


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


class ChatTemplate:
    def __init__(self, source: str | None, bos_token: str, eos_token: str) -> None:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.has_own = bool(source)
        self.knows_tools = bool(source) and "tools" in source
        self.template = env.from_string(source or CHATML)
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
        if not self.knows_tools:
            messages = describe_tools(messages, tools)
        else:
            messages = [_custom_calls_as_functions(m) for m in messages]
            tools = [_custom_as_function(t) for t in tools] if tools else tools
        try:
            return self.template.render(messages=messages, tools=tools, add_generation_prompt=True,
                                        bos_token=self.bos_token, eos_token=self.eos_token)
        except TemplateError:
            raise
        except Exception as exc:  # template bugs surface as any exception type
            raise InvalidRequestError(f"The model's chat template failed on these messages: {exc}",
                                      param="messages") from None


def describe_tools(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The conversation with tools in the system prompt and past calls written out as text."""
    out = [_calls_as_text(m) for m in messages]
    if not tools:
        return out
    functions = [json.dumps(t.get("function", t), ensure_ascii=False) for t in tools if t.get("type") != "custom"]
    customs = [json.dumps(t["custom"], ensure_ascii=False) for t in tools if t.get("type") == "custom"]
    parts = [FUNCTION_PROMPT + "\n".join(functions)] if functions else []
    if customs:
        intro = "" if functions else "You may use tools to help with the user's request. "
        parts.append(intro + CUSTOM_PROMPT + "\n".join(customs))
    prompt = "\n\n".join(parts)
    if out and out[0]["role"] == "system":
        return [{**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}, *out[1:]]
    return [{"role": "system", "content": prompt}, *out]


def _calls_as_text(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls:
        return message
    text = "".join(custom_call(c["custom"]["name"], c["custom"]["input"]) if c.get("type") == "custom"
                   else hermes_call(c["function"]["name"], c["function"]["arguments"]) for c in calls)
    rest = {k: v for k, v in message.items() if k != "tool_calls"}
    return {**rest, "content": (message.get("content") or "") + text}


def _custom_as_function(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "custom":
        return tool
    custom = tool["custom"]
    description = custom.get("description") or ""
    grammar = (custom.get("format") or {}).get("grammar")
    if grammar:
        description += f"\nThe input follows this {grammar['syntax']} grammar:\n{grammar['definition']}"
    function = {"name": custom["name"], "description": description.strip(), "parameters": CUSTOM_AS_FUNCTION_PARAMETERS}
    return {"type": "function", "function": function}


def _custom_calls_as_functions(message: dict[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls")
    if not calls or all(c.get("type") != "custom" for c in calls):
        return message
    converted = [{"id": c["id"], "type": "function", "function": {
        "name": c["custom"]["name"], "arguments": json.dumps({"input": c["custom"]["input"]}, ensure_ascii=False)}}
        if c.get("type") == "custom" else c for c in calls]
    return {**message, "tool_calls": converted}
