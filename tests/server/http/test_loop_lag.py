"""The event loop's lag: the probe sees a blocked loop, and /metrics exposes it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from serving_helpers import FakeProvider, metric_value, serve_in_thread, wait_until

from server.app import create_app
from server.http.loop_lag import probe_loop_lag
from server.settings import Settings


def test_the_probe_sees_how_long_the_loop_was_blocked() -> None:
    lags: list[float] = []

    async def test() -> None:
        probe = asyncio.get_running_loop().create_task(probe_loop_lag(lags.append, 0.005))
        await asyncio.sleep(0.05)
        time.sleep(0.1)  # a stall: whatever the probe waits for is 0.1 s late at most
        await asyncio.sleep(0.05)
        probe.cancel()

    asyncio.run(test())
    assert len(lags) >= 5 and all(lag >= 0 for lag in lags)
    assert 0.09 <= max(lags) <= 0.5  # the stall, once
    assert sorted(lags)[len(lags) // 2] < 0.05  # the rest of the time: on time


def test_metrics_expose_the_event_loops_lag(bow_repository: Path, tmp_path: Path) -> None:
    settings = Settings.of(repository=bow_repository, db=tmp_path / "kbrec.sqlite", port=0)
    app = create_app(settings, backends=FakeProvider())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:

        def probed() -> bool:
            text = http.get("/metrics").text
            return metric_value(text, "kbrec_event_loop_lag_seconds_count") >= 10

        wait_until(probed, "ten probes of the event loop")
