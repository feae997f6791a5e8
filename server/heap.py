"""Python's cyclic garbage collector, set for a long-running server process.

With CPython's defaults (a young collection every 700 net container allocations), the
requests in flight alone set one off about 230 times a second at saturation, and every
hundredth collection walks every object the process holds: the tens of thousands that
imports and startup made, which never become garbage. Measured (BENCHMARKS.md, "The
front end, fourth pass"): 8.5 % of the core, and pauses of about 25 ms that were most
of the p99.

`settle_for_serving`, once the service is ready: a last full collection, then
startup's objects and the index's (one or more per article) move to the permanent
generation (`gc.freeze`, which later collections skip), and young collections wait for
`YOUNG_THRESHOLD` allocations. Cycles
are still collected, only later: a request's own objects are freed by reference
counting when it ends, whatever the threshold.

Only the `kbrec serve` process calls it: a test process that builds many apps would
keep each one's objects out of reach of the collector.
"""

from __future__ import annotations

import gc
from typing import Final

YOUNG_THRESHOLD: Final = 10_000  # CPython's default: 700


def settle_for_serving() -> int:
    """Collect, freeze what is left and raise the young threshold; the objects frozen."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return gc.get_freeze_count()
