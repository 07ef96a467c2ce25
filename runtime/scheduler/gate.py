"""A first-come, first-served concurrency limit whose capacity can change (on reload)."""

from __future__ import annotations

import asyncio
from collections import deque


class Gate:
    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.active < self.capacity and not self._waiters:
            self.active += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # our turn came just as we were cancelled: pass it on
            elif turn in self._waiters:
                self._waiters.remove(turn)
            raise

    def release(self) -> None:
        self.active -= 1
        self._admit()

    def resize(self, capacity: int) -> None:
        self.capacity = capacity
        self._admit()

    def _admit(self) -> None:
        while self._waiters and self.active < self.capacity:
            turn = self._waiters.popleft()
            if not turn.done():
                self.active += 1
                turn.set_result(None)
