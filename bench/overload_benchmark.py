"""Overload: what clients get from kbrec at three times its capacity.

    .venv/bin/python -m bench.overload_benchmark --db /tmp/bench-seeded.db \
        --launcher /work/tools/tree_kbrec.sh \
        --config 'before=--tree /tmp/kbrec-before' --config 'after=--tree /work/main'

1. Capacity: the first --config's server under a closed loop of
   --capacity-concurrency clients (saturated: a full batch waits while one runs);
   capacity = its successful requests per second.
2. Overload: each --config's server (a fresh copy of the store each) under an open
   loop at --overload × capacity (Poisson arrivals, the ticket workload in a fixed
   order), every client giving up after --timeout-s (a realistic client timeout: the
   harness closes the connection). A row says what clients got in the measurement
   window: goodput (answers within the timeout per second) and its share of
   capacity, the answers' p50/p99 from when each request was due (what the target
   judges) and their p99 from when it was sent (the difference is the generator's
   lag on a busy machine), how many were refused with 503 and how fast (p50/p99
   from sending to the 503), timeouts, and the
   query rows the server embedded over the level beyond the answers it gave (work for
   clients that had left or were refused after embedding).
3. The targets of `--max-queue-ms` admission: accepted p99 <= 2 × max-queue-ms,
   refusals answered in <= 10 ms p99, goodput >= 90% of capacity.

Markdown tables go to stdout, progress to stderr. The generator runs on the same
machine as the server; the load average and the CPU of other processes are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import shlex
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from bench.serving import (
    SERVER_CPU,
    SYSTEM_CPU,
    load_average,
    parse_configs,
    prepare_store,
    progress,
    start_server,
)
from kbrec.records import QUERIES_FILE
from loadtest.kbrec_process import KBREC, ServeProcess, batch_counters
from loadtest.point import GENERATOR_CPU, Measured, level_config, measure
from loadtest.proc_stats import system_busy_cpu_s
from loadtest.runner import Load
from loadtest.setup import kbrec_target
from loadtest.sources import tickets_workload
from loadtest.target import TIMEOUT, Done, Target
from loadtest.tickets import ticket_texts
from loadtest.workload import Query, Workload, in_order

TOP_K: Final = 5
SEED: Final = 7
REFUSED: Final = "HTTP 503"
REFUSAL_P99_TARGET_MS: Final = 10.0
GOODPUT_TARGET: Final = 0.9
ACCEPTED_P99_FACTOR: Final = 2.0  # accepted p99 <= 2 × max-queue-ms


class TimedTarget:
    """A harness target that also notes, per request, when it ended, how long it took
    from being sent, and how (the harness keeps latencies of successes only)."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner
        self.timeout_s = inner.timeout_s
        self.outcomes: list[tuple[float, float, str | None]] = []  # (ended, seconds, error)
        self._loop = asyncio.get_running_loop()

    @property
    def in_flight(self) -> int:
        return self.inner.in_flight

    async def check(self) -> None:
        await self.inner.check()

    def submit(self, item: int, done: Done) -> bool:
        sent = self._loop.time()

        def ended(item: int, at: float, error: str | None, retry_after_s: float) -> None:
            self.outcomes.append((at, at - sent, error))
            done(item, at, error, retry_after_s)

        return self.inner.submit(item, ended)

    def abandon(self) -> int:
        return self.inner.abandon()

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class Level:
    server: str
    mode: str  # "closed c=32" or "open 120/s"
    offered_per_s: float | None  # the open loop's rate
    measured: Measured
    refusal_ms: list[float]  # 503s that ended in the window, from sending to the answer
    answered_ms: list[float]  # 2xx that ended in the window, from sending to the answer

    @property
    def goodput(self) -> float:
        """Answers (2xx) per second in the window: each within the client's timeout."""
        return self.measured.window.throughput

    def errors(self, kind: str) -> int:
        return self.measured.window.errors.get(kind, 0)

    @property
    def other_failures(self) -> str:
        window = self.measured.window
        other = Counter({k: n for k, n in window.errors.items() if k not in (REFUSED, TIMEOUT)})
        other.update({f"dropped ({k})": n for k, n in window.dropped.items()})
        return ", ".join(f"{kind}: {n}" for kind, n in sorted(other.items())) or "0"

    @property
    def refusal_p99_ms(self) -> float | None:
        return percentile(self.refusal_ms, 99)

    @property
    def answered(self) -> bool:
        return self.measured.window.ok > 0

    @property
    def rows_for_nobody(self) -> int:
        """Query rows embedded over the level (warm-up and drain included) beyond the
        answers given over the same span."""
        totals = self.measured.result.totals
        answered = 0 if totals is None else totals.ok
        return max(int(self.measured.spent["batch_rows"]) - answered, 0)


def percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def run_level(
    server: ServeProcess,
    name: str,
    mode: str,
    load: float,
    workload: Workload,
    order: Sequence[Query],
    args: argparse.Namespace,
) -> Level:
    config = level_config(mode, load, args.warmup, args.duration, poisson=mode == "open", seed=SEED)
    cap = int(load) if mode == "closed" else args.max_in_flight
    plain = kbrec_target(server.url, workload, TOP_K, cap, args.timeout_s)
    timed: list[TimedTarget] = []

    async def make() -> Target:
        timed.append(TimedTarget(await plain()))
        return timed[-1]

    run = Load(make, in_order(workload, order), workload.ops, server.url, "tickets")

    def cpu() -> dict[str, float]:
        return {SERVER_CPU: server.cpu_s(), SYSTEM_CPU: system_busy_cpu_s()}

    measured = measure(config, run, [cpu, lambda: batch_counters(server.url)])
    window = measured.window
    assert window.end is not None
    in_window = [
        (seconds * 1000, error)
        for ended, seconds, error in timed[-1].outcomes
        if window.start <= ended < window.end
    ]
    refusals = [taken for taken, error in in_window if error == REFUSED]
    answers = [taken for taken, error in in_window if error is None]
    label = f"closed c={load:.0f}" if mode == "closed" else f"open {load:.0f}/s"
    offered = load if mode == "open" else None
    level = Level(name, label, offered, measured, refusals, answers)
    refusal = level.refusal_p99_ms
    progress(
        f"{name} {label}",
        measured,
        f", refusal p99 {refusal:.1f} ms" if refusal is not None else "",
    )
    return level


