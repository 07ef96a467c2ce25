"""Regular expressions as grammar trees (gbnf.py), for regex-format custom tools and Lark's /.../ terminals.

The regex must match the whole input. Supported, in Python `re` syntax: literals and escapes (\\n \\t \\r
\\f \\v \\a \\0 and octal, \\xHH \\uHHHH \\UHHHHHHHH \\N{name}, escaped punctuation); `.`; classes [...] and
[^...] with ranges; \\d \\w \\s and \\D \\W \\S (ASCII meanings: [0-9], [A-Za-z0-9_], [ \\t\\n\\r\\f\\v]);
groups (...), (?:...), (?P<name>...), (?<name>...), (?#comment); alternation; quantifiers * + ? {m}
{m,} {m,n} {,n} and their lazy forms (the same language); flags i, s, m, u, a as arguments, leading
(?i) style groups or scoped (?i:...) groups; and the anchors ^ $ \\A \\Z \\z where they only mark the
ends. Refused with a message that names the construct: backreferences, lookaround, word boundaries,
atomic groups, possessive quantifiers, conditionals, Unicode properties, POSIX classes, verbose mode.
"""

from __future__ import annotations

import re
import unicodedata

from runtime.engines.llama.gbnf import (
    ANY,
    EMPTY,
    MAX_DEFINITION_CHARS,
    Chars,
    GrammarError,
    Lit,
    Node,
    Rep,
    alt,
    case_fold,
    check_depth,
    complement,
    normalize,
    rep,
    seq,
)

DIGIT = ((48, 57),)
WORD = ((48, 57), (65, 90), (95, 95), (97, 122))
SPACE = ((9, 13), (32, 32))
CLASS_ESCAPES = {"d": DIGIT, "w": WORD, "s": SPACE}
CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
REFUSED_ESCAPES = {"b": "word boundaries (\\b)", "B": "word boundaries (\\B)", "G": "\\G",
                   "p": "Unicode properties (\\p{...})", "P": "Unicode properties (\\P{...})",
                   "k": "backreferences (\\k<name>)", "K": "\\K", "X": "\\X", "R": "\\R"}
QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")  # {m} {m,} {m,n} {,n}; anything else is literal text
KNOWN_FLAGS = set("imsua")


def translate(pattern: str, flags: str = "") -> Node:
    """The grammar tree of `pattern` matched in full; raises GrammarError for what it cannot express."""
    if len(pattern) > MAX_DEFINITION_CHARS:
        raise GrammarError(f"the regex is longer than this server's limit of {MAX_DEFINITION_CHARS} characters.")
    unknown = set(flags) - KNOWN_FLAGS
    if "x" in unknown:
        raise GrammarError("verbose regexes (the x flag) are not supported: remove the whitespace and comments.")
    if unknown:
        raise GrammarError(f"the regex flag '{sorted(unknown)[0]}' is not supported.")
    return _Parser(pattern, flags).parse()


