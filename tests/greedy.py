"""Comparing greedy runs of a real model without depending on one machine's floating-point near-ties.

Two greedy runs of one prompt can part ways where the two likeliest tokens are nearly tied: the order
of KV cells (a warm cache, other sequences in the batch) or another CPU's kernels may round the tie
the other way. What the engine guarantees is that the runs agree until such a tie, and that the other
run then took the runner-up at nearly its probability.
"""

from __future__ import annotations

from typing import Any

from runtime.engines.base import TokenLogprob

NEAR_TIE = 0.15  # log-probability gap between the two likeliest tokens


def agree_until_a_near_tie(mine: list[TokenLogprob], reference: list[TokenLogprob]) -> int:
    """The number of leading tokens the runs share; asserts that where they part, `reference` had a near-tie
    and `mine` took its runner-up. Both runs need logprobs with at least two alternatives."""
    for at, (a, b) in enumerate(zip(mine, reference, strict=False)):
        if a.token != b.token:
            top = b.top
            assert top[0][1] - top[1][1] < NEAR_TIE and a.token == top[1][0], (at, mine, reference)
            assert abs(a.logprob - top[1][1]) < 0.25, (at, mine, reference)
            return at
    return min(len(mine), len(reference))


def first_near_tie(run: list[TokenLogprob]) -> int:
    """Where `run` first had its two likeliest tokens nearly tied (its length if nowhere): every other greedy
    run of the same request takes the same tokens before that."""
    return next((at for at, lp in enumerate(run) if lp.top[0][1] - lp.top[1][1] < NEAR_TIE), len(run))


def text_of(run: list[TokenLogprob]) -> str:
    return "".join(lp.token for lp in run)


def greedy_prefix(reference: list[TokenLogprob]) -> str:
    """The text every greedy run of the reference's request starts with: its tokens before its first near-tie."""
    return text_of(reference[:first_near_tie(reference)])


def same_greedy_run(mine: list[TokenLogprob], reference: list[TokenLogprob]) -> bool:
    """Whether two greedy runs of one request took the same tokens. Asserts that they agree until a near-tie
    (see `agree_until_a_near_tie`), and, where one ended while the other went on, that the end of text (a
    token with no text) was there the other's near-tied runner-up."""
    shared = agree_until_a_near_tie(mine, reference)
    if shared < min(len(mine), len(reference)):
        return False
    if len(mine) != len(reference):
        on = (mine if len(mine) > len(reference) else reference)[shared]
        assert on.top[0][1] - on.top[1][1] < NEAR_TIE and on.top[1][0] == "", (shared, mine, reference)
        return False
    return True


def _get(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def chat_scored(logprobs: Any) -> list[TokenLogprob]:
    """A chat choice's `logprobs` ({content: [{token, logprob, bytes, top_logprobs}]}: the openai SDK's object
    or its JSON; None, as on a stream's finish chunk, for none) as TokenLogprobs."""
    if logprobs is None:
        return []
    return [TokenLogprob(_get(e, "token"), _get(e, "logprob"), list(_get(e, "bytes") or []),
                         [(_get(t, "token"), _get(t, "logprob"), list(_get(t, "bytes") or []))
                          for t in _get(e, "top_logprobs")])
            for e in _get(logprobs, "content") or []]


def completion_scored(logprobs: Any) -> list[TokenLogprob]:
    """A completion choice's legacy `logprobs` ({tokens, token_logprobs, top_logprobs: [{token: logprob}]}:
    the openai SDK's object or its JSON; None for none) as TokenLogprobs, alternatives likeliest first."""
    if logprobs is None:
        return []
    runs = zip(_get(logprobs, "tokens"), _get(logprobs, "token_logprobs"), _get(logprobs, "top_logprobs"),
               strict=True)
    return [TokenLogprob(token, logprob, list(token.encode()),
                         [(t, lp, list(t.encode())) for t, lp in sorted(top.items(), key=lambda kv: -kv[1])])
            for token, logprob, top in runs]
