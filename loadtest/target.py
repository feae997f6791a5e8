"""The interface between the load drivers and what they load (kbrec's HTTP API, Triton).

Drivers call `submit` from the event loop and never await it: a target that had to
be awaited per request would cost a task each, which the open loop cannot afford at
thousands of requests a second. Completion is reported through the callback, with
the finish time taken as soon as the response is in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Protocol

# Error kinds shared by the targets; HTTP statuses are "HTTP <code>", gRPC ones "grpc <CODE>".
TIMEOUT: Final = "timeout"
CONNECTION_ERROR: Final = "connection error"
PROTOCOL_ERROR: Final = "protocol error"
INTERRUPTED: Final = "interrupted"  # still in flight when the run was cut short

# Reasons a due request was not sent (open loop).
DROP_IN_FLIGHT_CAP: Final = "in-flight cap"
DROP_BEHIND_SCHEDULE: Final = "behind schedule"

# (item, finished at loop time, error kind or None for success, seconds the server asked
# the client to wait before its next request: a 429/503's Retry-After, else 0)
Done = Callable[[int, float, str | None, float], None]


class TargetError(Exception):
    """The target cannot be loaded at all (bad URL, not reachable, not ready)."""


class Target(Protocol):
    in_flight: int
    timeout_s: float  # a request unanswered this long fails as TIMEOUT

    async def check(self) -> None:
        """One real request before any load, raising TargetError with the reason on failure."""
        ...

    def submit(self, item: int, done: Done) -> bool:
        """Start request `item`; False (and no callback) if the in-flight cap is reached."""
        ...

    def abandon(self) -> int:
        """Fail every request still in flight with INTERRUPTED; returns how many."""
        ...

    async def close(self) -> None: ...
