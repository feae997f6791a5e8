"""Leadership through the store, on both backends: one leader at a time, freed when
it resigns, closes or its process is killed (kill -9)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from store_helpers import run

from server.storage.opening import open_store
from server.storage.store import ArticleStore

REPO_ROOT = Path(__file__).resolve().parents[3]
# A process that takes leadership, says so, and holds it until killed.
LEADER_PROCESS = """
import asyncio, sys
from server.storage.opening import open_store

async def main():
    store = await open_store(sys.argv[1])
    print("leading" if await store.try_lead() else "refused", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def lead_within(store: ArticleStore, deadline_s: float) -> float:
    """Try to lead until it works; returns how long it took (fails past the deadline)."""
    started = time.monotonic()
    while not await store.try_lead():
        assert time.monotonic() - started < deadline_s, "leadership was not freed in time"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_two_stores_cannot_both_lead(location: str | Path) -> None:
    async def test() -> None:
        first, second = await open_store(location), await open_store(location)
        assert not first.leads()
        assert await first.try_lead()
        assert await first.try_lead()  # already leading: still yes
        assert first.leads() and await first.still_leading()
        assert not await second.try_lead()
        assert not second.leads() and not await second.still_leading()

        await first.resign()
        assert not first.leads()
        assert await second.try_lead()
        assert not await first.try_lead()

        await second.close()  # closing resigns
        assert await first.try_lead()
        await first.resign()
        await first.resign()  # no-op
        await first.close()

    run(test)


def test_a_killed_leaders_lock_is_taken_over_within_a_second(location: str | Path) -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER_PROCESS, str(location)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert leader.stdout is not None
        assert leader.stdout.readline().strip() == "leading"

        async def test() -> None:
            store = await open_store(location)
            assert not await store.try_lead()
            os.kill(leader.pid, signal.SIGKILL)
            await asyncio.to_thread(leader.wait, 10)
            assert await lead_within(store, deadline_s=1.0) < 1.0
            assert await store.still_leading()
            await store.close()

        run(test)
    finally:
        leader.kill()
        leader.wait()