def level_table(levels: Sequence[Level], capacity: float) -> str:
    lines = [
        "| server | load | goodput req/s | ÷ capacity | answered p50 ms | answered p99 ms "
        "| answered p99 ms from sending | 503 refusals | refusal p50 ms | refusal p99 ms "
        "| timeouts | other errors | rows embedded for nobody | server CPU (cores) "
        "| other CPU (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for level in levels:
        m = level.measured
        ours = m.spent[SERVER_CPU] + m.spent[GENERATOR_CPU]
        other = max(m.spent[SYSTEM_CPU] - ours, 0.0) / m.elapsed_s
        answered_p50 = m.latency_ms("p50") if level.answered else None
        answered_p99 = m.latency_ms("p99") if level.answered else None
        lines.append(
            f"| {level.server} | {level.mode} | {level.goodput:.1f} "
            f"| {level.goodput / capacity:.0%} | {ms(answered_p50)} | {ms(answered_p99)} "
            f"| {ms(percentile(level.answered_ms, 99))} | {level.errors(REFUSED)} "
            f"| {ms(percentile(level.refusal_ms, 50))} | {ms(level.refusal_p99_ms)} "
            f"| {level.errors(TIMEOUT)} | {level.other_failures} | {level.rows_for_nobody} "
            f"| {m.cores(SERVER_CPU):.2f} | {other:.2f} |"
        )
    return "\n".join(lines)


def target_table(levels: Sequence[Level], capacity: float, max_queue_ms: float) -> str:
    accepted_ms = ACCEPTED_P99_FACTOR * max_queue_ms
    lines = [
        f"| server | answered p99 <= {accepted_ms:.0f} ms | refusal p99 <= "
        f"{REFUSAL_P99_TARGET_MS:.0f} ms | goodput >= {GOODPUT_TARGET:.0%} of capacity |",
        "|---|---|---|---|",
    ]

    def verdict(ok: bool, text: str) -> str:
        return f"{'yes' if ok else 'no'} ({text})"

    for level in levels:
        if level.offered_per_s is None:
            continue
        refusal = level.refusal_p99_ms
        share = level.goodput / capacity
        if level.answered:
            p99 = level.measured.latency_ms("p99")
            answered = verdict(p99 <= accepted_ms, f"{p99:.0f} ms")
        else:
            answered = verdict(False, "nothing answered")
        if refusal is None:
            fast_refusals = verdict(False, "no refusal")
        else:
            fast_refusals = verdict(refusal <= REFUSAL_P99_TARGET_MS, f"{refusal:.1f} ms")
        lines.append(
            f"| {level.server} | {answered} | {fast_refusals} "
            f"| {verdict(share >= GOODPUT_TARGET, f'{share:.0%}')} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--db", type=Path, help="a seeded db to copy (default: import --corpus)")
    parser.add_argument("--launcher", default=shlex.join(KBREC))
    parser.add_argument(
        "--config",
        action="append",
        default=[],
        help="'name=extra kbrec serve flags' (repeatable; the first measures capacity)",
    )
    parser.add_argument("--capacity-concurrency", type=int, default=32)
    parser.add_argument("--capacity", type=float, help="req/s: skip the capacity level")
    parser.add_argument("--overload", type=float, default=3.0, help="offered load ÷ capacity")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="the clients' timeout")
    parser.add_argument("--max-in-flight", type=int, default=512)
    parser.add_argument("--max-queue-ms", type=float, default=500.0, help="for the targets")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per window")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configs = parse_configs(args.config) or [("kbrec", [])]
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    workload = tickets_workload(args.corpus)
    started = datetime.datetime.now().astimezone().isoformat(timespec="minutes")
    print(f"overload benchmark {started}; load average {load_average()}", file=sys.stderr)
    levels: list[Level] = []
    capacity: float | None = args.capacity
    with tempfile.TemporaryDirectory(prefix="kbrec-overload-") as tmp:
        for name, flags in configs:
            db = Path(tmp) / f"{name}.sqlite"
            prepare_store(args.db, args.corpus, db)
            serve = ["--repository", str(args.repository), "--db", str(db)]
            serve += ["--repository-poll-s", "0", *flags]
            server, _ = start_server(name, serve, args.launcher, tickets[0], TOP_K)
            with server:
                if capacity is None:
                    concurrency = float(args.capacity_concurrency)
                    closed = run_level(server, name, "closed", concurrency, workload, tickets, args)
                    levels.append(closed)
                    capacity = closed.goodput
                rate = args.overload * capacity
                levels.append(run_level(server, name, "open", rate, workload, tickets, args))
    assert capacity is not None
    ended = load_average()
    print(f"## Overload at {args.overload:g} × capacity ({started})\n")
    print(
        f"Capacity {capacity:.1f} req/s (closed loop c={args.capacity_concurrency} on "
        f"{configs[0][0]}); open loop {args.overload:g} × that, Poisson, client timeout "
        f"{args.timeout_s:g} s, warm-up {args.warmup:g} s, window {args.duration:g} s.\n"
    )
    print(level_table(levels, capacity))
    print()
    print(target_table(levels, capacity, args.max_queue_ms))
    described = "; ".join(f"{name}: {shlex.join(flags) or '(no flags)'}" for name, flags in configs)
    print(f"\nConfigs: {described}.")
    print(f"Load average at end: {ended}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
