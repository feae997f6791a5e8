"""How late the event loop runs what is due: `kbrec_event_loop_lag_seconds`.

Every request, batch and timer of a process waits on its one event loop, so how late
a timer fires is the front end's own saturation, measured inside the server: a
client's latency also holds its own scheduling and the network, which the server
cannot see. Under 3 × overload on two shared cores (BENCHMARKS.md), clients saw the
refusals' p99 at 68–86 ms while the loop's lag stayed at p99 6 ms and refusals took
3.7 ms inside the server: the tail was not the server's.

A probe sleeps PROBE_INTERVAL_S at a time and records how much later than due it
woke: 100 wake-ups a second, a few µs each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

PROBE_INTERVAL_S: Final = 0.01


async def probe_loop_lag(
    observe: Callable[[float], None], interval_s: float = PROBE_INTERVAL_S
) -> None:
    """Forever (until cancelled): sleep `interval_s`, then observe how late it woke."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))
