"""A trivial HTTP/1.1 endpoint with a controllable delay and stall, on asyncio protocols.

It measures the generator itself (it costs far less per request than any real
service, so the generator is the bottleneck) and backs the load-test tests: every
request gets a small JSON answer after `delay_s`; `stall(seconds)` holds every answer
until the stall ends, as a stuck server would (a GC pause, a lock, a full queue).

    python -m loadtest.stub_server [--port 0] [--delay-ms 0] [--cpu N]

prints "stub listening on http://127.0.0.1:PORT" and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Final

ANSWER: Final = b'{"ok":true}'
_START_TIMEOUT_S: Final = 30.0


class StubServer:
    """Loop-affine: call its methods from the loop it runs on (see `StubThread`)."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.delay_s = delay_s
        self.status = status
        self.stalled_until = 0.0
        self.arrivals: list[float] = []  # loop time of every request, for rate checks
        self.port = 0
        self.connections: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(lambda: _StubConnection(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stall(self, seconds: float) -> None:
        assert self._loop is not None
        self.stalled_until = self._loop.time() + seconds

    def response(self) -> bytes:
        return (
            f"HTTP/1.1 {self.status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(ANSWER)}\r\n\r\n"
        ).encode() + ANSWER

    def answer_at(self, now: float) -> float:
        """When a request arriving at `now` is answered: after the delay and any stall."""
        return max(now + self.delay_s, self.stalled_until)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            # Keep-alive connections outlive the listener: end them (newer Pythons'
            # wait_closed would wait for the clients to hang up).
            for transport in list(self.connections):
                transport.abort()
            await self._server.wait_closed()


class _StubConnection(asyncio.Protocol):
    def __init__(self, server: StubServer) -> None:
        self.server = server
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).lower()
            start = head.find(b"\r\ncontent-length:")
            length = int(head[start + 17 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self._answer()

    def _answer(self) -> None:
        now = self.loop.time()
        self.server.arrivals.append(now)
        at = self.server.answer_at(now)
        if at <= now:
            self._write()
        else:
            self.loop.call_at(at, self._write)

    def _write(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.server.response())


class StubThread:
    """A StubServer on its own event loop in a daemon thread (for tests in one process)."""

    def __init__(self, delay_s: float = 0.0, status: int = 200) -> None:
        self.server = StubServer(delay_s, status)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def __enter__(self) -> StubThread:
        self._thread.start()
        self.call(self.server.start)
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(_START_TIMEOUT_S)
        self.loop.close()

    def call(self, coroutine_function: object, *args: object) -> object:
        """Run a coroutine function of the server on its loop and wait for the result."""
        future = asyncio.run_coroutine_threadsafe(coroutine_function(*args), self.loop)
        return future.result(_START_TIMEOUT_S)

    def stall(self, seconds: float) -> None:
        self.loop.call_soon_threadsafe(self.server.stall, seconds)

    def arrivals(self) -> list[float]:
        """Arrival times so far, copied on the server's loop."""

        async def copy() -> list[float]:
            return list(self.server.arrivals)

        return self.call(copy)

    def now(self) -> float:
        """The server loop's clock (arrivals are on it)."""
        return self.loop.time()


@contextlib.contextmanager
def stub_thread(delay_s: float = 0.0, status: int = 200) -> Iterator[StubThread]:
    with StubThread(delay_s, status) as stub:
        yield stub


async def _serve(args: argparse.Namespace) -> None:
    server = StubServer(args.delay_ms / 1000)
    await server.start(args.host, args.port)
    print(f"stub listening on http://{args.host}:{server.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--cpu", type=int, help="pin to this CPU core")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
