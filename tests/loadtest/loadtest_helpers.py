"""Helpers of the load-test tests: a small workload and runs against a stub server."""

from __future__ import annotations

import asyncio
import io
from dataclasses import replace
from typing import Any

from loadtest.http_client import HttpTarget, parse_http_url
from loadtest.kbrec_api import kbrec_requests
from loadtest.runner import Load, RunConfig, RunResult, execute
from loadtest.workload import Query, Workload, build_workload, pick_items

QUERIES = [
    Query("writer", "How do I add page numbers?"),
    Query("writer", "page styles, page numbering"),
    Query("writer", "tables"),
    Query("calc", "VLOOKUP returns #N/A even though the value is there"),
    Query("calc", "freeze the top row"),
    Query("impress", "make bullet points appear one at a time"),
]

BASE = RunConfig(
    mode="open",
    loads=(100.0,),
    sweep=False,
    poisson=False,
    duration_s=2.0,
    max_requests=100_000,
    warmup_s=0.0,
    window_s=1.0,
    max_windows=10,
    stability=0.1,
    max_p99_ms=None,
    max_error_rate=0.01,
    max_lag_s=1.0,
    seed=0,
)


def small_workload() -> Workload:
    return build_workload(QUERIES, {}, "test queries")


def config(**changes: Any) -> RunConfig:
    return replace(BASE, **changes)


def run_against(
    url: str,
    run_config: RunConfig,
    workload: Workload | None = None,
    timeout_s: float = 5.0,
    max_in_flight: int = 1000,
) -> RunResult:
    """One run of the harness against `url` (the progress line is discarded)."""
    workload = workload or small_workload()
    endpoint = parse_http_url(url)
    requests = kbrec_requests(endpoint, workload.items, 5)

    async def make() -> HttpTarget:
        return HttpTarget(endpoint, requests, max_in_flight, timeout_s)

    picks = pick_items(workload, run_config.seed, 1.1, 0.0)
    load = Load(make, picks, workload.ops, url, workload.description)
    return asyncio.run(execute(run_config, load, progress_stream=io.StringIO()))
