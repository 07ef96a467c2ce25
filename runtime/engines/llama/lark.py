"""Lark grammars, as OpenAI's custom tools take them (`format: {type: "grammar", grammar: {syntax:
"lark"}}`), as grammar trees for GBNF.

Supported: rule (lowercase) and terminal (UPPERCASE) definitions, with the `?`/`!` prefixes, priorities
and `-> alias` accepted and ignored (they shape Lark's parse tree, not the language); alternation over
lines starting with `|`; grouping `( )`, optional `[ ]` and `?`, `*`, `+`, `~ n` and `~ n..m`; strings
"..." (with the `i` flag), ranges "a".."z" and regexes /.../flags (the subset in regexp.py); `//` and
`#` comments; `%import common.NAME [-> ALIAS]` and `%import common (A, B)` for the terminals of Lark's
common.lark; `%ignore` (what it names may stand between any two tokens, as with Lark's lexer). The
grammar starts at `start`. Direct left recursion (`expr: expr "+" term | term`) is rewritten as a
repetition; indirect left recursion is refused. Templates, `%declare`, `%override`, `%extend` and
llguidance's extensions are refused with a message that says so.

The language is read character by character, not through a lexer: for a grammar whose meaning
depends on Lark's longest-match tokenizing the GBNF may accept a little more than Lark would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from runtime.engines.llama import regexp
from runtime.engines.llama.gbnf import (
    EMPTY,
    MAX_DEFINITION_CHARS,
    Alt,
    Chars,
    GrammarError,
    Lit,
    Node,
    Ref,
    Rules,
    Seq,
    alt,
    case_fold,
    check_depth,
    normalize,
    rep,
    seq,
)

# Lark's common.lark, written with the regex subset this server supports (no lookbehind, no lazy
# matches: ESCAPED_STRING and C_COMMENT spell out what the originals mean).
COMMON = r"""
DIGIT: "0".."9"
HEXDIGIT: "a".."f" | "A".."F" | DIGIT
INT: DIGIT+
SIGNED_INT: ["+" | "-"] INT
DECIMAL: INT "." INT? | "." INT
_EXP: ("e" | "E") SIGNED_INT
FLOAT: INT _EXP | DECIMAL _EXP?
SIGNED_FLOAT: ["+" | "-"] FLOAT
NUMBER: FLOAT | INT
SIGNED_NUMBER: ["+" | "-"] NUMBER
ESCAPED_STRING: "\"" /([^"\\\n]|\\[^\n])*/ "\""
LCASE_LETTER: "a".."z"
UCASE_LETTER: "A".."Z"
LETTER: UCASE_LETTER | LCASE_LETTER
WORD: LETTER+
CNAME: ("_" | LETTER) ("_" | LETTER | DIGIT)*
WS_INLINE: (" " | /\t/)+
WS: /[ \t\f\r\n]/+
CR: /\r/
LF: /\n/
NEWLINE: (CR? LF)+
SH_COMMENT: /#[^\n]*/
CPP_COMMENT: /\/\/[^\n]*/
C_COMMENT: "/*" /([^*]|\*+[^*\/])*\*+/ "/"
SQL_COMMENT: /--[^\n]*/
"""

_TOKEN = re.compile(r"""
    (?P<space>[ \t\f\r]+|\\\r?\n)
  | (?P<comment>//[^\n]*|\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:\\.|[^"\\\n])*"i?)
  | (?P<regexp>/(?:\\.|[^/\\\n])+/[a-zA-Z]*)
  | (?P<op>\.\.|->|[:|()\[\]?!*+~.,{}])
  | (?P<directive>%[a-zA-Z_]+)
  | (?P<name>[_a-zA-Z][_a-zA-Z0-9]*)
  | (?P<number>\d+)
""", re.VERBOSE)
_STRING_ESCAPES = {"n": "\n", "f": "\f", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    line: int


def translate(definition: str, rules: Rules) -> Node:
    """Adds the rules of the Lark grammar `definition` to `rules`; returns the expression of its start."""
    if len(definition) > MAX_DEFINITION_CHARS:
        raise GrammarError(f"it is longer than this server's limit of {MAX_DEFINITION_CHARS} characters.")
    return _Grammar(rules).build(statements(definition))


def is_terminal(name: str) -> bool:
    return name.lstrip("_")[:1].isupper()


def statements(text: str) -> list[list[Token]]:
    """The grammar's statements as token lists: a newline ends one unless the next line starts with '|'."""
    out: list[list[Token]] = []
    current: list[Token] = []
    depth, line, at, pending_newline = 0, 1, 0, False
    while at < len(text):
        found = _TOKEN.match(text, at)
        if found is None:
            raise GrammarError(f"line {line}: unexpected '{text[at]}'.")
        kind, value = found.lastgroup or "", found.group()
        at = found.end()
        if kind in ("space", "comment", "newline"):
            pending_newline = pending_newline or (kind == "newline" and depth == 0)
            line += value.count("\n")
            continue
        if pending_newline and current and value != "|":
            out.append(current)
            current = []
        pending_newline = False
        if kind == "op" and value in "([{":
            depth += 1
        elif kind == "op" and value in ")]}":
            depth = max(depth - 1, 0)
        current.append(Token(kind, value, line))
    if current:
        out.append(current)
    return out


@lru_cache(maxsize=1)
def _common() -> dict[str, list[Token]]:
    return {statement[0].text: statement[2:] for statement in statements(COMMON)}


class _Grammar:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.defined: dict[str, int] = {}  # name -> line
        self.ignore: str | None = None

    def build(self, parsed: list[list[Token]]) -> Node:
        definitions, ignores = [], []
        for statement in parsed:
            head = statement[0]
            if head.kind == "directive":
                if head.text == "%ignore":
                    ignores.append(statement[1:])
                else:
                    self._directive(statement)
                continue
            name, body = self._split_definition(statement)
            self._declare(name.text, name.line)
            definitions.append((name.text, body))
        if "start" not in self.defined:
            raise GrammarError("it has no 'start' rule (the rule the input must match).")
        if ignores:
            self.ignore = self.rules.helper()
            parts = [self._expression(tokens, terminal=True) for tokens in ignores]
            self.rules.define(self.ignore, rep(alt(parts), 0, None))
        for name, body in definitions:
            node = self._expression(body, terminal=is_terminal(name))
            gbnf_name = self.rules.name(name)
            self.rules.define(gbnf_name, node if is_terminal(name) else _unrecurse(gbnf_name, node, name))
        start = Ref(self.rules.name("start"))
        root = seq([Ref(self.ignore), start]) if self.ignore else start
        self.rules.keep_reachable(root)
        return root

    def _declare(self, name: str, line: int) -> None:
        if name in self.defined:
            raise GrammarError(f"line {line}: '{name}' is defined twice (first on line {self.defined[name]}).")
        self.defined[name] = line

    def _split_definition(self, statement: list[Token]) -> tuple[Token, list[Token]]:
        at = 0
        while at < len(statement) and statement[at].text in ("?", "!"):
            at += 1
        if at >= len(statement) or statement[at].kind != "name":
            raise GrammarError(f"line {statement[0].line}: expected a rule or terminal definition, found "
                               f"'{statement[0].text}'.")
        name = statement[at]
        at += 1
        if at + 1 < len(statement) and statement[at].text == "." and statement[at + 1].kind == "number":
            at += 2  # a priority
        if at < len(statement) and statement[at].text == "{":
            raise GrammarError(f"line {name.line}: templates ('{name.text}{{...}}') are not supported.")
        if at >= len(statement) or statement[at].text != ":":
            raise GrammarError(f"line {name.line}: expected ':' after '{name.text}'.")
        return name, statement[at + 1:]

    def _directive(self, statement: list[Token]) -> None:
        head = statement[0]
        if head.text != "%import":
            raise GrammarError(f"line {head.line}: '{head.text}' is not supported.")
        texts = [t.text for t in statement[1:]]
        if not texts or texts[0] != "common":
            raise GrammarError(f"line {head.line}: only '%import common...' is supported (Lark's common terminals).")
        if len(texts) >= 3 and texts[1] == ".":
            alias = texts[4] if len(texts) == 5 and texts[3] == "->" else texts[2]
            if len(texts) not in (3, 5) or alias != texts[-1]:
                raise GrammarError(f"line {head.line}: expected '%import common.NAME' or "
                                   "'%import common.NAME -> ALIAS'.")
            self._import(texts[2], alias, head.line)
        elif len(texts) >= 4 and texts[1] == "(" and texts[-1] == ")":
            for name in texts[2:-1:2]:
                self._import(name, name, head.line)
        else:
            raise GrammarError(f"line {head.line}: expected '%import common.NAME' or '%import common (A, B)'.")

    def _import(self, name: str, alias: str, line: int) -> None:
        if name not in _common():
            raise GrammarError(f"line {line}: common.{name} is not one of the common terminals this server knows "
                               f"({', '.join(sorted(n for n in _common() if not n.startswith('_')))}).")
        self._declare(alias, line)
        self.rules.define(self.rules.name(alias), self._common_ref(name))

    def _common_ref(self, name: str, line: int = 0) -> Ref:
        """The rule of common.NAME (defined, with what it uses, the first time it is needed)."""
        mangled = self.rules.name(f"common__{name}")
        if mangled not in self.rules.bodies:
            self.rules.bodies[mangled] = EMPTY  # reserves the name while its body is built
            body = _Expression(_common()[name], self._common_ref, None).parse()
            self.rules.define(mangled, body)
        return Ref(mangled)

    def _expression(self, tokens: list[Token], terminal: bool) -> Node:
        token = None if terminal or self.ignore is None else Ref(self.ignore)
        return _Expression(tokens, self._resolve, token).parse()

    def _resolve(self, name: str, line: int = 0) -> Ref:
        if name not in self.defined:
            hint = f" (add '%import common.{name}')" if name in _common() else ""
            raise GrammarError(f"line {line}: '{name}' is used but never defined{hint}.")
        return Ref(self.rules.name(name))


class _Expression:
    """One definition's expansions. In rule context `ignore` follows every token (a string, a regex or a
    terminal), so whatever %ignore names may stand between any two tokens."""

    def __init__(self, tokens: list[Token], resolve: Callable[..., Ref], ignore: Ref | None) -> None:
        self.tokens = tokens
        self.at = 0
        self.resolve = resolve
        self.ignore = ignore

    def parse(self) -> Node:
        node = self._expansions(0)
        if self.at < len(self.tokens):
            token = self.tokens[self.at]
            raise GrammarError(f"line {token.line}: unexpected '{token.text}'.")
        return node

    def _peek(self) -> Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def _expansions(self, depth: int) -> Node:
        check_depth(depth)
        branches = [self._expansion(depth)]
        while (token := self._peek()) is not None and token.text == "|":
            self.at += 1
            branches.append(self._expansion(depth))
        return alt(branches)

    def _expansion(self, depth: int) -> Node:
        items: list[Node] = []
        while (token := self._peek()) is not None and token.text not in ("|", ")", "]", "->"):
            items.append(self._expr(depth))
        if (token := self._peek()) is not None and token.text == "->":
            self.at += 2  # an alias names a tree node; the language is the same
        return seq(items) if items else EMPTY

    def _expr(self, depth: int) -> Node:
        atom = self._atom(depth)
        token = self._peek()
        if token is None:
            return atom
        if token.text in ("?", "*", "+"):
            self.at += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[token.text]
            return rep(atom, low, high)
        if token.text == "~":
            low = self._number()
            high = low
            if (dots := self._peek()) is not None and dots.text == "..":
                high = self._number()
            return rep(atom, low, high)
        return atom

    def _number(self) -> int:
        self.at += 1
        token = self._peek()
        if token is None or token.kind != "number":
            raise GrammarError(f"line {self.tokens[self.at - 1].line}: expected a number after "
                               f"'{self.tokens[self.at - 1].text}'.")
        self.at += 1
        return int(token.text)

    def _atom(self, depth: int) -> Node:
        token = self.tokens[self.at]
        self.at += 1
        if token.text in ("(", "["):
            inner = self._expansions(depth + 1)
            close = ")" if token.text == "(" else "]"
            if (end := self._peek()) is None or end.text != close:
                raise GrammarError(f"line {token.line}: '{token.text}' is not closed.")
            self.at += 1
            return inner if close == ")" else rep(inner, 0, 1)
        if token.kind == "string":
            if (dots := self._peek()) is not None and dots.text == "..":
                self.at += 1
                return self._token(self._range(token, self._next_string(token)))
            return self._token(_string(token))
        if token.kind == "regexp":
            body, _, flags = token.text[1:].rpartition("/")
            try:
                return self._token(regexp.translate(body, flags))
            except GrammarError as exc:
                raise GrammarError(f"line {token.line}: in /{body}/, {exc.message}") from None
        if token.kind == "name":
            if (brace := self._peek()) is not None and brace.text == "{":
                raise GrammarError(f"line {token.line}: templates ('{token.text}{{...}}') are not supported.")
            ref = self.resolve(token.text, token.line)
            return self._token(ref) if is_terminal(token.text) else ref
        if token.kind == "directive":
            raise GrammarError(f"line {token.line}: '{token.text}' is not supported.")
        raise GrammarError(f"line {token.line}: unexpected '{token.text}'.")

    def _next_string(self, after: Token) -> Token:
        token = self._peek()
        if token is None or token.kind != "string":
            raise GrammarError(f"line {after.line}: expected a string after '..'.")
        self.at += 1
        return token

    def _range(self, low: Token, high: Token) -> Node:
        ends = [_unescape(t.text[1:-1] if t.text.endswith('"') else t.text[1:-2], t.line) for t in (low, high)]
        if any(len(end) != 1 for end in ends) or ends[0] > ends[1]:
            raise GrammarError(f"line {low.line}: a range needs two single characters in order, like \"a\"..\"z\".")
        return Chars(((ord(ends[0]), ord(ends[1])),))

    def _token(self, node: Node) -> Node:
        return seq([node, self.ignore]) if self.ignore is not None else node


def _string(token: Token) -> Node:
    insensitive = token.text.endswith("i")
    text = _unescape(token.text[1:-2] if insensitive else token.text[1:-1], token.line)
    if not insensitive:
        return Lit(text)
    return seq([Chars(normalize(case_fold([(ord(c), ord(c))]))) if c.lower() != c.upper() else Lit(c) for c in text])


def _unescape(body: str, line: int) -> str:
    """A Lark string's escapes: Python's, where unknown ones keep their backslash."""
    out, at = [], 0
    while at < len(body):
        char = body[at]
        following = body[at + 1] if at + 1 < len(body) else ""
        if char != "\\" or not following:
            out.append(char)
            at += 1
        elif following in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[following])
            at += 2
        elif following in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[following]
            digits = body[at + 2:at + 2 + size]
            if len(digits) != size or not all(c in "0123456789abcdefABCDEF" for c in digits) \
                    or int(digits, 16) > 0x10FFFF:
                raise GrammarError(f"line {line}: bad escape '\\{following}{digits}' in a string.")
            out.append(chr(int(digits, 16)))
            at += 2 + size
        else:
            out.append(char + following)
            at += 2
    return "".join(out)


def _unrecurse(name: str, body: Node, source: str) -> Node:
    """`a: a x | a y | b | c` as `a: (b | c) (x | y)*` (what llama.cpp grammars can run)."""
    recursive, base = [], []
    for branch in body.items if isinstance(body, Alt) else (body,):
        items = branch.items if isinstance(branch, Seq) else (branch,)
        if items and items[0] == Ref(name):
            recursive.append(seq(list(items[1:])))
        else:
            base.append(branch)
    if not recursive:
        return body
    if not base:
        raise GrammarError(f"the rule '{source}' always begins with itself, so it can never match.")
    return seq([alt(base), rep(alt(recursive), 0, None)])
