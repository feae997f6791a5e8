"""Stop the work of a request whose client has gone.

uvicorn does not cancel a handler when its client disconnects: without this, a
query abandoned by a client that timed out would still be embedded and ranked, and
under overload most of the work would be for nobody. `cancelled_if_client_leaves`
watches the request's ASGI `receive` while the handler waits (the body has been read
by then, so the next message is `http.disconnect`, which the server sends when the
connection closes); on disconnect it cancels the handler's task the way
`asyncio.timeout` does, and the block raises `ClientDisconnected`. A batcher skips
rows whose caller was cancelled, so the query is not embedded.

The watcher starts only once the handler has waited `WATCH_AFTER_S`: most answers come
sooner, and a watcher task per request (created, stepped, cancelled) was a measurable
part of a request's CPU (bench/frontend_benchmark.py). A client that leaves earlier
costs at most its row of one batch.
"""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from starlette.requests import Request

log = logging.getLogger(__name__)

# nginx's code for "client closed request": nobody reads it, but metrics count it.
CLIENT_CLOSED_REQUEST = 499
WATCH_AFTER_S = 0.05


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready."""


def cancelled_if_client_leaves(request: Request) -> DisconnectWatch:
    """`async with cancelled_if_client_leaves(request): ...` runs the block; if the client
    disconnects meanwhile, the block is cancelled and `ClientDisconnected` raised. Only
    for after the body was read (the watcher takes the request's next messages)."""
    return DisconnectWatch(request)


class DisconnectWatch:
    """The context manager of `cancelled_if_client_leaves`: a class, not a generator, as
    it runs on every recommendation."""

    def __init__(self, request: Request, watch_after_s: float = WATCH_AFTER_S) -> None:
        self._request = request
        self._watch_after_s = watch_after_s
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._left = False

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        if self._task is None:
            raise RuntimeError("cancelled_if_client_leaves needs a task")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._watch_after_s, self._start_watching, loop)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()
        # Ours only if nobody else (a server shutdown) cancelled the task too.
        task = self._task
        if (
            kind is asyncio.CancelledError
            and self._left
            and task is not None
            and task.uncancel() == 0
        ):
            raise ClientDisconnected() from None

    def _start_watching(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watcher = loop.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            while (await self._request.receive())["type"] != "http.disconnect":
                pass  # more body after its end: nothing to wait for but the disconnect
        except Exception as exc:  # a server that cannot tell: keep working for the client
            log.debug("cannot watch for the client's disconnect: %r", exc)
            return
        self._left = True
        if self._task is not None:
            self._task.cancel()
