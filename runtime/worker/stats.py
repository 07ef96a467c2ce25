"""Usage counters of this worker process (it serves one model), read back by GET /status."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.active = 0

    def record(self, request_path: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        with self._lock:
            self.requests[request_path] += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens

    def track(self, delta: int) -> None:
        with self._lock:
            self.active += delta

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "prompt_tokens": self.prompt_tokens,
                    "completion_tokens": self.completion_tokens, "active": self.active}


# One worker process hosts one engine, so its counters are process-wide.
_stats = Stats()


def record(request_path: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
    """Count one finished request and the tokens it used."""
    _stats.record(request_path, prompt_tokens, completion_tokens)


def track(delta: int) -> None:
    """+1 when a request starts, -1 when it ends."""
    _stats.track(delta)


def snapshot() -> dict[str, Any]:
    return _stats.snapshot()
