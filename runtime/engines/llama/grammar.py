"""GBNF grammars that force the model's output: JSON for response_format, calls for tool_choice.

A JSON schema becomes a grammar tree (gbnf.py), so it is held to the bounds every grammar here is
(rules, expanded size, repetition counts) and to its own: nesting depth, enum and property counts,
and the schema's size, all checked while it is read and refused with a 400 that names the limit and
where in the schema it was exceeded. Nothing unbounded reaches llama.cpp, and within the bounds a
grammar builds in milliseconds, so it needs no cancellation of its own.

Between JSON tokens the model may write at most one space, and the schema is stated in the prompt
(`with_schema`): a small schema yields a small object.
Enforced: type (and lists of types), const, enum, properties, required, additionalProperties, items,
prefixItems, minItems, maxItems, minLength, maxLength, pattern (regexp.py), the formats date, time,
date-time and uuid, anyOf, oneOf, allOf (merged) and local $ref. Other keywords (minimum, multipleOf,
...) are accepted and not enforced.
"""

from __future__ import annotations

import json
from typing import Any

from runtime.engines.llama import regexp
from runtime.engines.llama.gbnf import (
    EMPTY,
    MAX_ELEMENTS,
    MAX_REPEAT,
    Alt,
    Chars,
    GrammarError,
    Lit,
    Node,
    Ref,
    Rep,
    Rules,
    Seq,
    alt,
    emit,
    normalize,
    seq,
)
from runtime.errors import InvalidRequestError

ANY_OBJECT: dict[str, Any] = {"type": "object"}
MAX_SCHEMA_DEPTH = 16  # each level deepens llama.cpp's grammar stacks, and every token is checked against them
MAX_ENUM = 1_000  # values of one enum
MAX_PROPERTIES = 1_000  # properties of one object
MAX_SCHEMA_NODES = 5_000  # sub-schemas read, refs counted once

DIGIT = Chars(((48, 57),))
FORMATS = {  # JSON-schema string formats, as full-match regexes
    "date": r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
    "time": r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
}
FORMATS["date-time"] = FORMATS["date"] + "T" + FORMATS["time"]
# What a JSON string may hold unescaped: not '"', '\\' or a control character.
_RAW = ((0, 0x1F), (0x22, 0x22), (0x5C, 0x5C), (0x7F, 0x7F))


def json_grammar(schema: dict[str, Any] | None, param: str = "response_format") -> str:
    """A grammar for one JSON value matching `schema` (any object when None)."""
    converter = _Converter(schema if schema else ANY_OBJECT, param)
    try:
        root = converter.visit(converter.root, "$", 0)
        converter.rules.check()
    except GrammarError as exc:
        raise InvalidRequestError(f"Invalid schema for '{param}': {exc.message}", param=param) from None
    return f"root ::= {emit(root)}\n{converter.rules.gbnf()}"


