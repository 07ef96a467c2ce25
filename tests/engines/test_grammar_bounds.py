"""What a JSON-schema grammar may cost (runtime/engines/llama/grammar.py): schemas past a bound are a 400
that names it, before llama.cpp sees anything; the largest schemas within the bounds compile in llama.cpp;
and whitespace between JSON tokens is at most one space."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest

from runtime.engines.base import SamplingParams, Usage
from runtime.engines.llama import grammar
from runtime.errors import InvalidRequestError


def nested(depth: int, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    schema = leaf or {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def strings(count: int, max_length: int) -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": max_length}
                                             for i in range(count)}}


BOMBS = [
    ("maxLength-30000", {"type": "string", "maxLength": 30000}, "maxLength is 30000, over this server's limit of 1000"),
    ("maxLength-100000", {"type": "string", "maxLength": 100000}, "maxLength is 100000"),
    ("minLength-1e9", {"type": "string", "minLength": 1_000_000_000}, "minLength is 1000000000"),
    ("minItems-1e9", {"type": "array", "items": {"type": "integer"}, "minItems": 10**9}, "minItems is 1000000000"),
    ("maxItems-5000", {"type": "array", "maxItems": 5000}, "maxItems is 5000"),
    ("maxLength-fraction", {"type": "string", "maxLength": 1.5}, "not a whole number"),
    ("maxLength-bool", {"type": "string", "maxLength": True}, "not a whole number"),
    ("minLength-negative", {"type": "string", "minLength": -1}, "not a whole number"),
    ("lengths-reversed", {"type": "string", "minLength": 5, "maxLength": 2}, "is below minLength"),
    ("nested-17", nested(17), "nests deeper than this server's limit of 16 levels"),
    ("nested-400", nested(400), "nests deeper than this server's limit of 16 levels"),
    ("enum-5000", {"enum": list(range(5000))}, "enum has 5000 entries, over this server's limit of 1000"),
    ("anyOf-5000", {"anyOf": [{"const": i} for i in range(5000)]}, "anyOf has 5000 entries"),
    ("properties-2000", {"type": "object", "properties": {f"p{i}": {} for i in range(2000)}}, "2000 properties"),
    ("sub-schemas-6000", {"anyOf": [{"anyOf": [{"type": "integer"}] * 999}] * 6},
     "more than this server's limit of 5000 sub-schemas"),
    ("rules-2000", {"type": "object", "properties": {f"p{i}": {"type": "array", "items": {"type": "integer"}}
                                                     for i in range(999)}}, "more rules than this server's limit"),
    ("expanded-size", strings(34, 1000), "grammar elements"),
    ("nested-repetitions", {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 100},
     "nested repetitions multiply to"),
    ("pattern-count", {"type": "string", "pattern": "a{5000}"}, "over this server's limit of 1000"),
    ("pattern-nested", {"type": "string", "pattern": "((a{10}){10}){100}"}, "multiply to"),
    ("pattern-broken", {"type": "string", "pattern": "(a"}, "pattern"),
    ("const-huge", {"const": "x" * 200_000}, "characters long"),
    ("ref-remote", {"$ref": "https://example.com/schema.json"}, "not a local reference"),
    ("ref-missing", {"$ref": "#/$defs/nope"}, "points at nothing"),
    ("ref-left-recursive", {"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "left-recursive"),
    ("type-unknown", {"type": "wat"}, "unknown type"),
    ("not-a-schema", {"type": "object", "properties": {"a": 5}}, "is not a schema"),
]


@pytest.mark.parametrize("schema, message", [(s, m) for _, s, m in BOMBS], ids=[i for i, _, _ in BOMBS])
def test_a_schema_past_a_bound_is_refused_naming_it(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        grammar.json_grammar(schema)
    assert caught.value.status == 400 and caught.value.param == "response_format"
    assert message in caught.value.message and len(caught.value.message) < 400


def test_tool_parameters_past_a_bound_are_refused_as_tools() -> None:
    for build in (lambda p: grammar.required_tool_grammar([("f", p)]), grammar.named_tool_grammar):
        with pytest.raises(InvalidRequestError, match="nests deeper") as caught:
            build(nested(400))
        assert caught.value.param == "tools"


WITHIN = {
    "32-strings-of-1000": strings(32, 1000),
    "nested-16": nested(15),
    "enum-1000": {"enum": [f"value number {i} " * 5 for i in range(1000)]},
    "900-optional-properties": {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(900)}},
    "numbers-list": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 1000},
    "recursive": {"$defs": {"n": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {
        "type": "array", "items": {"$ref": "#/$defs/n"}}}, "required": ["v"]}}, "$ref": "#/$defs/n"},
    "formats": {"type": "object", "properties": {f: {"type": "string", "format": f}
                                                 for f in ("date", "time", "date-time", "uuid")}},
}


@pytest.mark.parametrize("schema", list(WITHIN.values()), ids=list(WITHIN))
def test_the_largest_schemas_within_the_bounds_compile_in_llama_cpp(schema: dict[str, Any],
                                                                   smollm_engine: Any) -> None:
    rules = grammar.json_grammar(schema)
    params = SamplingParams(max_tokens=1, temperature=0, grammar=rules)
    deltas = list(smollm_engine.generate(smollm_engine.tokenize("{"), params, 1, Usage(), threading.Event()))
    assert deltas[-1].finish_reason in ("length", "stop")


def generate(engine: Any, schema: dict[str, Any], bias: dict[int, float], max_tokens: int = 120) -> tuple[str, str]:
    prompt = engine.tokenize(engine.render_chat([{"role": "user", "content": "Answer in JSON."}], None))
    params = SamplingParams(max_tokens=max_tokens, temperature=0, grammar=grammar.json_grammar(schema),
                            logit_bias=bias)
    deltas = list(engine.generate(prompt, params, 1, Usage(), threading.Event()))
    return "".join(d.text for d in deltas), deltas[-1].finish_reason or ""


def test_whitespace_between_tokens_is_at_most_one_space_even_when_the_model_wants_more(smollm_engine: Any) -> None:
    # Every token that is only whitespace pushed to the top: a grammar that allowed runs of it would be
    # padded until max_tokens.
    spaces = {t: 30.0 for t in range(smollm_engine.n_vocab)
              if (text := smollm_engine.detokenize([t])) and not text.strip()}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}, "ok": {"type": "boolean"},
                                               "tags": {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2}},
              "required": ["age", "ok", "tags"], "additionalProperties": False}
    text, finish = generate(smollm_engine, schema, spaces)
    assert finish == "stop", text
    assert not re.search(r"\s\s|[\t\n\r]", text), repr(text)
    assert set(json.loads(text)) == {"age", "ok", "tags"}
