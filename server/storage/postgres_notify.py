"""Change wake-ups over PostgreSQL's LISTEN/NOTIFY.

Every committed change transaction sends `NOTIFY kbrec_changes, '<its last seq>'`
(delivered at commit, in commit order). A store listens on one connection of its
own, opened on the first wait and reopened by the next one if it dies; a lost
connection wakes the waiters so they look at the store again.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from server.storage.postgres_connection import connect

if TYPE_CHECKING:
    from psycopg import AsyncConnection

CHANNEL = "kbrec_changes"


class ChangeListener:
    def __init__(self, url: str) -> None:
        self._url = url
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self._latest = 0  # the highest seq notified so far
        self._wakeup = asyncio.Event()

    @property
    def latest(self) -> int:
        return self._latest

    @property
    def wakeup(self) -> asyncio.Event:
        """Set at the next notification (or loss of the connection). Take it before
        looking at the store: a change committed after the look still sets it."""
        return self._wakeup

    async def start(self) -> None:
        """Listen, if not already: once it returns, every later commit notifies."""
        async with self._starting:
            if self._task is not None and not self._task.done():
                return
            connection = await connect(self._url)
            try:
                await connection.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                await connection.close()
                raise
            self._task = asyncio.create_task(self._listen(connection), name="kbrec-store-listen")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, connection: AsyncConnection) -> None:
        import psycopg

        try:
            async for notify in connection.notifies():
                if notify.payload.isdigit():
                    self._latest = max(self._latest, int(notify.payload))
                self._wake()
        except psycopg.Error:
            pass  # connection lost: the waiters look again, and the next wait reconnects
        finally:
            self._wake()
            await connection.close()

    def _wake(self) -> None:
        # A fresh event per wake-up: a waiter holds the one it took before looking.
        event, self._wakeup = self._wakeup, asyncio.Event()
        event.set()
