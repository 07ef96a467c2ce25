"""A request's events on their way from the decode thread to the one caller reading them.

The caller either blocks in a thread (answers returned whole, tests) or waits on an asyncio loop
(streamed answers). On a loop the decode thread wakes the loop itself, so a token reaches the client
without a hand-over through another thread: on a small machine every hand-over takes time from
llama.cpp's own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from runtime.engines.base import TextDelta

if TYPE_CHECKING:
    from runtime.engines.llama_seq import Request

DONE = "done"  # the event that ends a request's stream
POLL_S = 0.05  # how often a blocked caller looks at its cancel event


class Mailbox:
    """Events for one reader; `put` may be called from any thread."""

    def __init__(self) -> None:
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake: Callable[[], None] | None = None

    def put(self, event: Any) -> None:
        self._events.put(event)
        wake = self._wake
        if wake is not None:
            wake()

    def wake_loop(self, ready: asyncio.Event) -> None:
        """From now on every event also sets `ready` on the calling thread's running loop."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: its reader is gone
                loop.call_soon_threadsafe(ready.set)

        self._wake = wake

    def wait(self, cancel: threading.Event) -> Any:
        """The next event, blocking; DONE as soon as `cancel` is set."""
        while not cancel.is_set():
            try:
                return self._events.get(timeout=POLL_S)
            except queue.Empty:
                pass
        return DONE

    def ready(self) -> list[Any]:
        """Every event queued now, without waiting."""
        events = []
        while not self._events.empty():
            events.append(self._events.get_nowait())
        return events


class DeltaStream:
    """A request's deltas, read by iterating (blocking) or by async iterating (on a loop). The request
    is submitted when reading starts; a reader that stops early marks it abandoned, which frees its
    sequence at the next step."""

    def __init__(self, request: Request, submit: Callable[[Request], None]) -> None:
        self._request = request
        self._submit = submit
        self._done = False

    def __iter__(self) -> Iterator[TextDelta]:
        mailbox, cancel = self._request.events, self._request.cancel
        self._submit(self._request)
        try:
            while not self._done:
                yield from self._until_done([mailbox.wait(cancel), *mailbox.ready()])
        finally:
            self._abandon_unless_done()

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        mailbox, ready = self._request.events, asyncio.Event()
        mailbox.wake_loop(ready)
        self._submit(self._request)
        try:
            while not self._done:
                ready.clear()
                events = mailbox.ready()
                if not events:
                    await ready.wait()
                for delta in self._until_done(events):
                    yield delta
        finally:
            self._abandon_unless_done()

    def _until_done(self, events: list[Any]) -> Iterator[TextDelta]:
        for event in merged(events):
            if event is DONE:
                self._done = True
                return
            if isinstance(event, Exception):
                raise event
            yield event

    def _abandon_unless_done(self) -> None:
        if not self._done:
            self._request.abandoned.set()


def merged(events: list[Any]) -> list[Any]:
    """Consecutive deltas of one choice become one, so a reader that fell behind sends fewer, larger
    chunks instead of falling further behind."""
    out: list[Any] = []
    for event in events:
        last = out[-1] if out else None
        if (isinstance(event, TextDelta) and isinstance(last, TextDelta) and last.index == event.index
                and last.finish_reason is None):
            out[-1] = TextDelta(last.index, last.text + event.text, last.logprobs + event.logprobs,
                                event.finish_reason)
        else:
            out.append(event)
    return out
