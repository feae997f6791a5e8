"""Scale-out on one host: `kbrec serve --workers N`, and how fast writes reach the others.

    .venv/bin/python -m bench.workers_benchmark --repository /tmp/kbrec-bench-repo \
        --corpus /tmp/kbrec-bench-corpus > /tmp/workers.md

1. Throughput per worker count: for each round (--rounds, alternating the order of
   --workers each round, so drift on a shared machine hits every count alike) start
   `kbrec serve --workers N` on a copy of the store, wait until every worker logged
   that it is ready, and run closed loops at each --concurrency with the harness of
   loadtest.point on the ticket workload. A row: req/s, p50/p99, errors, the server's
   CPU (the supervisor and its workers, from /proc) and the generator's. Then the
   speed-up of each worker count over one worker, per concurrency and round.
2. The change feed's propagation delay: two replicas (two `kbrec serve` processes on
   one store: --feed-store, a SQLite file by default or a postgresql:// URL) and a
   background writer PUTting articles into replica A at --write-rate; meanwhile
   --probes times one article is PUT into A (an account of its own) and replica B is
   polled every millisecond until it recommends it: the delay from A's 201 to B's
   first 200. p50, p90, p99 and max.

Markdown goes to stdout, progress to stderr. The generator runs on the same machine
as the servers: on a 2-core machine it takes part of the second core from them.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.serving import (
    TOP_K,
    kbrec_level,
    load_average,
    prepare_store,
    progress,
    run_header,
)
from kbrec.records import QUERIES_FILE
from loadtest.kbrec_process import KBREC, ServeProcess, check_recommendation, seed_store
from loadtest.point import GENERATOR_CPU, Measured, level_config
from loadtest.sources import tickets_workload
from loadtest.tickets import ticket_texts
from loadtest.workload import Query, Workload

SERVER_CPU: Final = "server_cpu_s"
READY_TEXT: Final = "kbrec ready on"
POLL_S: Final = 0.001
PROBE_DEADLINE_S: Final = 30.0


@dataclass(frozen=True)
class Row:
    round: int
    workers: int
    concurrency: int
    measured: Measured


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--db", type=Path, help="a seeded db to copy (default: import --corpus)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per window")
    parser.add_argument(
        "--feed-store", help="store of the feed measurement (default: a SQLite copy)"
    )
    parser.add_argument("--probes", type=int, default=200, help="timed writes (0: no feed part)")
    parser.add_argument("--write-rate", type=float, default=20.0, help="background PUTs/s")
    parser.add_argument("--serve-flags", default="", help="more `kbrec serve` flags")
    parser.add_argument("--launcher", default=shlex.join(KBREC))
    return parser.parse_args(argv)


def serve_args(args: argparse.Namespace, store: str, *extra: str) -> list[str]:
    # No repository watch: the newest version serves throughout.
    flags = ["--db", store, "--repository", str(args.repository), "--repository-poll-s", "0"]
    return [*flags, *shlex.split(args.serve_flags), *extra]


def start(args: argparse.Namespace, store: str, probe: Query, *extra: str) -> ServeProcess:
    server = ServeProcess(serve_args(args, store, *extra), shlex.split(args.launcher))
    try:
        server.wait_ready()
        check_recommendation(server.url, probe.account_id, probe.text, TOP_K)
    except BaseException:
        server.stop()
        raise
    return server


def wait_for_workers(server: ServeProcess, workers: int, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(READY_TEXT in line for line in server.lines) < workers:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError("workers did not get ready:\n" + "".join(server.lines[-20:]))
        time.sleep(0.05)


def throughput_rows(
    args: argparse.Namespace, db: Path, workload: Workload, tickets: Sequence[Query]
) -> list[Row]:
    rows = []
    for round_ in range(1, args.rounds + 1):
        order = args.workers if round_ % 2 else args.workers[::-1]
        for workers in order:
            print(f"round {round_}: {workers} worker(s)", file=sys.stderr)
            with start(args, str(db), tickets[0], "--workers", str(workers)) as server:
                wait_for_workers(server, workers)
                for concurrency in args.concurrency:
                    config = level_config("closed", float(concurrency), args.warmup, args.duration)
                    measured = kbrec_level(server, workload, tickets, config, TOP_K)
                    progress(f"{workers} worker(s) c={concurrency}", measured)
                    rows.append(Row(round_, workers, concurrency, measured))
    return rows


def load_table(rows: Sequence[Row]) -> str:
    lines = [
        "| round | workers | load | req/s | p50 ms | p99 ms | errors | server CPU (cores) "
        "| server CPU µs/req | generator CPU (cores) |",
        "|---:|---:|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        m = r.measured
        lines.append(
            f"| {r.round} | {r.workers} | closed c={r.concurrency} "
            f"| {m.window.throughput:.0f} | {m.latency_ms('p50'):.1f} "
            f"| {m.latency_ms('p99'):.1f} | {m.failures} | {m.cores(SERVER_CPU):.2f} "
            f"| {m.ms_per_request(SERVER_CPU) * 1000:.0f} | {m.cores(GENERATOR_CPU):.2f} |"
        )
    return "\n".join(lines)


def speedup_table(rows: Sequence[Row], workers: Sequence[int]) -> str:
    base = min(workers)
    header = " | ".join(f"{n} workers ÷ {base}" for n in workers if n != base)
    lines = [f"| load | round | {header} |", "|---|---:|" + "---:|" * (len(workers) - 1)]
    by_key = {(r.round, r.workers, r.concurrency): r.measured.window.throughput for r in rows}
    for concurrency in sorted({r.concurrency for r in rows}):
        for round_ in sorted({r.round for r in rows}):
            one = by_key[(round_, base, concurrency)]
            ratios = [
                f"{by_key[(round_, n, concurrency)] / one:.2f} ×" for n in workers if n != base
            ]
            lines.append(f"| closed c={concurrency} | {round_} | {' | '.join(ratios)} |")
    return "\n".join(lines)


# --- the change feed ---------------------------------------------------------------


def request(method: str, url: str, body: object | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, data, headers, method=method), timeout=10
        ) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def put(url: str, account: str, article_id: str, title: str) -> None:
    path = f"{url}/v1/accounts/{account}/articles/{article_id}"
    status = request("PUT", path, {"title": title, "body": f"{title}, the article body"})
    if status not in (200, 201):
        raise RuntimeError(f"PUT {path}: {status}")


def visible(url: str, account: str) -> bool:
    body = {"account_id": account, "text": "printer", "top_k": 1}
    return request("POST", f"{url}/v1/recommendations", body) == 200


def background_writes(url: str, rate: float, stop: threading.Event) -> None:
    n = 0
    while not stop.wait(1 / rate):
        put(url, "feed-load", f"load-{n % 500}", f"printer background article {n}")
        n += 1


def feed_delays(args: argparse.Namespace, store: str, probe: Query) -> list[float]:
    fast = ("--feed-wait-s", "1.0")
    with start(args, store, probe, *fast) as a, start(args, store, probe, *fast) as b:
        stop = threading.Event()
        writer = threading.Thread(target=background_writes, args=(a.url, args.write_rate, stop))
        writer.start()
        delays = []
        try:
            for i in range(args.probes):
                account = f"feed-probe-{i}"
                put(a.url, account, "probe", f"printer probe {i}")
                written = time.perf_counter()
                while not visible(b.url, account):
                    if time.perf_counter() - written > PROBE_DEADLINE_S:
                        raise RuntimeError(f"probe {i} not visible at B after {PROBE_DEADLINE_S} s")
                    time.sleep(POLL_S)
                delays.append(time.perf_counter() - written)
        finally:
            stop.set()
            writer.join()
        return delays


def delay_table(store_kind: str, delays: Sequence[float], write_rate: float) -> str:
    ordered = sorted(delays)

    def at(q: float) -> float:
        return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000

    return "\n".join(
        [
            "| store | background writes | probes | p50 ms | p90 ms | p99 ms | max ms | mean ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            f"| {store_kind} | {write_rate:g}/s | {len(delays)} | {at(0.5):.1f} | {at(0.9):.1f} "
            f"| {at(0.99):.1f} | {ordered[-1] * 1000:.1f} | {statistics.mean(delays) * 1000:.1f} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    workload = tickets_workload(args.corpus)
    out = run_header("bench.workers_benchmark", "Generator and servers share the machine.")
    with tempfile.TemporaryDirectory(prefix="kbrec-workers-") as tmp:
        db = Path(tmp) / "kbrec.sqlite"
        prepare_store(args.db, args.corpus, db)
        # The first start embeds what the store lacks; every measured start then loads.
        with start(args, str(db), tickets[0]):
            pass
        rows = throughput_rows(args, db, workload, tickets)
        out += ["", load_table(rows), "", speedup_table(rows, args.workers)]
        if args.probes:
            store = args.feed_store
            if store is None:
                store = str(Path(tmp) / "feed.sqlite")
                shutil.copy(db, store)
            else:  # an empty database: the articles, embedded by the first start
                seed_store(args.corpus, store, shlex.split(args.launcher))
            kind = "PostgreSQL" if "://" in store else "SQLite"
            print(f"feed: {args.probes} probes on {kind}", file=sys.stderr)
            delays = feed_delays(args, store, tickets[0])
            out += ["", delay_table(kind, delays, args.write_rate)]
    out += ["", f"Load average at end: {load_average()}."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
