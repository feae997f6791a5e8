"""The closed loop keeps exactly `concurrency` requests in flight."""

from __future__ import annotations

import pytest
from loadtest_helpers import config, run_against

from loadtest.stub_server import stub_thread


@pytest.mark.parametrize("concurrency", [1, 4])
def test_closed_loop_throughput_is_concurrency_over_latency(concurrency: int) -> None:
    delay = 0.02
    with stub_thread(delay_s=delay) as stub:
        result = run_against(stub.url, config(mode="closed", loads=(concurrency,), duration_s=2.0))
    measured = result.steps[0].measured
    # Each request takes the stub's 20 ms plus a little: never more than c / 20 ms.
    assert measured.throughput <= concurrency / delay * 1.02
    assert measured.throughput >= concurrency / delay * 0.6
    assert measured.latency().p50_us >= delay * 1e6
    assert result.totals is not None and result.totals.dropped.total() == 0
