"""aiohttp and httpx posting kbrec recommendations: the yardsticks for the harness's client.

The harness has its own HTTP/1.1 client because these libraries cost the generator
several times the CPU per request (BENCHMARKS.md, "Load-test harness"). Comparisons
keep that claim checked: loadtest.generator_benchmark runs them against a stub, and
`LibraryTarget` lets a benchmark drive one with the harness's own loops, so that a
row differs from the harness's only by the client. One task per request here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Final

from loadtest.kbrec_api import RECOMMEND_PATH
from loadtest.target import INTERRUPTED, TIMEOUT, Done, TargetError

Post = Callable[[bytes], Awaitable[int]]  # send one JSON body, return the HTTP status
Close = Callable[[], Awaitable[object]]
ClientOpener = Callable[[], Awaitable[tuple[Post, Close]]]
JSON_HEADERS: Final = {"content-type": "application/json"}


def aiohttp_client(url: str) -> ClientOpener:
    async def open_client() -> tuple[Post, Close]:
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

        async def post(body: bytes) -> int:
            async with session.post(url + RECOMMEND_PATH, data=body, headers=JSON_HEADERS) as r:
                await r.read()
                return r.status

        return post, session.close

    return open_client


def httpx_client(url: str) -> ClientOpener:
    async def open_client() -> tuple[Post, Close]:
        import httpx

        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        client = httpx.AsyncClient(limits=limits, timeout=10)

        async def post(body: bytes) -> int:
            answer = await client.post(url + RECOMMEND_PATH, content=body, headers=JSON_HEADERS)
            return answer.status_code

        return post, client.aclose

    return open_client


class LibraryTarget:
    """A `Target` posting each item's JSON body through a client library, a task each."""

    def __init__(
        self,
        post: Post,
        close: Close,
        bodies: Sequence[bytes],
        max_in_flight: int,
        timeout_s: float,
    ) -> None:
        self.in_flight = 0
        self.timeout_s = timeout_s
        self._post, self._close, self._bodies = post, close, bodies
        self._max_in_flight = max_in_flight
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[str | None]] = set()

    @classmethod
    async def open(
        cls, opener: ClientOpener, bodies: Sequence[bytes], max_in_flight: int, timeout_s: float
    ) -> LibraryTarget:
        post, close = await opener()
        return cls(post, close, bodies, max_in_flight, timeout_s)

    def submit(self, item: int, done: Done) -> bool:
        if self.in_flight >= self._max_in_flight:
            return False
        self.in_flight += 1
        task = self._loop.create_task(self._send(item))
        self._tasks.add(task)
        task.add_done_callback(partial(self._finished, item, done))
        return True

    async def _send(self, item: int) -> str | None:
        """None on a 2xx, else the error kind."""
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self._post(self._bodies[item])
        except TimeoutError:
            return TIMEOUT
        except Exception as exc:  # each library has its own exception tree
            return f"client error ({type(exc).__name__})"
        return None if 200 <= status < 300 else f"HTTP {status}"

    def _finished(self, item: int, done: Done, task: asyncio.Task[str | None]) -> None:
        self._tasks.discard(task)
        self.in_flight -= 1
        done(item, self._loop.time(), INTERRUPTED if task.cancelled() else task.result(), 0.0)

    def abandon(self) -> int:
        for task in list(self._tasks):
            task.cancel()
        return len(self._tasks)

    async def check(self) -> None:
        error = await self._send(0)
        if error is not None:
            raise TargetError(f"first request: {error}")

    async def close(self) -> None:
        self.abandon()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()
