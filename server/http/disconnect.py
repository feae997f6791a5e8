"""Stop the work of a request whose client has gone.

uvicorn does not cancel a handler when its client disconnects: without this, a
query abandoned by a client that timed out would still be embedded and ranked, and
under overload most of the work would be for nobody. `cancelled_if_client_leaves`
runs a watcher on the request's ASGI `receive` while the handler waits (the body has
been read by then, so the next message is `http.disconnect`, which the server sends
when the connection closes); on disconnect it cancels the handler's task the way
`asyncio.timeout` does, and the block raises `ClientDisconnected`. A batcher skips
rows whose caller was cancelled, so the query is not embedded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request

log = logging.getLogger(__name__)

# nginx's code for "client closed request": nobody reads it, but metrics count it.
CLIENT_CLOSED_REQUEST = 499


class ClientDisconnected(Exception):
    """The client closed the connection before its answer was ready."""


@contextlib.asynccontextmanager
async def cancelled_if_client_leaves(request: Request) -> AsyncIterator[None]:
    """Run the block; if the client disconnects meanwhile, cancel it and raise
    `ClientDisconnected`. Only for after the body was read (the watcher takes the
    request's next messages)."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancelled_if_client_leaves needs a task")
    left = False

    async def watch() -> None:
        nonlocal left
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass  # more body after its end: nothing to wait for but the disconnect
        except Exception as exc:  # a server that cannot tell: keep working for the client
            log.debug("cannot watch for the client's disconnect: %r", exc)
            return
        left = True
        task.cancel()

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        # Ours only if nobody else (a server shutdown) cancelled the task too.
        if left and task.uncancel() == 0:
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()
