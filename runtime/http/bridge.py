"""The one way work in a thread hands results to an event loop, and how blocking calls run off it.

A `Mailbox` takes events from any thread. Its one reader either blocks in a thread (answers returned
whole, tests) or waits on an asyncio loop (streamed answers); on a loop the producer wakes the loop
itself, so an event reaches the client without a hand-over through another thread: on a small machine
every hand-over takes time from the engines' own threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any, Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

T = TypeVar("T")
DONE = "done"  # the event that ends a stream
POLL_S = 0.05  # how often a blocked reader looks at its cancel event
DISCONNECT_POLL_S = 0.25


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

    async def arrivals(self) -> AsyncIterator[list[Any]]:
        """On the running loop: the events queued so far, then each batch as it arrives (without end;
        the reader stops at the event that ends its stream)."""
        loop, ready = asyncio.get_running_loop(), asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: its reader is gone
                loop.call_soon_threadsafe(ready.set)

        self._wake = wake
        while True:
            ready.clear()
            events = self.ready()
            if events:
                yield events
            else:
                await ready.wait()


async def from_thread(produce: Callable[[Callable[[Any], None]], None],
                      cancel: threading.Event) -> AsyncIterator[Any]:
    """Run `produce(put)` in its own thread and yield what it puts, as it comes. The thread runs to its
    end (so an engine always releases what it holds); closing this generator early sets `cancel` to make
    that end soon. An exception in the thread is raised here."""
    mailbox = Mailbox()

    def run() -> None:
        try:
            produce(mailbox.put)
        except BaseException as exc:  # handed to the reader, which re-raises it
            mailbox.put(_Failed(exc))
        mailbox.put(DONE)

    threading.Thread(target=run, name="engine-stream", daemon=True).start()
    try:
        async for events in mailbox.arrivals():
            for event in events:
                if event is DONE:
                    return
                if isinstance(event, _Failed):
                    raise event.error
                yield event
    finally:
        cancel.set()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def stream_in_thread(produce: Callable[[], Iterable[T]], cancel: threading.Event) -> AsyncIterator[T]:
    """The items of a blocking iterable, iterated in a thread (see `from_thread`)."""

    def put_all(put: Callable[[Any], None]) -> None:
        for item in produce():
            put(item)

    return from_thread(put_all, cancel)


def read_on_loop(items: Iterable[T], cancel: threading.Event) -> AsyncIterator[T]:
    """An engine's stream on the event loop: directly when the engine can wake the loop itself (no
    hand-over through a thread per item), else through `stream_in_thread`."""
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return stream_in_thread(lambda: items, cancel)


async def primed(events: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first event before answering, so errors the engine raises up front (bad token ids,
    an embedding-only model) become plain HTTP errors instead of an error event on a 200 stream."""
    try:
        first: Any = await events.__anext__()
    except StopAsyncIteration:
        first = DONE

    async def chained() -> AsyncIterator[T]:
        if first is DONE:
            return
        yield first
        async for event in events:
            yield event

    return chained()


class Disconnectable(Protocol):
    async def is_disconnected(self) -> bool: ...


async def run_cancellable(request: Disconnectable, call: Callable[[], T], cancel: threading.Event) -> T:
    """`call()` in a thread; `cancel` is set if the client disconnects before it returns."""
    task = asyncio.ensure_future(run_in_threadpool(call))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            cancel.set()
