"""Lark and regex grammars to GBNF (custom tools), checked with llama.cpp's own grammar engine: a string
is accepted when every token of it passes the grammar sampler and the grammar then allows end-of-text."""

from __future__ import annotations

import ctypes
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.engines.llama import customtools, gbnf, lark
from runtime.engines.llama.gbnf import GrammarError, Rules
from runtime.errors import InvalidRequestError

# OpenAI Codex CLI's apply_patch tool, verbatim (codex-rs/core/src/tools/handlers/tool_apply_patch.lark),
# its '#' comment line included.
APPLY_PATCH = (Path(__file__).resolve().parent.parent / "data" / "codex-apply-patch.lark").read_text()
# Codex's code-mode exec tool (codex-rs/core/src/tools/code_mode/exec.lark).
EXEC = r"""start: pragma_source | plain_source
pragma_source: PRAGMA_LINE NEWLINE SOURCE
plain_source: SOURCE

PRAGMA_LINE: /[ \t]*\/\/ @exec:[^\r\n]*/
NEWLINE: /\r?\n/
SOURCE: /[\s\S]+/
"""
PATCHES_ACCEPTED = [
    "*** Begin Patch\n*** Add File: hello.txt\n+Hello world\n*** End Patch\n",
    "*** Begin Patch\n*** Add File: empty-lines.txt\n+\n+x\n*** End Patch",
    "*** Begin Patch\n*** Update File: src/app.py\n*** Move to: src/main.py\n@@ def greet():\n-print(\"Hi\")\n"
    "+print(\"Hello, world!\")\n*** Delete File: obsolete.txt\n*** End Patch\n",
    "*** Begin Patch\n*** Update File: a.py\n@@\n x = 1\n-y = 2\n+y = 3\n*** End of File\n*** End Patch\n",
    "*** Begin Patch\n*** Update File: only/renamed.py\n*** Move to: b.py\n*** End Patch\n",
]
PATCHES_REFUSED = [
    "*** Begin Patch\n*** End Patch\n",  # no hunk
    "*** Begin Patch\n*** Add File: a.txt\n*** End Patch\n",  # an added file needs a line
    "*** Begin Patch\n*** Update File: a.py\n@@\nno prefix\n*** End Patch\n",
    "*** Begin Patch\n*** Add File: a.txt\n+x\n*** End Patch\n\n",  # one newline at most after the end
    "*** Begin Patch\n*** Delete File: \n*** End Patch\n",  # an empty file name
    "{\"input\": \"*** Begin Patch\"}",
    "*** Begin Patch\n*** Add File: a.txt\n+x\n",  # unfinished
]


def apply_patch_oracle(text: str) -> bool:
    """The apply_patch language as a Python regex (it is regular), written from the grammar by hand."""
    line = r"[^\n]*\n"
    hunk = (rf"\*\*\* Add File: [^\n]+\n(\+{line})+|\*\*\* Delete File: [^\n]+\n|\*\*\* Update File: [^\n]+\n"
            rf"(\*\*\* Move to: [^\n]+\n)?((@@( [^\n]+)?\n|[-+ ]{line})+(\*\*\* End of File\n)?)?")
    return re.fullmatch(rf"\*\*\* Begin Patch\n({hunk})+\*\*\* End Patch\n?", text) is not None


@pytest.fixture(scope="module")
def accepts(smollm_gguf: Path) -> Iterator[Callable[[str, str], bool]]:
    """`accepts(gbnf, text)` with llama.cpp's grammar sampler on SmolLM2's vocabulary."""
    import llama_cpp.llama_cpp as ll

    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(str(smollm_gguf).encode(), params)
    vocab = ll.llama_model_get_vocab(model)

    def allowed(sampler: object, token: int) -> bool:
        data = (ll.llama_token_data * 1)(ll.llama_token_data(token, 0.0, 0.0))
        candidates = ll.llama_token_data_array(data, 1, -1, False)
        ll.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return not math.isinf(data[0].logit)

    def check(grammar: str, text: str) -> bool:
        sampler = ll.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        assert sampler, f"llama.cpp refused the grammar:\n{grammar}"
        try:
            encoded = text.encode()
            tokens = (ll.llama_token * (len(encoded) + 8))()
            count = ll.llama_tokenize(vocab, encoded, len(encoded), tokens, len(tokens), False, False)
            for token in tokens[:count]:
                if not allowed(sampler, token):
                    return False
                ll.llama_sampler_accept(sampler, token)
            return allowed(sampler, ll.llama_vocab_eos(vocab))
        finally:
            ll.llama_sampler_free(sampler)

    yield check
    ll.llama_model_free(model)


def lark_gbnf(definition: str) -> str:
    return customtools.named_grammar(("lark", definition)) or ""


def regex_gbnf(pattern: str) -> str:
    return customtools.named_grammar(("regex", pattern)) or ""


