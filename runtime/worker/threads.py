"""Run blocking engine calls off the event loop, and cancel them when the client goes away."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

T = TypeVar("T")
_END = object()
DISCONNECT_POLL_S = 0.25


async def stream_in_thread(produce: Callable[[], Iterator[T]], cancel: threading.Event) -> AsyncIterator[T]:
    """Items of `produce()` as they come. The iterator runs to its end in its own thread (so the engine
    always releases what it holds); closing this generator early sets `cancel` to make that end soon.
    Items that arrive while the event loop is busy are taken together: one loop wake-up, not one each."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    lock = threading.Lock()
    items: list[Any] = []

    def put(item: Any) -> None:
        with lock:
            items.append(item)
            if len(items) > 1:  # the first of them already woke the consumer
                return
        loop.call_soon_threadsafe(ready.set)

    def run() -> None:
        try:
            for item in produce():
                put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)
        put(_END)

    threading.Thread(target=run, name="engine-stream", daemon=True).start()
    try:
        while True:
            await ready.wait()
            ready.clear()
            with lock:
                batch = items[:]
                items.clear()
            for item in batch:
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
    finally:
        cancel.set()


def read_on_loop(items: Iterable[T], cancel: threading.Event) -> AsyncIterator[T]:
    """An engine's stream on the event loop: directly when the engine can wake the loop itself (no
    hand-over through a thread per item), else through `stream_in_thread`."""
    if isinstance(items, AsyncIterable):
        return aiter(items)
    return stream_in_thread(lambda: iter(items), cancel)


async def primed(events: AsyncIterator[T]) -> AsyncIterator[T]:
    """Wait for the first event before answering, so errors the engine raises up front (bad token ids,
    an embedding-only model) become plain HTTP errors instead of an error event on a 200 stream."""
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        first = _END

    async def chained() -> AsyncIterator[T]:
        if first is _END:
            return
        yield first
        async for event in events:
            yield event

    return chained()


async def run_cancellable(request: Request, call: Callable[[], T], cancel: threading.Event) -> T:
    """`call()` in a thread; `cancel` is set if the client disconnects before it returns."""
    task = asyncio.ensure_future(run_in_threadpool(call))
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            cancel.set()
