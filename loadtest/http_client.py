"""A minimal HTTP/1.1 keep-alive client for load generation, on asyncio protocols.

Why not httpx or aiohttp: the generator shares a small machine with the server it
measures, and per request they cost several coroutines, tasks and header objects
(see BENCHMARKS.md, "Load-test harness"). Here each in-flight request is one
pre-serialised byte string written to a pooled connection and one callback when the
response is parsed: no task, no future. What it supports is exactly what the
targets need:

- only the host and port of the URL given: no redirects followed (a 3xx is an
  error like any non-2xx), no DNS round-robin, no proxies, plain http;
- responses with Content-Length (uvicorn/Starlette always send it); a chunked
  response or any surprise is a "protocol error" and closes that connection;
- no pipelining: one request per connection at a time, connections opened on demand
  up to the in-flight cap and reused last-in first-out, so warm ones serve first.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from loadtest.target import (
    CONNECTION_ERROR,
    INTERRUPTED,
    PROTOCOL_ERROR,
    TIMEOUT,
    Done,
    TargetError,
)

MAX_HEAD_BYTES: Final = 64 * 1024
USER_AGENT: Final = "kbrec-loadtest"


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int
    prefix: str  # path of the URL without the trailing slash, prepended to every path

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_http_url(url: str) -> HttpEndpoint:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise TargetError(f"{url!r}: only http:// URLs are supported")
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise TargetError(f"{url!r}: expected http://HOST[:PORT][/PREFIX]")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise TargetError(f"{url!r}: {exc}") from exc
    return HttpEndpoint(parts.hostname, port, parts.path.rstrip("/"))


def build_request(endpoint: HttpEndpoint, method: str, path: str, body: bytes) -> bytes:
    """A complete HTTP/1.1 request with a JSON body, ready to write as is."""
    head = (
        f"{method} {endpoint.prefix}{path} HTTP/1.1\r\n"
        f"Host: {endpoint.authority}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Connection(asyncio.Protocol):
    """One TCP connection carrying at most one request at a time."""

    def __init__(self, pool: HttpTarget) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.expected = -1  # bytes of the whole response once its head is parsed
        self.closes = False  # the response said "Connection: close"
        self.retry_after_s = 0.0  # the response's Retry-After (0: none, or not a 429/503)
        self.item = -1
        self.done: Done | None = None
        self.deadline = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, raw: bytes, item: int, done: Done, deadline: float) -> None:
        assert self.transport is not None
        self.item, self.done, self.deadline = item, done, deadline
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        if self.done is None:  # nothing was asked: the stream cannot be trusted
            self.fail(PROTOCOL_ERROR)
            return
        buffer = self.buffer
        buffer += data
        if self.expected < 0 and not self._parse_head():
            return
        if len(buffer) < self.expected:
            return
        if len(buffer) > self.expected:  # bytes after the response: not HTTP as we know it
            self.fail(PROTOCOL_ERROR)
            return
        status = int(buffer[9:12])
        buffer.clear()
        self.expected = -1
        error = None if 200 <= status < 300 else f"HTTP {status}"
        self.pool.finish(self, error, self.retry_after_s)

    def _parse_head(self) -> bool:
        """Find the head's end and the body length; False if more bytes are needed."""
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD_BYTES:
                self.fail(PROTOCOL_ERROR)
            return False
        head = bytes(buffer[:end]).lower()
        length = _content_length(head)
        if not head.startswith(b"http/1.") or not buffer[9:12].isdigit() or length is None:
            self.fail(PROTOCOL_ERROR)
            return False
        self.expected = end + 4 + length
        self.closes = b"\r\nconnection: close" in head
        self.retry_after_s = _retry_after_s(head) if head[9:12] in (b"429", b"503") else 0.0
        return True

    def fail(self, error: str) -> None:
        """End the request in flight (if any) with `error` and drop this connection."""
        self.buffer.clear()
        self.expected = -1
        if self.transport is not None:
            self.transport.abort()
        if self.done is not None:
            self.pool.finish(self, error)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done is not None:
            self.pool.finish(self, CONNECTION_ERROR)
        self.pool.forget(self)

    @property
    def reusable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing() and not self.closes


def _content_length(head: bytes) -> int | None:
    start = head.find(b"\r\ncontent-length:")
    if start < 0:
        # No body by definition (RFC 9110); anything else without a length is unsupported.
        return 0 if head[9:12] in (b"204", b"304") else None
    start += len(b"\r\ncontent-length:")
    end = head.find(b"\r\n", start)
    value = head[start : end if end >= 0 else len(head)].strip()
    return int(value) if value.isdigit() else None


