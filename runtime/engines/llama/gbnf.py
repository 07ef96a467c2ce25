"""A small grammar tree and its GBNF (llama.cpp's grammar format), for grammars clients write in
other syntaxes (Lark and regular expressions, see lark.py and regexp.py).

Nodes: `Lit` (a string), `Chars` (a character class), `Seq`, `Alt`, `Rep` (a bounded or unbounded
repetition) and `Ref` (a named rule). `Rules` holds the named rules of one grammar under a prefix, so
several grammars can share one GBNF text. What a grammar may cost is bounded here: the repetition
counts, the nesting depth, the number of rules and the size llama.cpp expands it to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.errors import InvalidRequestError

MAX_DEFINITION_CHARS = 65_536
MAX_RULES = 1_000
MAX_REPEAT = 1_000  # a bounded repetition's count, multiplied through nested ones (llama.cpp allows 2000)
MAX_DEPTH = 64
MAX_ELEMENTS = 100_000  # grammar elements once llama.cpp has expanded the repetitions
MAX_CODEPOINT = 0x10FFFF


class GrammarError(InvalidRequestError):
    """A grammar this server cannot turn into GBNF: the message says what and where."""


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Chars:
    ranges: tuple[tuple[int, int], ...]  # inclusive code point ranges
    negated: bool = False


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Rep:
    item: Node
    min: int
    max: int | None  # None: unbounded


@dataclass(frozen=True)
class Ref:
    name: str  # a rule of the same `Rules`


Node = Lit | Chars | Seq | Alt | Rep | Ref
EMPTY = Seq(())
ANY = Chars((), negated=True)


def seq(items: list[Node]) -> Node:
    """A sequence, flattened, with neighbouring strings joined."""
    flat: list[Node] = []
    for item in items:
        for part in item.items if isinstance(item, Seq) else [item]:
            if isinstance(part, Lit) and flat and isinstance(flat[-1], Lit):
                flat[-1] = Lit(flat[-1].text + part.text)
            else:
                flat.append(part)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def alt(items: list[Node]) -> Node:
    return items[0] if len(items) == 1 else Alt(tuple(items))


def rep(item: Node, low: int, high: int | None) -> Rep:
    for count in (low, high):
        if count is not None and count > MAX_REPEAT:
            raise GrammarError(f"the repetition count {count} is over this server's limit of {MAX_REPEAT}.")
    if high is not None and high < low:
        raise GrammarError(f"the repetition {{{low},{high}}} has its bounds the wrong way round.")
    return Rep(item, low, high)


def check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise GrammarError(f"it nests deeper than this server's limit of {MAX_DEPTH} levels.")


# Character classes


def normalize(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged ranges."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return tuple(out)


def complement(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    out, start = [], 0
    for low, high in normalize(list(ranges)):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return tuple(out)


def case_fold(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`ranges` plus the other case of every letter in them (ASCII letters for wide ranges)."""
    out = list(ranges)
    for low, high in ranges:
        if high - low <= 512:
            for code in range(low, high + 1):
                for other in {chr(code).lower(), chr(code).upper()}:
                    if len(other) == 1 and ord(other) != code:
                        out.append((ord(other), ord(other)))
        else:
            for a, z, shift in ((65, 90, 32), (97, 122, -32)):
                lo, hi = max(low, a), min(high, z)
                if lo <= hi:
                    out.append((lo + shift, hi + shift))
    return out


# Rules and GBNF text


