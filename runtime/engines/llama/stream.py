"""A request's deltas as its caller reads them: blocking (iterate) or on an event loop (async iterate).

The request is submitted when reading starts; a reader that stops early marks it abandoned, which
frees its sequence at the next step.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from runtime.engines.base import TextDelta
from runtime.http.bridge import DONE, Mailbox


class DeltaStream:
    def __init__(self, events: Mailbox, cancel: threading.Event, abandoned: threading.Event,
                 submit: Callable[[], None]) -> None:
        self._events = events
        self._cancel = cancel
        self._abandoned = abandoned
        self._submit = submit
        self._done = False

    def __iter__(self) -> Iterator[TextDelta]:
        mailbox = self._events
        self._submit()
        try:
            while not self._done:
                yield from self._until_done([mailbox.wait(self._cancel), *mailbox.ready()])
        finally:
            self._abandon_unless_done()

    async def __aiter__(self) -> AsyncIterator[TextDelta]:
        self._submit()
        try:
            async for events in self._events.arrivals():
                for delta in self._until_done(events):
                    yield delta
                if self._done:
                    return
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
            self._abandoned.set()


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
