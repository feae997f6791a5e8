"""The valid API keys of the store, in memory: a request's key is checked without a
store round trip.

The whole set of valid keys (digest → record) is read at once and reused for at
most `max_age_s` (`--key-cache-s`): a key revoked in any process is refused by
every process at most that long after the revocation commits. Past half that age
the set is reloaded in the background, so a busy process rarely waits for it.

A digest the set lacks may be a key created since, in another process: the request
waits for a load that starts after it arrived. Loads for such misses start at most
once per `min_interval_s`, so a stream of made-up keys costs the store at most
1/min_interval_s reads a second, however many requests carry them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from server.storage.accounts import ApiKey
from server.storage.store import ArticleStore

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.5


class KeyRing:
    def __init__(
        self,
        store: Callable[[], ArticleStore],
        max_age_s: float,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.max_age_s = max_age_s
        self.min_interval_s = min(min_interval_s, max_age_s)
        self._clock = clock
        self._keys: dict[str, ApiKey] = {}
        self._started = -math.inf  # when the load that `_keys` came from started
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self.loads = 0

    async def find(self, digest: str) -> ApiKey | None:
        """The valid key with this digest, or None."""
        arrived = self._clock()
        age = arrived - self._started
        if age > self.max_age_s:
            await self._load_since(arrived - self.max_age_s, paced=False)
        elif age > self.max_age_s / 2:
            self._reload_in_background(arrived)
        key = self._keys.get(digest)
        if key is None:
            await self._load_since(arrived, paced=True)
            key = self._keys.get(digest)
        return key

    async def reload(self) -> None:
        """Read the keys again now (after this process created or revoked one)."""
        await self._load_since(self._clock(), paced=False)

    async def close(self) -> None:
        if self._background is not None:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)

    async def _load_since(self, since: float, *, paced: bool) -> None:
        """Return once `_keys` comes from a load that started at or after `since`."""
        async with self._lock:
            if self._started >= since:  # another request's load, while this one waited
                return
            if paced:
                wait = self._started + self.min_interval_s - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            started = self._clock()
            keys = await self._store().valid_api_keys()
            self._keys, self._started = keys, started
            self.loads += 1

    def _reload_in_background(self, since: float) -> None:
        if self._background is not None and not self._background.done():
            return
        self._background = asyncio.get_running_loop().create_task(
            self._load_since(since, paced=False), name="reload-api-keys"
        )
        self._background.add_done_callback(log_failure)


def log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning(
            "reloading the API keys failed (retried on the next request): %s", task.exception()
        )
