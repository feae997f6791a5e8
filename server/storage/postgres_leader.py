"""Leadership over a PostgreSQL store: a session-level advisory lock on a connection
of its own, held open for as long as the store leads.

PostgreSQL releases the lock when that session ends, so a leader whose process or
host dies (or whose connection is cut) loses it. The holder cannot tell from the
lock alone, hence `still_held`: it pings the session and drops leadership if the
ping fails or hangs. The URL must reach PostgreSQL directly or through a
session-mode pooler: a transaction-mode pooler does not keep session locks.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from server.storage.postgres_connection import connect
from server.storage.postgres_locks import LEADER_LOCK

if TYPE_CHECKING:
    from psycopg import AsyncConnection

# A ping slower than this counts as a lost session: the leader must stop acting as one.
PING_TIMEOUT_S = 5.0


class PostgresLeaderLock:
    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AsyncConnection | None = None

    @property
    def held(self) -> bool:
        return self._connection is not None and not self._connection.closed

    async def try_acquire(self) -> bool:
        if self.held:
            return True
        await self.release()  # a session found closed: nothing held any more
        connection = await connect(self._url)
        try:
            cursor = await connection.execute("SELECT pg_try_advisory_lock(%s, %s)", LEADER_LOCK)
            row = await cursor.fetchone()
        except BaseException:
            await connection.close()
            raise
        if row is None or not row[0]:
            await connection.close()
            return False
        self._connection = connection
        return True

    async def still_held(self, timeout_s: float = PING_TIMEOUT_S) -> bool:
        import psycopg

        connection = self._connection
        if connection is None:
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await connection.execute("SELECT 1")
        except (psycopg.Error, TimeoutError):
            await self.release()
            return False
        return True

    async def release(self) -> None:
        import psycopg

        connection, self._connection = self._connection, None
        if connection is None:
            return
        # Unlock first: the server ends a closed session a moment after close returns,
        # and a successor trying right after resign() should find the lock free.
        with contextlib.suppress(psycopg.Error, TimeoutError):
            async with asyncio.timeout(PING_TIMEOUT_S):
                await connection.execute("SELECT pg_advisory_unlock(%s, %s)", LEADER_LOCK)
        await connection.close()
