"""A stream's backlog (runtime/server/backlog.py): writes never wait for the client, a client too far
behind is cut, and everything written reaches a client that keeps reading, in order."""

from __future__ import annotations

import asyncio

import pytest

from runtime.server.backlog import Backlog, ClientTooSlowError


class Client:
    """An ASGI `send` that takes a message only when the test lets it (a client reading at its own pace)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.ended = False
        self.allowance = asyncio.Semaphore(0)

    async def send(self, message: dict) -> None:
        await self.allowance.acquire()
        self.received.append(message["body"])
        self.ended = not message["more_body"]

    def read(self, messages: int) -> None:
        for _ in range(messages):
            self.allowance.release()


def test_writes_do_not_wait_for_the_client_and_arrive_in_order():
    async def scenario() -> Client:
        client = Client()
        backlog = Backlog(client.send, limit=1000)
        for i in range(10):
            backlog.write(b"%02d" % i)  # the client reads nothing yet: nothing blocks
        await asyncio.sleep(0)
        assert client.received == []
        client.read(11)
        await backlog.close(b"end")
        return client

    client = asyncio.run(scenario())
    assert client.received == [b"%02d" % i for i in range(10)] + [b"end"] and client.ended


def test_a_client_too_far_behind_is_cut_and_still_gets_the_end():
    async def scenario() -> tuple[Client, int]:
        client = Client()
        backlog = Backlog(client.send, limit=100)
        written = 0
        with pytest.raises(ClientTooSlowError, match="too slowly"):
            while True:
                backlog.write(b"x" * 10)
                written += 10
        client.read(1000)
        await backlog.close(b"error event")
        return client, written

    client, written = asyncio.run(scenario())
    assert written == 100
    assert client.received[-1] == b"error event" and client.ended


def test_what_the_client_took_no_longer_counts():
    async def scenario() -> int:
        client = Client()
        backlog = Backlog(client.send, limit=100)
        for _ in range(50):
            backlog.write(b"x" * 60)  # 60 waiting; the client takes each before the next
            client.read(1)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        client.read(1)
        await backlog.close()
        return len(client.received)

    assert asyncio.run(scenario()) == 51


def test_a_failed_send_is_raised_on_the_next_write():
    async def scenario() -> None:
        async def gone(message: dict) -> None:
            raise OSError("client went away")

        backlog = Backlog(gone)
        backlog.write(b"a")
        await asyncio.sleep(0)
        with pytest.raises(OSError, match="went away"):
            backlog.write(b"b")

    asyncio.run(scenario())
