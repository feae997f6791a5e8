"""The overload benchmark's own measurement: how each request ended, and how fast."""

from __future__ import annotations

import asyncio

from bench.overload_benchmark import TimedTarget
from loadtest.http_client import HttpTarget, parse_http_url
from loadtest.kbrec_api import kbrec_requests
from loadtest.stub_server import stub_thread
from loadtest.target import TIMEOUT
from loadtest.workload import Query, build_workload

DELAY_S = 0.02


def test_the_timed_target_notes_how_each_request_ended_and_when() -> None:
    workload = build_workload([Query("writer", "page numbers")], {}, "one query")
    with stub_thread(delay_s=DELAY_S, status=503) as stub:

        async def send(timeout_s: float) -> tuple[TimedTarget, list[tuple[int, str | None]]]:
            endpoint = parse_http_url(stub.url)
            requests = kbrec_requests(endpoint, workload.items, 5)
            timed = TimedTarget(HttpTarget(endpoint, requests, 4, timeout_s))
            seen: list[tuple[int, str | None]] = []
            both = asyncio.Event()

            def done(item: int, at: float, error: str | None, _retry_after_s: float) -> None:
                seen.append((item, error))
                if len(seen) == 2:
                    both.set()

            assert timed.submit(0, done) and timed.submit(0, done)
            assert timed.in_flight == 2
            await asyncio.wait_for(both.wait(), 10)
            await timed.close()
            return timed, seen

        refused, seen = asyncio.run(send(timeout_s=5.0))
        assert seen == [(0, "HTTP 503"), (0, "HTTP 503")]  # passed on to the harness
        assert [error for _, _, error in refused.outcomes] == ["HTTP 503", "HTTP 503"]
        assert all(DELAY_S <= seconds < 5.0 for _, seconds, _ in refused.outcomes)
        ends = [ended for ended, _, _ in refused.outcomes]
        assert ends == sorted(ends)

        timed_out, _ = asyncio.run(send(timeout_s=DELAY_S / 4))
        assert [error for _, _, error in timed_out.outcomes] == [TIMEOUT, TIMEOUT]
