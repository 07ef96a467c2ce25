"""Usage counters of one worker (it serves one model), read back by GET /status; made by `create_worker_app`."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
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

    async def counted(self, path: str, token_counts: Callable[[], tuple[int, int]],
                      events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """Pass a stream through, then count the request and its (prompt, completion) tokens."""
        try:
            async for event in events:
                yield event
        finally:
            self.record(path, *token_counts())
