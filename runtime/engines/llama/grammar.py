"""GBNF grammars that force the model's output: JSON for response_format, calls for tool_choice."""

from __future__ import annotations

import json
from typing import Any

from runtime.errors import InvalidRequestError

ANY_OBJECT: dict[str, Any] = {"type": "object"}
# The converter's string characters allow raw control characters, which strict JSON parsers reject.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def json_grammar(schema: dict[str, Any] | None, param: str = "response_format") -> str:
    """A grammar for one JSON value matching `schema` (any object when None)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema if schema else ANY_OBJECT))
    except Exception as exc:  # the converter raises plain exceptions for schemas it cannot express
        raise InvalidRequestError(f"Invalid schema for '{param}': {exc}", param=param) from None
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def named_tool_grammar(parameters: dict[str, Any] | None) -> str:
    """The model writes only the arguments object of the named function."""
    return json_grammar(parameters, param="tools")


def required_tool_grammar(tools: list[tuple[str, dict[str, Any] | None]]) -> str:
    """The model writes `{"name": <one of the tools>, "arguments": {...}}`."""
    alternatives = [
        {"type": "object",
         "properties": {"name": {"const": name}, "arguments": parameters or ANY_OBJECT},
         "required": ["name", "arguments"]}
        for name, parameters in tools
    ]
    schema = alternatives[0] if len(alternatives) == 1 else {"oneOf": alternatives}
    return json_grammar(schema, param="tools")