def _retry_after_s(head: bytes) -> float:
    """Retry-After in seconds: delta-seconds, or an HTTP date from now; 0 if absent or
    unreadable (a client then has nothing to honour)."""
    start = head.find(b"\r\nretry-after:")
    if start < 0:
        return 0.0
    start += len(b"\r\nretry-after:")
    end = head.find(b"\r\n", start)
    value = head[start : end if end >= 0 else len(head)].strip().decode("latin-1")
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:  # an HTTP date is GMT by definition
        when = when.replace(tzinfo=datetime.UTC)
    return max((when - datetime.datetime.now(datetime.UTC)).total_seconds(), 0.0)


class HttpTarget:
    """Pre-serialised requests (one per workload item) sent over pooled connections."""

    def __init__(
        self,
        endpoint: HttpEndpoint,
        requests: Sequence[bytes],
        max_in_flight: int,
        timeout_s: float,
    ) -> None:
        if max_in_flight < 1 or timeout_s <= 0:
            raise ValueError("max_in_flight must be >= 1 and timeout_s > 0")
        self.endpoint = endpoint
        self.requests = requests
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.in_flight = 0
        self._loop = asyncio.get_running_loop()
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._connecting: dict[asyncio.Task[None], tuple[int, Done]] = {}
        # Timeouts are found by a sweep a few times per timeout period rather than a
        # timer per request, which would cost a heap entry for every request.
        self._sweep_period = min(timeout_s / 10, 0.1)
        self._sweeper = self._loop.call_later(self._sweep_period, self._sweep)

    def submit(self, item: int, done: Done) -> bool:
        if self.in_flight >= self.max_in_flight:
            return False
        self.in_flight += 1
        deadline = self._loop.time() + self.timeout_s
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                self._busy.add(connection)
                connection.send(self.requests[item], item, done, deadline)
                return True
        task = self._loop.create_task(self._connect_and_send(item, done, deadline))
        self._connecting[task] = (item, done)
        task.add_done_callback(self._connecting.pop)
        return True

    async def _connect_and_send(self, item: int, done: Done, deadline: float) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                _, connection = await self._loop.create_connection(
                    lambda: _Connection(self), self.endpoint.host, self.endpoint.port
                )
        except TimeoutError:
            self._end(item, done, TIMEOUT)
            return
        except OSError:
            self._end(item, done, CONNECTION_ERROR)
            return
        except asyncio.CancelledError:
            self._end(item, done, INTERRUPTED)
            raise
        self._busy.add(connection)
        connection.send(self.requests[item], item, done, deadline)

    def finish(
        self, connection: _Connection, error: str | None, retry_after_s: float = 0.0
    ) -> None:
        """Called by a connection when its request ends; the connection is reused if it can."""
        item, done = connection.item, connection.done
        assert done is not None
        connection.done = None
        self._busy.discard(connection)
        # An HTTP error status is a complete response: the connection is still in sync.
        if connection.reusable and (error is None or error.startswith("HTTP ")):
            self._idle.append(connection)
        elif connection.transport is not None:
            connection.transport.abort()
        self._end(item, done, error, retry_after_s)

    def _end(self, item: int, done: Done, error: str | None, retry_after_s: float = 0.0) -> None:
        self.in_flight -= 1
        done(item, self._loop.time(), error, retry_after_s)

    def forget(self, connection: _Connection) -> None:
        self._busy.discard(connection)
        with contextlib.suppress(ValueError):
            self._idle.remove(connection)

    def _sweep(self) -> None:
        now = self._loop.time()
        for connection in [c for c in self._busy if c.deadline <= now]:
            connection.fail(TIMEOUT)
        self._sweeper = self._loop.call_later(self._sweep_period, self._sweep)

    def abandon(self) -> int:
        count = self.in_flight
        for connection in list(self._busy):
            connection.fail(INTERRUPTED)
        for task in list(self._connecting):
            task.cancel()
        return count

    async def check(self) -> None:
        """Send item 0 once and require a 2xx, so a wrong URL fails before any load."""
        outcome: asyncio.Future[str | None] = self._loop.create_future()
        self.submit(0, lambda _item, _at, error, _retry_after: outcome.set_result(error))
        error = await outcome
        if error is not None:
            raise TargetError(f"{self.endpoint.authority}{self.endpoint.prefix}: {error}")

    async def close(self) -> None:
        self._sweeper.cancel()
        self.abandon()
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)
        for connection in self._idle:
            if connection.transport is not None:
                connection.transport.close()
        self._idle.clear()
