"""Custom tools (`tools[].type: "custom"`): the GBNF that holds a call's input to the tool's grammar.

A custom tool's call is written in its raw form (toolcalls.py): `<tool_call name="NAME">`, a newline,
the input as it is, a newline and `</tool_call>`. With no JSON escaping in between, a Lark or regex
grammar for the input (lark.py, regexp.py) constrains the generated characters directly:

- named (`tool_choice: {"type": "custom", ...}`): the prompt ends with the call's opening line and the
  grammar is the tool's own, so the model writes only the input (a free-text tool stops at the
  closing tag instead: `NAMED_STOPS`);
- required (or `allowed_tools` with mode required): one call, a function's JSON object or a custom
  tool's raw form, with the input in its grammar (free text may hold anything but the closing tag);
- auto: the model answers or calls as it likes; the grammar is in the prompt but not enforced.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from runtime.engines.llama import grammar as json_grammar
from runtime.engines.llama import lark, regexp
from runtime.engines.llama.gbnf import GrammarError, Lit, Rules, emit, prefixed
from runtime.engines.llama.toolcalls import CUSTOM_CLOSE, HERMES_CLOSE, custom_call_open
from runtime.errors import InvalidRequestError

Grammar = tuple[str, str]  # (syntax: "lark" or "regex", definition)
NAMED_STOPS = [CUSTOM_CLOSE, HERMES_CLOSE]  # a free-text input ends at the closing tag


@lru_cache(maxsize=64)  # clients send the same tools with every request
def input_rules(syntax: str, definition: str, prefix: str) -> tuple[str, str]:
    """(GBNF rules under `prefix`, the name of the rule an input must match) for a tool's grammar."""
    rules = Rules(prefix)
    entry = lark.translate(definition, rules) if syntax == "lark" else regexp.translate(definition)
    name = rules.helper()
    rules.define(name, entry)
    rules.check()
    return rules.gbnf(), name


def check(grammar: Grammar, tool: str, param: str) -> None:
    """400 naming the problem when the tool's grammar cannot be enforced."""
    try:
        input_rules(*grammar, "c0")
    except GrammarError as exc:
        raise InvalidRequestError(f"Invalid grammar for custom tool '{tool}': {exc.message}", param=param,
                                  code="invalid_value") from None


def named_grammar(grammar: Grammar | None) -> str | None:
    """The grammar of a forced call's input alone (None: free text)."""
    if grammar is None:
        return None
    rules, entry = input_rules(*grammar, "c0")
    return f"root ::= {entry}\n{rules}"


def required_grammar(functions: list[tuple[str, dict[str, Any] | None]],
                     customs: list[tuple[str, Grammar | None]]) -> str:
    """One call of any of the tools: a function's JSON object or a custom tool's raw form."""
    alternatives, texts = [], []
    if functions:
        texts.append(prefixed(json_grammar.required_tool_grammar(functions), "fn"))
        alternatives.append("fn-root")
    for index, (name, grammar) in enumerate(customs):
        prefix = f"c{index}"
        if grammar is None:
            rules = Rules(prefix)
            entry = rules.add_without(HERMES_CLOSE)
            text = rules.gbnf()
        else:
            text, entry = input_rules(*grammar, prefix)
        texts.append(text)
        alternatives.append(f"{emit(Lit(custom_call_open(name)))} {entry} {emit(Lit(CUSTOM_CLOSE))}")
    return "root ::= " + " | ".join(alternatives) + "\n" + "\n".join(texts)
