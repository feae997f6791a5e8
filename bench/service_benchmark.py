"""Recommendation service benchmark: raw encoder limit, start-up, throughput and latency.

    .venv/bin/python -m bench.service_benchmark > /tmp/service_benchmark.md

One run prints Markdown tables for:

1. the raw encoder (ONNX Runtime alone, default threads) on the ticket texts of
   loadtest/tickets.py, batches padded to their longest member (bench/raw_encoder.py):
   the limit of this machine (queries/s from the mean time per batch: the whole mix);
2. `kbrec serve` start-up on a fresh store (every article embedded) and on a
   second start with the vectors stored;
3. each server configuration (default: micro-batching on, and off with
   --max-batch-size 1): closed-loop levels at fixed concurrencies and open-loop levels
   at fixed Poisson arrival rates, whose latencies count from each request's
   scheduled send time, so a stalled server or generator cannot hide queueing.

Settings are compared by naming server configurations, each measured in the same run:

    .venv/bin/python -m bench.service_benchmark --db seeded.sqlite --concurrency 4 64 \
        --config "off=--max-batch-size 1" --config "wait 0=--max-wait-ms 0"

(--db reuses a store whose vectors are already embedded and skips the fresh-store
start-up; --launcher runs the server through another command, e.g. `taskset`.)

The load is `kbrec loadtest`'s (loadtest.point): its HTTP client, loops and recorder,
so a level's percentiles are those of the successful requests completed in its
window, drained ones included. The generator shares the cores with the server: its
CPU per request is reported, and --httpx-check repeats a closed-loop level through
httpx to compare.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.raw_encoder import EncoderRow, encoder_table, raw_encoder_rows
from bench.serving import (
    LOADTEST,
    TOP_K,
    LevelPlan,
    LoadRow,
    StartResult,
    load_average,
    load_table,
    parse_configs,
    prepare_store,
    run_levels,
    start_server,
    start_table,
)
from kbrec.records import QUERIES_FILE
from kbrec.repository import MODEL_FILE, TOKENIZER_FILE, read_metadata, version_dir
from kbrec.tokenization import TextTokenizer
from loadtest.kbrec_process import KBREC
from loadtest.sources import tickets_workload
from loadtest.tickets import ticket_texts
from loadtest.workload import Query


def summary_table(
    rows: Sequence[LoadRow], raw_best: float, single_ms: float, configs: Sequence[str]
) -> str:
    lines = [
        "| server | saturation req/s | of raw encoder best | open-loop p99 ms "
        "| p99 target (3 × single query) | open loop offered → achieved req/s, errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    target = 3 * single_ms
    for config in configs:
        mine = [r for r in rows if r.config == config]
        closed = [r for r in mine if r.mode.startswith("closed") and r.client == LOADTEST]
        best = max(r.throughput for r in closed)
        opened = next(r for r in mine if r.mode.startswith("open"))
        p99 = opened.measured.latency_ms("p99")
        lines.append(
            f"| {config} | {best:.1f} | {best / raw_best:.0%} "
            f"({'meets' if best >= 0.85 * raw_best else 'misses'} 85%) "
            f"| {p99:.1f} | {target:.1f} ({'meets' if p99 < target else 'misses'}) "
            f"| {opened.mode.removeprefix('open ')} → {opened.throughput:.1f}, "
            f"{opened.measured.failures} |"
        )
    return "\n".join(lines)


def serve_args(args: argparse.Namespace, db: Path, flags: Sequence[str]) -> list[str]:
    return ["--db", str(db), "--repository", str(args.repository), *flags]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--version", type=int, default=1, help="encoder version directory")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    parser.add_argument("--encoder-seconds", type=float, default=2.5, help="per batch size")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    parser.add_argument(
        "--open-load", type=float, default=0.7, help="open-loop rate as a share of raw best q/s"
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        nargs="+",
        help="open-loop rates in requests/s (override --open-load; the first is judged)",
    )
    parser.add_argument(
        "--config",
        dest="configs",
        action="append",
        help="'name=kbrec serve flags' (repeatable; default: batching on and off)",
    )
    parser.add_argument(
        "--httpx-check", type=int, default=16, help="concurrency of the httpx run (0: none)"
    )
    parser.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="closed loops send again at once after a 503, as a client that ignores "
        "Retry-After does (default: each client waits as asked)",
    )
    parser.add_argument(
        "--launcher",
        default=shlex.join(KBREC),
        help="command that runs the kbrec CLI for the server (e.g. under taskset)",
    )
    parser.add_argument(
        "--db", type=Path, help="reuse this seeded db (skips the fresh-store start-up timing)"
    )
    args = parser.parse_args(argv)
    args.configs = args.configs or ["batching on (defaults)=", "batching off=--max-batch-size 1"]
    return args


def ticket_note(rows: Sequence[Sequence[int]], tickets: Sequence[Query]) -> str:
    lengths = [len(r) for r in rows]
    words = [len(t.text.split()) for t in tickets]
    return (
        f"{len(tickets)} tickets in {len({t.account_id for t in tickets})} accounts, "
        f"{min(words)}–{max(words)} words (median {np.median(words):.0f}), "
        f"{min(lengths)}–{max(lengths)} tokens (median {np.median(lengths):.0f}, "
        f"mean {np.mean(lengths):.1f})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    source = version_dir(args.repository, args.version)
    metadata = read_metadata(source)
    tokenizer = TextTokenizer(source / TOKENIZER_FILE, metadata.max_length)
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    rows = tokenizer.encode([t.text for t in tickets])
    command = shlex.join([".venv/bin/python", "-m", "bench.service_benchmark", *sys.argv[1:]])
    out: list[str] = [
        f"Run {datetime.date.today().isoformat()}: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared machine), Python "
        f"{sys.version.split()[0]}, ONNX Runtime {ort.__version__}; load average at start "
        f"{load_average()}.",
        "",
        f"Requests: {ticket_note(rows, tickets)}; top_k {TOP_K}. Closed loops: "
        + (
            "a refused client sends again at once (Retry-After ignored)."
            if args.ignore_retry_after
            else "a refused client waits out the 503's Retry-After before its next request."
        ),
    ]

    print("raw encoder", file=sys.stderr)
    encoder = raw_encoder_rows(source / MODEL_FILE, rows, args.batches, args.encoder_seconds)
    best = max((r for r in encoder if r.order == "mixed"), key=lambda r: r.queries_per_s)
    single = next(r for r in encoder if r.batch == 1)
    out += ["", "### Raw encoder (ONNX Runtime alone, default threads)", "", encoder_table(encoder)]
    out += [
        "",
        f"Limit of this machine: {best.queries_per_s:.0f} queries/s (batch {best.batch}; "
        "rows over time across the whole ticket mix, from the mean ms per batch); "
        f"one query {single.median_ms:.1f} ms "
        f"(median over the tickets; p99 {single.p99_ms:.1f} ms).",
    ]

    with tempfile.TemporaryDirectory(prefix="kbrec-bench-") as tmp:
        results, start_md = run_service(args, Path(tmp) / "kbrec.sqlite", best, tickets)
    names = [name for name, _ in parse_configs(args.configs)]
    out += ["", "### Service start", "", start_md, "", "### Service load", "", load_table(results)]
    out += ["", summary_table(results, best.queries_per_s, single.median_ms, names)]
    out += ["", f"Load average at end: {load_average()}."]
    print("\n".join(out))
    return 0


def run_service(
    args: argparse.Namespace, db: Path, best: EncoderRow, tickets: Sequence[Query]
) -> tuple[list[LoadRow], str]:
    """Start-up timings, then every configuration's load levels; (rows, start table)."""
    starts: list[StartResult] = []
    import_s = prepare_store(args.db, args.corpus, db)
    if import_s is not None:
        label = "first start, spawn → /readyz 200 (embeds every article)"
        server, first = start_server(label, serve_args(args, db, []), args.launcher, tickets[0])
        server.stop()
        starts.append(first)
    rates = tuple(args.open_rate or [round(args.open_load * best.queries_per_s)])
    plan = LevelPlan(
        args.warmup,
        args.duration,
        tuple(args.concurrency),
        rates,
        TOP_K,
        honour_retry_after=not args.ignore_retry_after,
    )
    workload = tickets_workload(args.corpus)
    results: list[LoadRow] = []
    for i, (name, flags) in enumerate(parse_configs(args.configs)):
        label = f"start with vectors stored, spawn → /readyz 200: {name}"
        server, start = start_server(label, serve_args(args, db, flags), args.launcher, tickets[0])
        starts.append(start)
        with server:
            check = args.httpx_check if i == 0 and args.httpx_check > 0 else None
            results += run_levels(name, server, workload, tickets, plan, check)
    return results, start_table(starts, import_s)


if __name__ == "__main__":
    raise SystemExit(main())