def with_schema(messages: list[dict[str, Any]], schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The chat with the schema stated in its system message. The grammar alone holds the model to the
    schema's shape, not its meaning: a small model told nothing writes a "name" that rambles on until
    max_tokens (SmolLM2 did in 2 runs of 12; with the schema stated, in none of 24)."""
    if not schema:
        return messages
    note = "Answer with a JSON object that matches this JSON schema: " + json.dumps(schema, separators=(",", ":"))
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


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


class _Converter:
    """One schema's rules. `visit` returns the node of a sub-schema; objects, arrays, refs and bounded
    strings get a rule of their own, so no repetition nests inside another (llama.cpp multiplies those)."""

    def __init__(self, root: Any, param: str) -> None:
        self.root = root
        self.param = param
        self.rules = Rules("j")
        self.shared: dict[str, Ref] = {}
        self.refs: dict[str, Ref] = {}
        self.nodes = 0
        self.space = self._shared("space", lambda: Rep(Lit(" "), 0, 1))

    def visit(self, schema: Any, path: str, depth: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_SCHEMA_NODES:
            raise GrammarError(f"it has more than this server's limit of {MAX_SCHEMA_NODES} sub-schemas.")
        if depth > MAX_SCHEMA_DEPTH:
            raise GrammarError(f"...{path[-80:]} nests deeper than this server's limit of {MAX_SCHEMA_DEPTH} levels.")
        if schema is True or schema == {}:
            return self._value()
        if not isinstance(schema, dict):
            raise GrammarError(f"{path} is not a schema (an object or true).")
        if "$ref" in schema:
            return self._ref(schema["$ref"], path, depth)
        if "const" in schema:
            return self._literal(schema["const"], path)
        if "enum" in schema:
            values = _items(schema, "enum", path, MAX_ENUM)
            return alt([self._literal(value, f"{path}.enum") for value in values])
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return alt([self.visit(s, f"{path}.{key}[{i}]", depth + 1)
                            for i, s in enumerate(_items(schema, key, path, MAX_ENUM))])
        if "allOf" in schema:
            return self.visit(self._merged(schema, path), path, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            return alt([self.visit({**schema, "type": t}, path, depth) for t in kind])
        if kind == "object" or (kind is None and ("properties" in schema or "additionalProperties" in schema)):
            return self._object(schema, path, depth)
        if kind == "array" or (kind is None and ("items" in schema or "prefixItems" in schema)):
            return self._array(schema, path, depth)
        if kind == "string":
            return self._string(schema, path)
        if kind in ("number", "integer", "boolean", "null"):
            return self._shared(kind, lambda: self._primitive(kind))
        if kind is None:
            return self._value()
        raise GrammarError(f"{path} has the unknown type {json.dumps(kind)[:40]}.")

    # Containers

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise GrammarError(f"{path}.properties is not an object.")
        if len(properties) > MAX_PROPERTIES:
            raise GrammarError(f"{path} has {len(properties)} properties, over this server's limit of "
                               f"{MAX_PROPERTIES}.")
        additional = schema.get("additionalProperties")
        if not properties and additional in (None, True, {}):
            return self._shared("object", self._any_object)
        wanted = schema.get("required") or []
        pairs = {name: self._pair(name, sub, f"{path}.properties.{str(name)[:40]}", depth + 1)
                 for name, sub in properties.items()}
        required = [pairs[name] for name in properties if name in wanted]
        optional = [pairs[name] for name in properties if name not in wanted]
        comma = seq([Lit(","), self.space])
        extra: Node | None = None
        if additional is True or (isinstance(additional, dict) and additional):
            value = self.visit(additional, f"{path}.additionalProperties", depth + 1)
            extra = self._rule(seq([self._string_rule(), Lit(":"), self.space, value]))
        tail = Rep(seq([comma, extra]), 0, None) if extra else EMPTY
        if required:
            members = [required[0], *(seq([comma, pair]) for pair in required[1:]),
                       *(Rep(seq([comma, pair]), 0, 1) for pair in optional), tail]
        else:  # the first member present has no comma before it; one rule per optional keeps this linear
            rest, firsts = tail, [seq([extra, tail])] if extra else []
            for index in reversed(range(len(optional))):
                firsts.append(seq([optional[index], rest]))
                if index:
                    rest = self._rule(seq([Rep(seq([comma, optional[index]]), 0, 1), rest]))
            members = [Rep(alt(firsts[::-1]), 0, 1)] if firsts else []
        return self._rule(seq([Lit("{"), self.space, *members, Lit("}"), self.space]))

    def _pair(self, name: Any, schema: Any, path: str, depth: int) -> Node:
        return seq([Lit(json.dumps(name)), self.space, Lit(":"), self.space, self.visit(schema, path, depth)])

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> Node:
        prefix = schema.get("prefixItems", schema.get("items") if isinstance(schema.get("items"), list) else None)
        comma = seq([Lit(","), self.space])
        if prefix is not None:
            items = [self.visit(s, f"{path}.prefixItems[{i}]", depth + 1)
                     for i, s in enumerate(_items(schema, "prefixItems" if "prefixItems" in schema else "items",
                                                  path, MAX_PROPERTIES))]
            body = [items[0], *(seq([comma, item]) for item in items[1:])] if items else []
            return self._rule(seq([Lit("["), self.space, *body, Lit("]"), self.space]))
        low, high = _counts(schema, "minItems", "maxItems", path)
        item = self.visit(schema.get("items", True), f"{path}.items", depth + 1)
        if high == 0:
            return self._rule(seq([Lit("["), self.space, Lit("]"), self.space]))
        more = Rep(seq([comma, item]), max(low - 1, 0), None if high is None else high - 1)
        listed = self._rule(seq([item, more]))
        return self._rule(seq([Lit("["), self.space, listed if low else Rep(listed, 0, 1), Lit("]"), self.space]))

    def _ref(self, ref: Any, path: str, depth: int) -> Node:
        if isinstance(ref, str) and ref in self.refs:
            return self.refs[ref]
        target = self._resolve(ref, path)
        name = self.rules.helper()
        self.refs[ref] = Ref(name)  # before visiting: a recursive schema refers to itself
        self.rules.define(name, self.visit(target, ref, depth + 1))
        return self.refs[ref]

    def _merged(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        """allOf as one schema: the properties and required names of every part, the rest from the schema."""
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        properties, required = dict(merged.get("properties") or {}), list(merged.get("required") or [])
        for i, part in enumerate(_items(schema, "allOf", path, MAX_ENUM)):
            if isinstance(part, dict) and "$ref" in part:
                part = self._resolve(part["$ref"], f"{path}.allOf[{i}]")
            if not isinstance(part, dict):
                raise GrammarError(f"{path}.allOf[{i}] is not a schema (an object).")
            properties.update(part.get("properties") or {})
            required.extend(part.get("required") or [])
            merged.update({k: v for k, v in part.items() if k not in ("properties", "required", "$ref")})
        if properties:
            merged["properties"] = properties
            merged.setdefault("type", "object")
        merged["required"] = required
        return merged

    def _resolve(self, ref: Any, path: str) -> Any:
        """What a local $ref (a JSON pointer after '#') points at."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GrammarError(f"{path}.$ref {json.dumps(ref)[:80]} is not a local reference (one starting with #).")
        target: Any = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise GrammarError(f"{path}.$ref {json.dumps(ref)[:80]} points at nothing in the schema.")
        return target

    # Strings and literals

    def _string(self, schema: dict[str, Any], path: str) -> Node:
        pattern = schema.get("pattern", FORMATS.get(schema.get("format")))
        if isinstance(pattern, str):
            try:
                inner = _json_safe(regexp.translate(pattern))
            except GrammarError as exc:
                raise GrammarError(f"{path}.pattern: {exc.message}") from None
            return self._rule(seq([Lit('"'), inner, Lit('"'), self.space]))
        low, high = _counts(schema, "minLength", "maxLength", path)
        if (low, high) == (0, None):
            return self._string_rule()
        return self._rule(seq([Lit('"'), Rep(self._char(), low, high), Lit('"'), self.space]))

    def _literal(self, value: Any, path: str) -> Node:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            raise GrammarError(f"{path} is not a JSON value.") from None
        if len(text) > MAX_ELEMENTS:
            raise GrammarError(f"{path} is {len(text)} characters long, over this server's limit of {MAX_ELEMENTS}.")
        return seq([Lit(text), self.space])

    # Shared rules

    def _rule(self, body: Node) -> Ref:
        name = self.rules.helper()
        self.rules.define(name, body)
        return Ref(name)

    def _shared(self, key: str, build: Any) -> Ref:
        if key not in self.shared:
            self.shared[key] = Ref(self.rules.name(key))  # before building: `value` and `object` recurse
            self.rules.define(self.shared[key].name, build())
        return self.shared[key]

    def _char(self) -> Ref:
        hex_digit = Chars(((48, 57), (65, 70), (97, 102)))
        escape = seq([Lit("\\"), alt([Chars(normalize([(ord(c), ord(c)) for c in '"\\/bfnrt'])),
                                      seq([Lit("u"), *[hex_digit] * 4])])])
        return self._shared("char", lambda: Alt((Chars(_RAW, negated=True), escape)))

    def _string_rule(self) -> Ref:
        return self._shared("string", lambda: seq([Lit('"'), Rep(self._char(), 0, None), Lit('"'), self.space]))

    def _value(self) -> Ref:
        return self._shared("value", lambda: alt([self._shared("object", self._any_object),
                                                  self._shared("array", self._any_array), self._string_rule(),
                                                  *(self._shared(k, lambda k=k: self._primitive(k))
                                                    for k in ("number", "boolean", "null"))]))

    def _any_object(self) -> Node:
        pair = seq([self._string_rule(), Lit(":"), self.space, self._value()])
        members = self._rule(seq([pair, Rep(seq([Lit(","), self.space, pair]), 0, None)]))
        return seq([Lit("{"), self.space, Rep(members, 0, 1), Lit("}"), self.space])

    def _any_array(self) -> Node:
        value = self._value()
        members = self._rule(seq([value, Rep(seq([Lit(","), self.space, value]), 0, None)]))
        return seq([Lit("["), self.space, Rep(members, 0, 1), Lit("]"), self.space])

    def _primitive(self, kind: str) -> Node:
        if kind == "boolean":
            return seq([alt([Lit("true"), Lit("false")]), self.space])
        if kind == "null":
            return seq([Lit("null"), self.space])
        integral = alt([Lit("0"), seq([Chars(((49, 57),)), _up_to(DIGIT, 15)])])
        sign = Rep(Lit("-"), 0, 1)
        if kind == "integer":
            return seq([sign, integral, self.space])
        fraction = Rep(seq([Lit("."), DIGIT, _up_to(DIGIT, 15)]), 0, 1)
        exponent = Rep(seq([Chars(((69, 69), (101, 101))), Rep(Chars(((43, 43), (45, 45))), 0, 1), DIGIT,
                            _up_to(DIGIT, 2)]), 0, 1)
        return seq([sign, integral, fraction, exponent, self.space])


def _up_to(node: Node, count: int) -> Node:
    """`node` 0 to `count` times as nested optionals, not {0,count}: gbnf.py multiplies bounded counts through
    rules, and a number's digits would count 16 times over in every array of numbers."""
    chain: Node = EMPTY
    for _ in range(count):
        chain = Rep(seq([node, chain]), 0, 1)
    return chain


def _items(schema: dict[str, Any], key: str, path: str, limit: int) -> list[Any]:
    values = schema[key]
    if not isinstance(values, list) or (not values and key != "prefixItems"):
        raise GrammarError(f"{path}.{key} is not a non-empty list.")
    if len(values) > limit:
        raise GrammarError(f"{path}.{key} has {len(values)} entries, over this server's limit of {limit}.")
    return values


def _counts(schema: dict[str, Any], low_key: str, high_key: str, path: str) -> tuple[int, int | None]:
    """(min, max) of a string's length or an array's items: whole numbers up to MAX_REPEAT, in order."""
    counts: list[int | None] = []
    for key in (low_key, high_key):
        value = schema.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise GrammarError(f"{path}.{key} is {json.dumps(value)[:40]}, not a whole number of 0 or more.")
        if value is not None and value > MAX_REPEAT:
            raise GrammarError(f"{path}.{key} is {value}, over this server's limit of {MAX_REPEAT}. Lower it, or "
                               f"leave it out for no limit.")
        counts.append(value)
    low, high = counts[0] or 0, counts[1]
    if high is not None and high < low:
        raise GrammarError(f"{path}.{high_key} ({high}) is below {low_key} ({low}).")
    return low, high


def _json_safe(node: Node) -> Node:
    """A regex's tree (raw characters) as the characters of a JSON string: quotes and backslashes escaped,
    control characters left out."""
    if isinstance(node, Lit):
        return Lit(json.dumps(node.text)[1:-1])
    if isinstance(node, Chars):
        if node.negated:
            return Chars(normalize([*node.ranges, *_RAW]), negated=True)
        allowed = Chars(normalize([r for low, high in node.ranges for r in _minus_raw(low, high)]))
        escaped = [Lit(json.dumps(c)[1:-1]) for c in '"\\' if any(low <= ord(c) <= high for low, high in node.ranges)]
        if not allowed.ranges and not escaped:
            raise GrammarError("the pattern asks for a control character, which a JSON string holds only escaped.")
        return alt([allowed, *escaped]) if allowed.ranges else alt(escaped)
    if isinstance(node, Rep):
        return Rep(_json_safe(node.item), node.min, node.max)
    if isinstance(node, Alt):
        return Alt(tuple(_json_safe(item) for item in node.items))
    if isinstance(node, Seq):
        return seq([_json_safe(item) for item in node.items])
    return node


def _minus_raw(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high] without the characters a JSON string must escape."""
    out, start = [], low
    for raw_low, raw_high in _RAW:
        if raw_high < start or raw_low > high:
            continue
        if raw_low > start:
            out.append((start, raw_low - 1))
        start = raw_high + 1
    if start <= high:
        out.append((start, high))
    return out
