"""The disconnect watch: started only for handlers still waiting after a grace period."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from server.http.disconnect import ClientDisconnected, DisconnectWatch

SCOPE = {"type": "http", "method": "POST", "path": "/v1/recommendations", "headers": []}


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(5):
            await coroutine

    asyncio.run(bounded())


class Connection:
    """An ASGI `receive` whose next message is the disconnect, once `close` is called."""

    def __init__(self) -> None:
        self.reads = 0
        self.closed = asyncio.Event()

    async def receive(self) -> Message:
        self.reads += 1
        await self.closed.wait()
        return {"type": "http.disconnect"}


def test_a_handler_done_within_the_grace_never_reads_the_connection() -> None:
    async def scenario() -> None:
        connection = Connection()
        async with DisconnectWatch(Request(SCOPE, connection.receive), watch_after_s=0.05):
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # past the grace: the cancelled timer must not fire
        assert connection.reads == 0

    run(scenario())


def test_a_client_leaving_after_the_grace_cancels_the_block() -> None:
    async def scenario() -> None:
        connection = Connection()
        waited = asyncio.Event()
        with pytest.raises(ClientDisconnected):
            async with DisconnectWatch(Request(SCOPE, connection.receive), watch_after_s=0.01):
                while connection.reads == 0:  # the watch started after its grace
                    await asyncio.sleep(0.005)
                connection.closed.set()
                await waited.wait()  # never set: only the disconnect ends this

    run(scenario())


def test_a_client_that_left_during_the_grace_is_seen_once_it_ends() -> None:
    async def scenario() -> None:
        connection = Connection()
        connection.closed.set()  # gone before the watch starts
        with pytest.raises(ClientDisconnected):
            async with DisconnectWatch(Request(SCOPE, connection.receive), watch_after_s=0.01):
                await asyncio.Event().wait()

    run(scenario())


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def handler(connection: Connection) -> None:
        async with DisconnectWatch(Request(SCOPE, connection.receive), watch_after_s=0.01):
            await asyncio.Event().wait()

    async def scenario() -> None:
        connection = Connection()
        task = asyncio.create_task(handler(connection))
        while connection.reads == 0:
            await asyncio.sleep(0.005)
        task.cancel()  # a server shutdown, say: the client is still there
        with pytest.raises(asyncio.CancelledError):
            await task

    run(scenario())
