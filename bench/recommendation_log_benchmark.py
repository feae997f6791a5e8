"""What the recommendation log and feedback cost a request: p50 and p99 with the log on
and off, in one run.

    .venv/bin/python -m bench.recommendation_log_benchmark --repository model_repository \
        --corpus data/corpus --db data/kbrec.sqlite > /tmp/log.md

Two servers on copies of one store: `kbrec serve --recommendation-log` and
`--no-recommendation-log`. Each round measures, in an order that alternates from
round to round (so drift on a shared machine hits every configuration alike), one
open-loop level (--rate, Poisson, the ticket workload) on:

- "log off": the server without the log;
- "log on": the server with it (every answer queued and written in batches);
- "log on + feedback": the same, while a thread also sends --feedback-rate feedback
  events per second (clicks on answers it got before the window): the log's writes,
  the feedback's lookups and inserts, all on the same store and cores.

A row: req/s, p50/p90/p99, errors, the server's CPU per request, the log's written and
dropped counts from /metrics; the feedback thread's own p50/p99. Then the ratio of
each configuration's p50 and p99 to "log off" in the same round (the target: p50
within 5 %).

On a shared machine those ratios carry the neighbours' noise, so the log's own cost is
also measured in this process (--in-process N, 0: skip): N calls of
`RecommendationLog.record` (what a request pays), then the writer's batches into a
SQLite store (CPU per logged request, and wall time per batch with its fsync).
Markdown to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.serving import TOP_K, kbrec_level, load_average, prepare_store, progress, run_header
from kbrec.records import QUERIES_FILE
from loadtest.kbrec_process import KBREC, ServeProcess, check_recommendation, fetch_text
from loadtest.point import Measured, level_config
from loadtest.sources import tickets_workload
from loadtest.tickets import ticket_texts
from loadtest.workload import Query
from server.experiments.recommendation_log import BATCH_ROWS, RecommendationLog
from server.storage.experiment_tables import LoggedRecommendation
from server.storage.sqlite import SqliteArticleStore
from server.storage.store import utc_now

SERVER_CPU: Final = "server_cpu_s"
LOG_OFF, LOG_ON, WITH_FEEDBACK = "log off", "log on", "log on + feedback"
CONFIGS: Final = (LOG_OFF, LOG_ON, WITH_FEEDBACK)
JSON: Final = {"content-type": "application/json"}


@dataclass(frozen=True)
class Row:
    round: int
    config: str
    measured: Measured
    log_written: float  # during the level, from /metrics
    log_dropped: float
    feedback_ms: list[float] = field(default_factory=list)  # the feedback thread's latencies


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--db", type=Path, help="a seeded db to copy (default: import --corpus)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=30.0, help="requests/s of each level")
    parser.add_argument("--feedback-rate", type=float, default=10.0, help="events/s")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    parser.add_argument("--serve-flags", default="", help="more `kbrec serve` flags, both servers")
    parser.add_argument("--launcher", default=shlex.join(KBREC))
    parser.add_argument("--in-process", type=int, default=50_000, help="logged rows (0: skip)")
    return parser.parse_args(argv)


def post(url: str, path: str, body: object) -> dict:
    request = urllib.request.Request(f"{url}{path}", json.dumps(body).encode(), JSON)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def log_counters(url: str) -> dict[str, float]:
    values = {"log_written": 0.0, "log_dropped": 0.0}
    for line in fetch_text(f"{url}/metrics").splitlines():
        for name, key in (
            ("kbrec_recommendation_log_written_total ", "log_written"),
            ("kbrec_recommendation_log_dropped_total ", "log_dropped"),
        ):
            if line.startswith(name):
                values[key] = float(line.split()[-1])
    return values


class FeedbackSender:
    """Clicks on the top article of answers collected beforehand, at a steady rate."""

    def __init__(self, url: str, answers: list[dict], rate: float) -> None:
        self._url, self._answers, self._rate = url, answers, rate
        self._stop = threading.Event()
        self.latencies_ms: list[float] = []
        self.errors = 0
        self._thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> FeedbackSender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _send(self) -> None:
        events = ("clicked", "helpful", "not_helpful")
        for n in range(len(self._answers) * len(events)):
            if self._stop.wait(1 / self._rate):
                return
            answer = self._answers[n % len(self._answers)]
            event = {
                "request_id": answer["request_id"],
                "article_id": answer["articles"][0]["article_id"],
                "event": events[n // len(self._answers)],  # each (request, event) once
            }
            started = time.perf_counter()
            try:
                post(self._url, "/v1/feedback", event)
            except OSError:
                self.errors += 1
                continue
            self.latencies_ms.append((time.perf_counter() - started) * 1000)


def start(args: argparse.Namespace, db: Path, probe: Query, *flags: str) -> ServeProcess:
    serve_args = [
        "--db", str(db), "--repository", str(args.repository), "--repository-poll-s", "0",
        *shlex.split(args.serve_flags), *flags,
    ]  # fmt: skip
    server = ServeProcess(serve_args, shlex.split(args.launcher))
    try:
        server.wait_ready()
        check_recommendation(server.url, probe.account_id, probe.text, TOP_K)
    except BaseException:
        server.stop()
        raise
    return server


def rows_of(args: argparse.Namespace, tmp: Path, tickets: Sequence[Query]) -> list[Row]:
    workload = tickets_workload(args.corpus)
    off_db, on_db = tmp / "off.sqlite", tmp / "on.sqlite"
    prepare_store(args.db, args.corpus, off_db)
    prepare_store(off_db, args.corpus, on_db)
    rows = []
    with (
        start(args, off_db, tickets[0], "--no-recommendation-log") as off,
        start(args, on_db, tickets[0], "--recommendation-log") as on,
    ):
        # Answers to click on: enough that no (request, event) is sent twice.
        needed = int(args.feedback_rate * (args.warmup + args.duration) * args.rounds / 3) + 10
        answers = [
            post(on.url, "/v1/recommendations", {"account_id": q.account_id, "text": q.text})
            for q in (tickets[i % len(tickets)] for i in range(needed))
        ]
        answers = [a for a in answers if a["articles"]]
        used = 0
        for round_ in range(1, args.rounds + 1):
            order = CONFIGS if round_ % 2 else CONFIGS[::-1]
            for config in order:
                server = off if config == LOG_OFF else on
                conf = level_config("open", args.rate, args.warmup, args.duration, poisson=True)
                before = log_counters(server.url)
                if config == WITH_FEEDBACK:
                    share = answers[used : used + len(answers) // args.rounds]
                    used += len(share)
                    with FeedbackSender(on.url, share, args.feedback_rate) as sender:
                        measured = kbrec_level(server, workload, tickets, conf, TOP_K)
                    feedback = sender.latencies_ms
                else:
                    measured, feedback = kbrec_level(server, workload, tickets, conf, TOP_K), []
                after = log_counters(server.url)
                extra = f", feedback p50 {pct(feedback, 50):.1f} ms" if feedback else ""
                progress(f"round {round_} {config}", measured, extra)
                rows.append(
                    Row(
                        round_,
                        config,
                        measured,
                        after["log_written"] - before["log_written"],
                        after["log_dropped"] - before["log_dropped"],
                        feedback,
                    )
                )
    return rows


def pct(values: Sequence[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def load_table(rows: Sequence[Row]) -> str:
    lines = [
        "| round | server | req/s | p50 ms | p90 ms | p99 ms | errors | server CPU µs/req "
        "| logged | dropped | feedback events | feedback p50 ms | feedback p99 ms |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.measured
        fb = r.feedback_ms
        lines.append(
            f"| {r.round} | {r.config} | {m.window.throughput:.1f} | {m.latency_ms('p50'):.1f} "
            f"| {m.latency_ms('p90'):.1f} | {m.latency_ms('p99'):.1f} | {m.failures} "
            f"| {m.ms_per_request(SERVER_CPU) * 1000:.0f} | {r.log_written:.0f} "
            f"| {r.log_dropped:.0f} | {len(fb) or '–'} "
            f"| {f'{pct(fb, 50):.1f}' if fb else '–'} | {f'{pct(fb, 99):.1f}' if fb else '–'} |"
        )
    return "\n".join(lines)


def ratio_table(rows: Sequence[Row]) -> str:
    lines = [
        "| round | log on ÷ off, p50 | p99 | log on + feedback ÷ off, p50 | p99 |",
        "|---:|---:|---:|---:|---:|",
    ]
    by_key = {(r.round, r.config): r.measured for r in rows}
    ratios: dict[str, list[float]] = {}
    for round_ in sorted({r.round for r in rows}):
        off = by_key[(round_, LOG_OFF)]
        cells = []
        for config in (LOG_ON, WITH_FEEDBACK):
            for name in ("p50", "p99"):
                ratio = by_key[(round_, config)].latency_ms(name) / off.latency_ms(name)
                ratios.setdefault(f"{config} {name}", []).append(ratio)
                cells.append(f"{ratio:.3f}")
        lines.append(f"| {round_} | {' | '.join(cells)} |")
    medians = [
        f"{statistics.median(ratios[f'{c} {n}']):.3f}"
        for c in (LOG_ON, WITH_FEEDBACK)
        for n in ("p50", "p99")
    ]
    lines.append(f"| median | {' | '.join(medians)} |")
    return "\n".join(lines)


async def in_process_cost(db: Path, rows: int) -> dict[str, float]:
    """µs per logged request: `record` (on the request path: build the row as the service
    does, queue it), the writer's CPU off the path, and ms per batch of BATCH_ROWS."""
    store = await SqliteArticleStore.open(db)
    log = RecommendationLog(store, flush_s=3600, max_queue=rows)
    ids, scores = ("a1", "a2", "a3", "a4", "a5"), (0.9, 0.8, 0.7, 0.6, 0.5)
    started = time.perf_counter()
    for i in range(rows):
        row = LoggedRecommendation(f"{i:032x}", "acme", 1, ids, scores, utc_now(), "e", "control")
        log.record(row)
    record_s = time.perf_counter() - started
    cpu, wall = time.process_time(), time.perf_counter()
    await log.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await store.close()
    return {
        "record_us": record_s / rows * 1e6,
        "write_cpu_us": cpu / rows * 1e6,
        "batch_ms": wall / (rows / BATCH_ROWS) * 1000,
    }


def cost_table(cost: dict[str, float], rows: int) -> str:
    return "\n".join(
        [
            "| logged requests | request path (build + queue), µs/request "
            f"| writer CPU, µs/request | writer wall per batch of {BATCH_ROWS} (fsync "
            "included), ms |",
            "|---:|---:|---:|---:|",
            f"| {rows} | {cost['record_us']:.1f} | {cost['write_cpu_us']:.1f} "
            f"| {cost['batch_ms']:.1f} |",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    out = run_header(
        "bench.recommendation_log_benchmark", "Generator and both servers share the machine."
    )
    with tempfile.TemporaryDirectory(prefix="kbrec-log-") as tmp:
        rows = rows_of(args, Path(tmp), tickets)
        out += ["", load_table(rows), "", ratio_table(rows)]
        if args.in_process:
            cost = asyncio.run(in_process_cost(Path(tmp) / "cost.sqlite", args.in_process))
            out += ["", cost_table(cost, args.in_process)]
    out += ["", f"Load average at end: {load_average()}."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