class Rules:
    """The named rules of one grammar, their GBNF names under `prefix`, and the cost checks."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.bodies: dict[str, Node] = {}
        self._helpers = 0

    def name(self, source: str) -> str:
        """The GBNF name of a rule the client named (GBNF names take letters, digits and '-')."""
        return f"{self.prefix}-{source.replace('_', '-')}"

    def helper(self) -> str:
        """A fresh rule name no client name maps to (those never start with a digit)."""
        self._helpers += 1
        return f"{self.prefix}-{self._helpers}"

    def define(self, name: str, body: Node) -> None:
        if len(self.bodies) >= MAX_RULES:
            raise GrammarError(f"it has more rules than this server's limit of {MAX_RULES}.")
        self.bodies[name] = body

    def add_without(self, text: str) -> str:
        """A rule for any string in which `text` does not occur; returns its name. One rule per state of
        a KMP automaton: state k means the last k characters read are text[:k]."""
        border = [0] * (len(text) + 1)  # border[k]: the longest proper border of text[:k]
        for i in range(1, len(text)):
            k = border[i]
            while k and text[i] != text[k]:
                k = border[k]
            border[i + 1] = k + 1 if text[i] == text[k] else 0

        def step(state: int, char: str) -> int:
            while text[state] != char and state:
                state = border[state]
            return state + 1 if text[state] == char else 0

        names = [self.helper() for _ in text]
        others = Chars(normalize([(ord(c), ord(c)) for c in text]), negated=True)
        for state, name in enumerate(names):
            branches: list[Node] = [EMPTY, Seq((others, Ref(names[0])))]
            for char in sorted(set(text)):
                target = step(state, char)
                if target < len(text):
                    branches.append(Seq((Lit(char), Ref(names[target]))))
            self.define(name, Alt(tuple(branches)))
        return names[0]

    def keep_reachable(self, root: Node) -> None:
        """Drops the rules `root` never uses (common terminals imported but unused, for one)."""
        seen: set[str] = set()
        todo = list(_refs(root))
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo.extend(_refs(self.bodies[name]))
        self.bodies = {name: body for name, body in self.bodies.items() if name in seen}

    def check(self) -> None:
        """Refuse what llama.cpp cannot run: left recursion and too large an expansion."""
        nullable = self._nullable()
        leftmost = {name: _leftmost(body, nullable) for name, body in self.bodies.items()}
        for name in self.bodies:
            seen: set[str] = set()
            todo = [name]
            while todo:
                for target in leftmost[todo.pop()]:
                    if target == name:
                        raise GrammarError(f"the rule '{self._source(name)}' is left-recursive (it can begin with "
                                           "itself), which llama.cpp grammars cannot run. Write the repetition "
                                           "with *, + or ? instead.")
                    if target not in seen:
                        seen.add(target)
                        todo.append(target)
        weights: dict[str, int] = {}
        for name in self.bodies:
            self._weight(Ref(name), weights)
        size = sum(_elements(body) for body in self.bodies.values())
        if size > MAX_ELEMENTS:
            raise GrammarError(f"it expands to about {size} grammar elements (repetitions counted out), over "
                               f"this server's limit of {MAX_ELEMENTS}. Use smaller repetition counts.")

    def gbnf(self) -> str:
        return "\n".join(f"{name} ::= {emit(body)}" for name, body in self.bodies.items())

    def _weight(self, node: Node, weights: dict[str, int]) -> int:
        """The product of the bounded repetition counts nested in `node` (through its rules too): llama.cpp
        refuses large ones, and they multiply the states a grammar can be in."""
        if isinstance(node, Ref):
            if node.name not in weights:
                weights[node.name] = 1  # a rule that recurses adds no count of its own
                weights[node.name] = self._weight(self.bodies[node.name], weights)
            return weights[node.name]
        if isinstance(node, Seq | Alt):
            return max((self._weight(item, weights) for item in node.items), default=1)
        if isinstance(node, Rep):
            count = node.max if node.max else max(node.min, 1)
            weight = count * self._weight(node.item, weights)
            if weight > MAX_REPEAT and count > 1:
                raise GrammarError(f"its nested repetitions multiply to {weight}, over this server's limit of "
                                   f"{MAX_REPEAT}. Use smaller counts, or * and + where any number will do.")
            return weight
        return 1

    def _source(self, name: str) -> str:
        return name[len(self.prefix) + 1:].replace("-", "_")

    def _nullable(self) -> set[str]:
        nullable: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, body in self.bodies.items():
                if name not in nullable and _can_be_empty(body, nullable):
                    nullable.add(name)
                    changed = True
        return nullable


def _refs(node: Node) -> list[str]:
    if isinstance(node, Ref):
        return [node.name]
    if isinstance(node, Seq | Alt):
        return [name for item in node.items for name in _refs(item)]
    return _refs(node.item) if isinstance(node, Rep) else []


def _can_be_empty(node: Node, nullable: set[str]) -> bool:
    if isinstance(node, Lit):
        return not node.text
    if isinstance(node, Chars):
        return False
    if isinstance(node, Seq):
        return all(_can_be_empty(item, nullable) for item in node.items)
    if isinstance(node, Alt):
        return any(_can_be_empty(item, nullable) for item in node.items)
    if isinstance(node, Rep):
        return node.min == 0 or _can_be_empty(node.item, nullable)
    return node.name in nullable


def _leftmost(node: Node, nullable: set[str]) -> set[str]:
    """The rules `node` can begin with."""
    if isinstance(node, Ref):
        return {node.name}
    if isinstance(node, Seq):
        found: set[str] = set()
        for item in node.items:
            found |= _leftmost(item, nullable)
            if not _can_be_empty(item, nullable):
                break
        return found
    if isinstance(node, Alt):
        return set().union(*(_leftmost(item, nullable) for item in node.items))
    if isinstance(node, Rep):
        return _leftmost(node.item, nullable)
    return set()


def _elements(node: Node) -> int:
    if isinstance(node, Lit):
        return len(node.text) or 1
    if isinstance(node, Chars):
        return len(node.ranges) + 1
    if isinstance(node, Seq | Alt):
        return sum(_elements(item) for item in node.items) + 1
    if isinstance(node, Rep):
        copies = max(node.min, node.max if node.max is not None else node.min + 1, 1)
        return _elements(node.item) + 3 * copies  # llama.cpp copies a reference per repetition, plus a rule
    return 1


def emit(node: Node) -> str:
    if isinstance(node, Lit):
        return '"' + "".join(_literal_char(c) for c in node.text) + '"'
    if isinstance(node, Chars):
        if node.negated and not node.ranges:
            return "."
        body = "".join(_class_char(low) if low == high else f"{_class_char(low)}-{_class_char(high)}"
                       for low, high in node.ranges)
        return f"[{'^' if node.negated else ''}{body}]"
    if isinstance(node, Seq):
        return " ".join(_atom(item) if isinstance(item, Alt) else emit(item) for item in node.items) or '""'
    if isinstance(node, Alt):
        return " | ".join(emit(item) for item in node.items)
    if isinstance(node, Rep):
        low, high = node.min, node.max
        suffix = {(0, 1): "?", (0, None): "*", (1, None): "+"}.get((low, high))
        if suffix is None:
            suffix = f"{{{low}}}" if low == high else f"{{{low},{'' if high is None else high}}}"
        return _atom(node.item) + suffix
    return node.name


def _atom(node: Node) -> str:
    simple = isinstance(node, Chars | Ref) or (isinstance(node, Lit) and len(node.text) == 1)
    return emit(node) if simple else f"({emit(node)})"


_LITERAL_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _literal_char(char: str) -> str:
    if char in _LITERAL_ESCAPES:
        return _LITERAL_ESCAPES[char]
    return char if " " <= char <= "~" else _hex(ord(char))


def _class_char(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else _hex(code)


def _hex(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


# Other GBNF texts (the JSON-schema grammars) merged with these rules


_GBNF_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[^}]*\}|<[^>]*>|#[^\n]*|[a-zA-Z0-9-]+|\s+|.',
                         re.DOTALL)


def prefixed(gbnf: str, prefix: str) -> str:
    """`gbnf` with every rule name under `prefix` (its root becomes `{prefix}-root`)."""
    out = []
    for token in _GBNF_TOKEN.findall(gbnf):
        out.append(f"{prefix}-{token}" if re.fullmatch(r"[a-zA-Z0-9-]+", token) else token)
    return "".join(out)
