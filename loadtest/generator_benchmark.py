"""The generator's own limit: kbrec's client against a trivial endpoint, on one core.

    .venv/bin/python -m loadtest.generator_benchmark [--seconds 5] [--rates 2000,3000]

The stub server (loadtest.stub_server, answers at once) runs in a child process pinned
to core 1 and this process to core 0, so each has a core and the generator is the
bottleneck. Rows: the open loop at each rate (does it keep its schedule: achieved
rate, dropped, p99), the closed loop at --concurrency (the most it can send), and
the same closed loop through aiohttp (and httpx with --libraries aiohttp,httpx), to
show why the harness has its own client. CPU is this process's user + system time
per 1,000 requests. Prints Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from loadtest.kbrec_api import recommendation_body
from loadtest.library_clients import ClientOpener, aiohttp_client, httpx_client
from loadtest.point import level_config
from loadtest.runner import Load, RunConfig, RunResult, execute
from loadtest.setup import kbrec_target
from loadtest.sources import load_workload
from loadtest.workload import Query, Workload, build_workload, pick_items

START_TIMEOUT_S = 30.0
GENERATOR_CPU, STUB_CPU = 0, 1


@dataclass(frozen=True)
class Row:
    client: str
    load: str
    achieved: float
    dropped: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    cpu_s_per_1k: float  # this process's CPU seconds per 1,000 requests
    cores: float  # CPU seconds per wall second

    def markdown(self) -> str:
        p50 = "–" if self.p50_ms is None else f"{self.p50_ms:.2f}"
        p99 = "–" if self.p99_ms is None else f"{self.p99_ms:.2f}"
        return (
            f"| {self.client} | {self.load} | {self.achieved:,.0f} | {self.dropped} "
            f"| {self.errors} | {p50} | {p99} | {self.cpu_s_per_1k:.3f} "
            f"| {self.cores:.2f} |"
        )


HEADER = (
    "| client | load | achieved req/s | dropped | errors | p50 ms | p99 ms "
    "| generator CPU s per 1k requests | generator CPU (cores) |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|"
)


@contextmanager
def stub_process(pin: bool) -> Iterator[str]:
    """The stub server in a child process; yields its URL once it listens."""
    command = [sys.executable, "-m", "loadtest.stub_server"]
    if pin:
        command += ["--cpu", str(STUB_CPU)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield _listening_url(process)
    finally:
        process.terminate()
        process.wait(START_TIMEOUT_S)


def _listening_url(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(START_TIMEOUT_S):
            raise RuntimeError("the stub server did not start")
    line = process.stdout.readline()
    if "listening on " not in line:
        raise RuntimeError(f"unexpected stub output: {line!r}")
    return line.rsplit(" ", 1)[1].strip()


def workload() -> Workload:
    """The corpus's queries if present (real body sizes), else a small synthetic set."""
    if Path("data/corpus/queries.jsonl").is_file():
        return load_workload("corpus:data/corpus")
    queries = [Query(f"acct{i % 5}", f"how do I change setting number {i}") for i in range(50)]
    return build_workload(queries, {}, "synthetic")


def harness_row(url: str, config: RunConfig, items: Workload, label: str) -> Row:
    cap = max(1000, int(max(config.loads)))
    make = kbrec_target(url, items, 5, cap, 10.0)
    load = Load(make, pick_items(items, 0, 1.1, 0.0), items.ops, url, items.description)
    result = asyncio.run(execute(config, load, progress_stream=io.StringIO()))
    return _row(result, label)


def _row(result: RunResult, label: str) -> Row:
    step = result.steps[0]
    totals = result.totals
    assert totals is not None
    completed = totals.ok + totals.errors.total()
    latency = step.measured.latency()
    return Row(
        client="kbrec loadtest",
        load=label,
        achieved=step.measured.throughput,
        dropped=totals.dropped.total(),
        errors=totals.errors.total(),
        p50_ms=latency.ms("p50"),
        p99_ms=latency.ms("p99"),
        cpu_s_per_1k=result.generator_cpu_s / max(completed, 1) * 1000,
        cores=result.generator_cpu_s / result.wall_s,
    )


def run_config(mode: str, load: float, seconds: float) -> RunConfig:
    return level_config(mode, load, warmup_s=1.0, window_s=seconds, max_lag_s=1.0)


async def library_closed_loop(
    name: str,
    open_client: ClientOpener,
    bodies: Sequence[bytes],
    concurrency: int,
    seconds: float,
) -> Row:
    """`concurrency` tasks posting back to back through a client library."""
    post, closer = await open_client()
    counts = {"ok": 0, "errors": 0}
    loop = asyncio.get_running_loop()

    async def worker(first: int, until: float) -> None:
        k = first
        while loop.time() < until:
            status = await post(bodies[k % len(bodies)])
            counts["ok" if status == 200 else "errors"] += 1
            k += concurrency

    await asyncio.gather(*(worker(i, loop.time() + 1.0) for i in range(concurrency)))  # warm-up
    counts.update(ok=0, errors=0)
    cpu, wall = time.process_time(), loop.time()
    await asyncio.gather(*(worker(i, wall + seconds) for i in range(concurrency)))
    cpu, wall = time.process_time() - cpu, loop.time() - wall
    await closer()
    done = counts["ok"] + counts["errors"]
    load = f"closed, concurrency {concurrency}"
    per_1k = cpu / max(done, 1) * 1000
    return Row(name, load, counts["ok"] / wall, 0, counts["errors"], None, None, per_1k, cpu / wall)


def request_bodies(items: Workload) -> list[bytes]:
    """Only the JSON bodies of the recommendation requests (the libraries add the head)."""
    queries = items.items[: items.write_start]
    return [recommendation_body(query, 5) for query in queries if isinstance(query, Query)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per row")
    parser.add_argument("--rates", default="2000,3000", help="open-loop rates")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--libraries", default="aiohttp", help="comparison clients: aiohttp,httpx ('': none)"
    )
    args = parser.parse_args(argv)
    pin = len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {GENERATOR_CPU})
    items = workload()
    rows: list[Row] = []
    with stub_process(pin) as url:
        for rate in (float(r) for r in args.rates.split(",") if r):
            config = run_config("open", rate, args.seconds)
            rows.append(harness_row(url, config, items, f"open, {rate:g}/s"))
            print(rows[-1].markdown(), file=sys.stderr)
        closed = run_config("closed", args.concurrency, args.seconds)
        rows.append(harness_row(url, closed, items, f"closed, concurrency {args.concurrency}"))
        print(rows[-1].markdown(), file=sys.stderr)
        bodies = request_bodies(items)
        clients = {"aiohttp": aiohttp_client, "httpx": httpx_client}
        for name in (n for n in args.libraries.split(",") if n):
            opener = clients[name](url)
            row = asyncio.run(
                library_closed_loop(name, opener, bodies, args.concurrency, args.seconds)
            )
            rows.append(row)
            print(row.markdown(), file=sys.stderr)
    pinned = f"generator on core {GENERATOR_CPU}, stub on core {STUB_CPU}" if pin else "not pinned"
    load_average = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} cores, {pinned}, Python {sys.version.split()[0]}; load average "
        f"{load_average} at the end; {args.seconds:g} s measured per row.\n"
    )
    print(HEADER)
    print("\n".join(row.markdown() for row in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
