"""Which target serves a request: the order in which a route's targets are tried.

Among the healthy primary targets, a request with a prefix (the first messages of a chat, the start of a
prompt) goes to the same target while it is healthy and not much busier than the least busy one
(rendezvous hashing, weighted, so a target that leaves moves only its own prefixes); the others go to
the least in-flight target per weight. Then the remaining healthy primaries by load, then the healthy
fallbacks in their order. A cooling-down remote is not tried.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.server.metrics import TargetStats
from runtime.server.upstreams import Upstream

STICKY_SLACK = 4  # requests more in flight than the least busy target before a prefix moves
PREFIX_BYTES = 8192  # of the first messages or the prompt that decide the sticky target


@dataclass(frozen=True)
class Candidate:
    target: str  # as the route names it: "smol" or "node-a:qwen"
    model: str  # the local model, or the model's name on the remote
    upstream: Upstream | None = None
    weight: int = 1

    def healthy(self, now: float) -> bool:
        return self.upstream is None or self.upstream.healthy(now)


def order(primary: list[Candidate], fallbacks: list[Candidate], stats: Callable[[str], TargetStats],
          prefix: Callable[[], str | None], now: float) -> list[Candidate]:
    """Every healthy candidate, the one to try first first."""
    healthy = [c for c in primary if c.healthy(now)]
    ranked = sorted(healthy, key=lambda c: (_load(c, stats), random.random()))
    if len(ranked) > 1:
        first = _sticky(ranked, prefix(), stats) or ranked[0]
        ranked = [first] + [c for c in ranked if c is not first]
    return ranked + [c for c in fallbacks if c.healthy(now) and c not in ranked]


def _load(candidate: Candidate, stats: Callable[[str], TargetStats]) -> float:
    return (stats(candidate.target).in_flight + 1) / candidate.weight


def _sticky(ranked: list[Candidate], key: str | None, stats: Callable[[str], TargetStats]) -> Candidate | None:
    if key is None:
        return None
    chosen = max(ranked, key=lambda c: _rendezvous(key, c))
    least = min(stats(c.target).in_flight for c in ranked)
    return chosen if stats(chosen.target).in_flight - least <= STICKY_SLACK else None


def _rendezvous(key: str, candidate: Candidate) -> float:
    digest = hashlib.blake2b(f"{candidate.target}\0{key}".encode(), digest_size=8).digest()
    uniform = (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 1)  # in (0, 1)
    return -candidate.weight / math.log(uniform)


def prefix_key(messages: Any = None, prompt: Any = None) -> str | None:
    """What makes two requests share a KV-cache prefix: the system prompt (else the conversation's first
    message), or the start of the prompt."""
    if messages:
        head = []
        for message in list(messages)[:8]:  # the leading system messages, else the first message
            data = message.model_dump(mode="json", exclude_none=True) if hasattr(message, "model_dump") else message
            system = isinstance(data, dict) and data.get("role") in ("system", "developer")
            if head and not system:
                break
            head.append(data)
            if not system:
                break
        return json.dumps(head, sort_keys=True, default=str)[:PREFIX_BYTES]
    if isinstance(prompt, str) and prompt:
        return prompt[:PREFIX_BYTES]
    if isinstance(prompt, list) and prompt:
        return json.dumps(prompt[:1], default=str)[:PREFIX_BYTES]
    return None
