"""Reading the article store from a command: opened, used, closed; a missing SQLite file
or a store that fails is one line on stderr (`CommandError`), not a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kbrec.errors import CommandError

T = TypeVar("T")


def with_store(
    location: str,
    use: Callable[..., Awaitable[T]],
    missing: str = "pass --db (a file or postgresql:// URL)",
) -> T:
    """Open the store at `location` (which must exist: reading never creates one), run
    `use(store)`, close it; `missing` is the advice when a SQLite file is not there."""
    from server.storage.opening import describe, open_store, store_location
    from server.storage.store import StoreError

    where = store_location(location)
    if isinstance(where, Path) and not where.is_file():
        raise CommandError(f"no article store at {where}: {missing}")

    async def run() -> T:
        store = await open_store(where)
        try:
            return await use(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as exc:
        raise CommandError(f"{describe(where)}: {exc}") from exc