def test_codex_apply_patch_grammar(accepts: Callable[[str, str], bool]) -> None:
    grammar = lark_gbnf(APPLY_PATCH)
    for text in PATCHES_ACCEPTED:
        assert apply_patch_oracle(text) and accepts(grammar, text), text
    for text in PATCHES_REFUSED:
        assert not apply_patch_oracle(text) and not accepts(grammar, text), text


def test_codex_exec_grammar(accepts: Callable[[str, str], bool]) -> None:
    grammar = lark_gbnf(EXEC)
    assert accepts(grammar, "ls -la\n")
    assert accepts(grammar, "  // @exec: cwd=/tmp timeout=5\r\necho hi")
    assert not accepts(grammar, "")


PATTERNS = {
    r"[0-9]{3}-[0-9]{4}": ["555-1234", "555-12345", "55-1234", "abc-defg", ""],
    r"^(cat|dog)s?$": ["cat", "dogs", "cats", "catdog", "bird", ""],
    r"(?i)hello world": ["hello world", "HeLLo WORLD", "hello  world", "helloworld"],
    r"\d+(\.\d{1,2})?": ["12", "3.5", "3.14", "3.141", ".5", "7."],
    r"[\w.-]+@[\w-]+\.(com|org)": ["a.b-c@x-y.com", "me@site.org", "me@site.net", "@x.com"],
    r"[^\s,]+(,[^\s,]+)*": ["a,b,c", "a, b", "a,,b", "x"],
    r"a.c": ["abc", "a\nc", "a.c", "ac"],
    r"(?s:a.c)": ["a\nc", "abc"],
    r"\x41\u00e9[\]\\-]\N{GREEK SMALL LETTER ALPHA}*": ["A\u00e9]", "A\u00e9\\\u03b1\u03b1", "A\u00e9-", "Ae]"],
    r"(ab|a)(bc|c)?": ["abc", "ab", "a", "ac", "abbc", "b"],
    r"x{2,}y{,2}z{0}": ["xx", "xxxyy", "xyy", "xxyyy"],
    r"[a-c&]|é": ["a", "&", "é", "d"],
    r"(?:\(|\[)[^)\]]*[)\]]": ["(x)", "[a b]", "(x]", "x"],
    r"\t\n?\r\f\v\x7f": ["\t\r\f\v\x7f", "\t\n\r\f\v\x7f", "\t\r\f\v"],
}


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_regex_grammars_match_python_fullmatch(accepts: Callable[[str, str], bool], pattern: str) -> None:
    grammar = regex_gbnf(pattern)
    for text in PATTERNS[pattern]:
        assert accepts(grammar, text) == (re.fullmatch(pattern, text) is not None), (pattern, text)


def test_common_lark(accepts: Callable[[str, str], bool]) -> None:
    calculator = """
    ?start: sum
    sum: sum ("+" | "-") product | product     // left recursion is rewritten as a repetition
    product: product "*" atom | atom
    ?atom: SIGNED_NUMBER | NAME -> var | "(" sum ")"
    NAME: ("_" | "a".."z" | "A".."Z")+
    %import common (SIGNED_NUMBER, WS)
    %ignore WS
    """
    grammar = lark_gbnf(calculator)
    for text in ["1+2", " ( 1.5e3 + x ) * -2 ", "a*b*c-d", "7"]:
        assert accepts(grammar, text), text
    for text in ["1 +", "1 2", "+", "()", "x y"]:
        assert not accepts(grammar, text), text
    keywords = """
    start: KW ~ 2 ("," ITEM ~ 1..3)? [ESCAPED_STRING]
    KW: "select"i
    ITEM: /[a-z]/
    %import common.ESCAPED_STRING
    """
    grammar = lark_gbnf(keywords)
    for text in ["selectSELECT", 'SelectSelect,abc"a \\" b"', "selectselect,a"]:
        assert accepts(grammar, text), text
    for text in ["select", "selectselect,abcd", 'selectselect"a" b"', "selectselect,"]:
        assert not accepts(grammar, text), text


def test_forced_call_grammars_accept_one_call_of_any_tool(accepts: Callable[[str, str], bool]) -> None:
    functions = [("get_time", {"type": "object", "properties": {"zone": {"enum": ["UTC"]}}, "required": ["zone"]})]
    grammar = customtools.required_grammar(functions, [("dial", ("regex", "[0-9]{3}")), ("note", None)])
    assert accepts(grammar, '{"name": "get_time", "arguments": {"zone": "UTC"}}')
    assert accepts(grammar, '<tool_call name="dial">\n123\n</tool_call>')
    assert accepts(grammar, '<tool_call name="note">\nbuy <milk>\n</tool_call\n\n</tool_call>')
    assert not accepts(grammar, '<tool_call name="dial">\n1234\n</tool_call>')
    assert not accepts(grammar, '<tool_call name="note">\nx</tool_call>\n</tool_call>')
    assert not accepts(grammar, '<tool_call name="get_time">\n{"zone": "UTC"}\n</tool_call>')