class _Parser:
    def __init__(self, pattern: str, flags: str) -> None:
        self.text = pattern
        self.at = 0
        self.icase = "i" in flags
        self.dotall = "s" in flags

    def parse(self) -> Node:
        self._leading_flags()
        node, _ = self._alternation(0, at_start=True, at_end=True)
        if self.at < len(self.text):  # only an unmatched ')' stops the top level early
            raise self._error("it has an unbalanced ')'")
        return node

    def _error(self, what: str) -> GrammarError:
        return GrammarError(f"{what} (at position {self.at} of the regex).")

    def _peek(self, ahead: int = 0) -> str:
        at = self.at + ahead
        return self.text[at] if at < len(self.text) else ""

    def _leading_flags(self) -> None:
        while (found := re.match(r"\(\?([a-zA-Z]+)\)", self.text[self.at:])) is not None:
            self._set_flags(found.group(1))
            self.at += found.end()

    def _set_flags(self, letters: str) -> None:
        for letter in letters:
            if letter == "x":
                raise self._error("verbose mode (?x) is not supported")
            if letter not in KNOWN_FLAGS:
                raise self._error(f"the inline flag '{letter}' is not supported")
        self.icase = self.icase or "i" in letters
        self.dotall = self.dotall or "s" in letters

    # Structure. `at_start`/`at_end`: whether this part can touch the start or the end of the input,
    # which is where the anchors may stand.

    def _alternation(self, depth: int, at_start: bool, at_end: bool) -> tuple[Node, bool]:
        check_depth(depth)
        branches, ends = [], False
        while True:
            branch, ended = self._sequence(depth, at_start, at_end)
            branches.append(branch)
            ends = ends or ended
            if self._peek() != "|":
                return alt(branches), ends
            self.at += 1

    def _sequence(self, depth: int, at_start: bool, at_end: bool) -> tuple[Node, bool]:
        items: list[Node] = []
        ended = False
        while self.at < len(self.text) and self._peek() not in "|)":
            char = self._peek()
            anchor = char if char in "^$" else self.text[self.at:self.at + 2]
            if anchor in ("^", "\\A"):
                if not (at_start and not items):
                    raise self._error("'^' is only supported at the start of the regex")
                self.at += len(anchor)
                continue
            if anchor in ("$", "\\Z", "\\z"):
                if not at_end:
                    raise self._error("'$' is only supported at the end of the regex")
                self.at += len(anchor)
                ended = True
                continue
            if ended:
                raise self._error("'$' is only supported at the end of the regex")
            if char in "*+?" or (char == "{" and self._quantifier() is not None):
                raise self._error("a quantifier has nothing to repeat")
            atom, ended = self._atom(depth, at_start and not items, at_end)
            atom = self._quantified(atom)
            if ended and isinstance(atom, Rep):
                raise self._error("'$' is only supported at the end of the regex")
            items.append(atom)
        return seq(items) if items else EMPTY, ended

    def _quantifier(self) -> tuple[int, int | None, int] | None:
        """(min, max, end) of a {m,n} quantifier at the current position, if there is one."""
        found = QUANTIFIER.match(self.text, self.at) if self._peek() == "{" else None
        if found is None:
            return None
        first, comma, second = found.groups()
        if not first and not second:
            return None
        low = int(first) if first else 0
        high = (int(second) if second else None) if comma else low
        return low, high, found.end()

    def _quantified(self, atom: Node) -> Node:
        char = self._peek()
        if char in ("*", "+", "?"):
            self.at += 1
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        elif (braces := self._quantifier()) is not None:
            low, high, self.at = braces
        else:
            return atom
        if self._peek() == "+":
            raise self._error("possessive quantifiers are not supported")
        if self._peek() == "?":
            self.at += 1  # lazy: the same set of full matches
        if self._peek() in ("*", "+", "?") or self._quantifier() is not None:
            raise self._error("a quantifier follows another quantifier")
        return rep(atom, low, high)

    def _atom(self, depth: int, at_start: bool, at_end: bool) -> tuple[Node, bool]:
        char = self._peek()
        if char == "(":
            return self._group(depth, at_start, at_end)
        if char == "[":
            return self._class(), False
        if char == ".":
            self.at += 1
            return (ANY if self.dotall else Chars(((10, 10),), negated=True)), False
        if char == "\\":
            return self._escape(), False
        self.at += 1
        return self._literal(char), False

    def _group(self, depth: int, at_start: bool, at_end: bool) -> tuple[Node, bool]:
        self.at += 1
        saved = (self.icase, self.dotall)
        if self._peek() == "?":
            self._group_kind()
        node, ended = self._alternation(depth + 1, at_start, at_end)
        if self._peek() != ")":
            raise self._error("it has an unclosed '('")
        self.at += 1
        self.icase, self.dotall = saved
        return node, ended

    def _group_kind(self) -> None:
        """Reads what follows '(?' up to where the group's pattern starts."""
        rest = self.text[self.at:]
        refused = (("?=", "lookahead (?=...) is"), ("?!", "lookahead (?!...) is"), ("?<=", "lookbehind (?<=...) is"),
                   ("?<!", "lookbehind (?<!...) is"), ("?P=", "backreferences (?P=name) are"),
                   ("?>", "atomic groups are"), ("?(", "conditionals (?(...)...) are"),
                   ("?|", "branch reset groups are"))
        for prefix, what in refused:
            if rest.startswith(prefix):
                raise self._error(f"{what} not supported")
        if rest.startswith("?:"):
            self.at += 2
        elif (found := re.match(r"\?P?<[A-Za-z_][A-Za-z0-9_]*>", rest)) is not None:
            self.at += found.end()
        elif rest.startswith("?#"):
            end = self.text.find(")", self.at)
            if end < 0:
                raise self._error("it has an unclosed comment group")
            self.at = end  # the group closes at once and matches nothing
        elif (found := re.match(r"\?([a-zA-Z]*)(?:-([a-zA-Z]*))?:", rest)) is not None:
            if found.group(2):
                raise self._error("turning flags off with (?-...) is not supported")
            self._set_flags(found.group(1))
            self.at += found.end()
        elif re.match(r"\?[a-zA-Z]+\)", rest):
            raise self._error("inline flags like (?i) are only supported at the start of the regex; use (?i:...) "
                              "for a part of it")
        else:
            raise self._error("it has an unknown group '(?'")

    def _literal(self, char: str) -> Node:
        if self.icase and char.lower() != char.upper():
            return Chars(normalize(case_fold([(ord(char), ord(char))])))
        return Lit(char)

    def _escape(self) -> Node:
        self.at += 1
        char = self._peek()
        if not char:
            raise self._error("it ends with a lone backslash")
        if char.lower() in CLASS_ESCAPES:
            self.at += 1
            ranges = CLASS_ESCAPES[char.lower()]
            return Chars(ranges, negated=char.isupper())
        if char.isdigit() and char != "0":
            raise self._error("backreferences (\\1 ...) are not supported")
        if char in REFUSED_ESCAPES:
            raise self._error(f"{REFUSED_ESCAPES[char]} are not supported")
        return self._literal(self._escaped_char())

    def _escaped_char(self) -> str:
        """The character of the escape at `self.at` (just after the backslash)."""
        char = self._peek()
        self.at += 1
        if char in CHAR_ESCAPES:
            return CHAR_ESCAPES[char]
        if char == "0":
            found = re.match(r"[0-7]{0,2}", self.text[self.at:])
            digits = found.group() if found else ""
            self.at += len(digits)
            return chr(int("0" + digits, 8))
        if char in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[char]
            digits = self.text[self.at:self.at + size]
            valid = len(digits) == size and all(c in "0123456789abcdefABCDEF" for c in digits)
            if not valid or int(digits, 16) > 0x10FFFF:
                raise self._error(f"it has a bad escape \\{char}{digits}")
            self.at += size
            return chr(int(digits, 16))
        if char == "N":
            found = re.match(r"\{([^}]+)\}", self.text[self.at:])
            try:
                named = unicodedata.lookup(found.group(1)) if found else ""
            except KeyError:
                named = ""
            if not named:
                raise self._error("it has a bad \\N{...} escape")
            self.at += found.end() if found else 0
            return named
        if char.isalnum():
            raise self._error(f"it has an unknown escape \\{char}")
        return char

    def _class(self) -> Node:
        self.at += 1
        negated = self._peek() == "^"
        if negated:
            self.at += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while True:
            char = self._peek()
            if not char:
                raise self._error("it has an unclosed '['")
            if char == "]" and not first:
                self.at += 1
                break
            first = False
            if char == "[" and self._peek(1) in ":=.":
                raise self._error("POSIX classes like [:alpha:] are not supported; write a range such as [a-zA-Z]")
            if char == "&" and self._peek(1) == "&":
                raise self._error("class intersections (&&) are not supported")
            low = self._class_item(ranges)
            if low is None:
                continue
            if self._peek() == "-" and self._peek(1) not in ("]", ""):
                self.at += 1
                high = self._class_item(ranges)
                if high is None:
                    raise self._error("a class range ends in a class like \\d")
                if high < low:
                    raise self._error("a class range has its ends the wrong way round")
                ranges.append((low, high))
            else:
                ranges.append((low, low))
        if self.icase:
            ranges = case_fold(ranges)
        return Chars(normalize(ranges), negated)

    def _class_item(self, ranges: list[tuple[int, int]]) -> int | None:
        """One class member: its code point, or None when it was a set like \\d (added to `ranges`)."""
        char = self._peek()
        self.at += 1
        if char != "\\":
            return ord(char)
        letter = self._peek()
        if letter.lower() in CLASS_ESCAPES:
            self.at += 1
            members = CLASS_ESCAPES[letter.lower()]
            ranges.extend(complement(members) if letter.isupper() else members)
            return None
        if letter == "b":
            self.at += 1
            return 8
        if letter.isdigit() and letter != "0":
            raise self._error("backreferences (\\1 ...) are not supported")
        if letter in REFUSED_ESCAPES:
            raise self._error(f"{REFUSED_ESCAPES[letter]} are not supported")
        return ord(self._escaped_char())