def test_without_text_is_any_string_not_containing_it(accepts: Callable[[str, str], bool]) -> None:
    for marker in ["</tool_call>", "aab", "abab"]:
        rules = Rules("w")
        grammar = f"root ::= {rules.add_without(marker)}\n{rules.gbnf()}"
        for text in ["", "a", "aa", "ab", "aaab", "abaab", "ababab", "x</tool_call", "</tool_call>", "a</tool_call>b"]:
            assert accepts(grammar, text) == (marker not in text), (marker, text)


@pytest.mark.parametrize("pattern, message", [
    (r"(a)\1", "backreferences"),
    (r"(?P<x>a)(?P=x)", "backreferences"),
    (r"a(?=b)", "lookahead"),
    (r"(?<!a)b", "lookbehind"),
    (r"\bword\b", "word boundaries"),
    (r"a*+", "possessive"),
    (r"(?>a)", "atomic groups"),
    (r"[[:alpha:]]", "POSIX classes"),
    (r"\p{L}", "Unicode properties"),
    (r"a$b", "'$' is only supported at the end"),
    (r"a^", "'^' is only supported at the start"),
    (r"a(?i)b", "only supported at the start"),
    (r"(?x)a b", "verbose"),
    (r"a{2000}", "limit of 1000"),
    (r"([a-z]{0,1000}){2}", "nested repetitions multiply to 2000"),
    ("(" * 70 + "a" + ")" * 70, "limit of 64 levels"),
    (r"(a", "unclosed '('"),
    (r"*a", "nothing to repeat"),
    (r"\q", "unknown escape"),
])
def test_unsupported_regexes_are_refused_by_name(pattern: str, message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        customtools.input_rules("regex", pattern, "t")


@pytest.mark.parametrize("definition, message", [
    ('start: a\na: b "x"\nb: a | "y"', "the rule 'a' is left-recursive"),
    ('start: "a" b', "'b' is used but never defined"),
    ("start: NUMBER", "add '%import common.NUMBER'"),
    ('item: "a"', "no 'start' rule"),
    ('start: "a"\nstart: "b"', "defined twice"),
    ("%import common.NOPE\nstart: NOPE", "not one of the common terminals"),
    ('%import .other (X)\nstart: "a"', "only '%import common...' is supported"),
    ('%declare X\nstart: "a"', "'%declare' is not supported"),
    ('_sep{x}: x ("," x)*\nstart: _sep{"a"}', "templates"),
    ("start: %json {}", "'%json' is not supported"),
    ('start: "a" ~ 5000', "limit of 1000"),
    ('start: "a" & "b"', "unexpected '&'"),
    ("start: /(a)\\1/", "in /(a)\\1/, backreferences"),
    ("start: " + '"a" ~ 1000 ' * 40, "limit of 100000"),
    ('start: "a".."bc"', "two single characters"),
    ("start: start", "always begins with itself"),
])
def test_unsupported_lark_is_refused_by_name(definition: str, message: str) -> None:
    with pytest.raises(GrammarError, match=re.escape(message)):
        rules = Rules("x")
        lark.translate(definition, rules)
        rules.check()


def test_grammars_at_the_limits_compile_in_llama_cpp(accepts: Callable[[str, str], bool]) -> None:
    assert accepts(regex_gbnf("([a-z]{0,40}){0,25}[0-9]{1000}x{0,1000}"), "ab" + "1" * 1000)
    nested = lark_gbnf('start: x ~ 10\nx: y ~ 0..10\ny: ("a" | "b") ~ 10')
    assert accepts(nested, "ab" * 50) and not accepts(nested, "ab" * 501)
    deep = regex_gbnf("(" * 64 + "a" + ")" * 64)
    assert accepts(deep, "a")


def test_size_limits_and_the_400_they_become() -> None:
    with pytest.raises(GrammarError, match="limit of 65536 characters"):
        lark.translate('start: "' + "a" * 70_000 + '"', Rules("x"))
    many = "start: r0\n" + "\n".join(f'r{i}: "x" r{i + 1}' for i in range(1100)) + '\nr1100: "y"'
    with pytest.raises(GrammarError, match="limit of 1000"):
        lark.translate(many, Rules("x"))
    with pytest.raises(InvalidRequestError) as caught:
        customtools.check(("regex", "(a)\\1"), "dial", param="tools[0].custom.format.grammar.definition")
    assert caught.value.param == "tools[0].custom.format.grammar.definition"
    assert caught.value.message.startswith("Invalid grammar for custom tool 'dial': backreferences")


def test_gbnf_text_is_plain_and_prefixed() -> None:
    rules = Rules("c0")
    root = lark.translate('start: "a" LF+ "\\"" /[^-\\]]/\n%import common.LF', rules)
    assert gbnf.emit(root) == "c0-start"
    assert 'c0-start ::= "a" c0-LF+ "\\"" [^\\x2D\\x5D]' in rules.gbnf()
    merged = gbnf.prefixed('root ::= "root" space x{2,3} [a-z]\nspace ::= " "?', "fn")
    assert merged == 'fn-root ::= "root" fn-space fn-x{2,3} [a-z]\nfn-space ::= " "?'
