"""`kbrec loadtest`: load kbrec's HTTP API (or Triton directly) and report latency honestly.

The flags map onto `loadtest.runner.RunConfig`; the work is in the `loadtest` package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kbrec.errors import CommandError

DESCRIPTION = """\
Send real queries to one URL and measure latency percentiles (HDR histogram),
throughput and errors. Open loop (--mode open, the default): requests are due on
a constant or Poisson schedule and latency counts from the due time, so a stalled
server shows in the percentiles; requests that cannot be sent (in-flight cap, or
the schedule fell behind by more than --max-lag-ms) are counted as dropped. Closed
loop (--mode closed): a fixed number of requests in flight, like perf_analyzer.
--sweep runs several rates or concurrencies, each measured over --window-s windows
until the last three agree within --stability on throughput and p99, and stops at
the first step whose p99 passes --max-p99-ms. Every run is bounded by --duration
and --max-requests; Ctrl-C ends it with a partial report (exit status 130). Only
the URL given is ever contacted: no redirects are followed. The Markdown summary
goes to stdout, a progress line to stderr every second; --out DIR also writes
perf.csv (perf_analyzer's -f format), summary.json, summary.md and two PNG plots.
"""

EPILOG = """\
examples:
  kbrec loadtest --url http://127.0.0.1:8000 --rate 50 --duration 20
  kbrec loadtest --url http://127.0.0.1:8000 --sweep 20,40,80 --max-p99-ms 200 --out reports/a
  kbrec loadtest --url http://127.0.0.1:8000 --mode closed --sweep 1,4,16 --workload tickets
  kbrec loadtest --url grpc://127.0.0.1:8001 --target triton --repository model_repository --rate 50
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "loadtest",
        help="load-test the HTTP API or Triton (open or closed loop, sweeps, reports)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = parser.add_argument_group("target")
    target.add_argument(
        "--url", required=True, help="http://HOST:PORT (kbrec) or grpc://HOST:PORT (triton)"
    )
    target.add_argument("--target", choices=("kbrec", "triton"), default="kbrec")
    target.add_argument("--timeout-s", type=float, default=10.0, help="per request (default: 10)")
    target.add_argument(
        "--max-in-flight",
        type=int,
        default=1000,
        help="requests in flight at most; more are dropped (default: 1000)",
    )
    target.add_argument(
        "--top-k", type=int, default=5, help="kbrec: articles asked for (default: 5)"
    )
    target.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="triton: repository holding the version's tokenizer.json (default: model_repository)",
    )
    target.add_argument("--model", default="encoder", help="triton: model name (default: encoder)")
    target.add_argument("--model-version", type=int, help="triton: version (default: newest)")

    load = parser.add_argument_group("load")
    load.add_argument("--mode", choices=("open", "closed"), default="open")
    load.add_argument("--rate", type=float, default=10.0, help="open: requests/s (default: 10)")
    load.add_argument("--poisson", action="store_true", help="open: Poisson arrivals, not constant")
    load.add_argument("--concurrency", type=int, default=1, help="closed: in flight (default: 1)")
    load.add_argument(
        "--ignore-retry-after",
        action="store_true",
        help="closed: after a 429/503 send again at once, as a client that ignores "
        "Retry-After does (default: wait as the answer asks)",
    )
    load.add_argument(
        "--sweep",
        type=_numbers,
        metavar="A,B,...",
        help="rates (open) or concurrencies (closed) to step through (instead of --rate or "
        "--concurrency)",
    )
    load.add_argument(
        "--max-p99-ms", type=float, help="sweep: stop after a step with p99 above this"
    )
    load.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="sweep: stop after a step with more failed+dropped requests (default: 0.01)",
    )
    load.add_argument(
        "--max-lag-ms",
        type=float,
        default=1000.0,
        help="open: drop requests due longer ago than this (default: 1000)",
    )

    bounds = parser.add_argument_group("measurement and bounds")
    bounds.add_argument(
        "--duration",
        type=float,
        help="seconds for the whole run (default: 30; sweep: steps x (warm-up + windows cap "
        "+ 2 s to drain))",
    )
    bounds.add_argument("--max-requests", type=int, default=1_000_000, help="(default: 1000000)")
    bounds.add_argument("--warmup-s", type=float, default=2.0, help="per step (default: 2)")
    bounds.add_argument("--window-s", type=float, default=5.0, help="window length (default: 5)")
    bounds.add_argument("--max-windows", type=int, default=10, help="sweep: per step (default: 10)")
    bounds.add_argument("--stability", type=float, default=0.10, help="sweep (default: 0.10)")

    workload = parser.add_argument_group("workload")
    workload.add_argument(
        "--workload",
        default="corpus:data/corpus",
        help="corpus:DIR (held-out queries), file:PATH ({account_id, text} JSON lines) or "
        "tickets[:DIR] (loadtest/tickets.py) (default: corpus:data/corpus)",
    )
    workload.add_argument("--splits", default="validation,test", help="corpus: query splits")
    workload.add_argument(
        "--zipf",
        type=float,
        default=1.1,
        help="account skew: P(rank r) ~ 1/r^s; 0 is uniform (default: 1.1)",
    )
    workload.add_argument(
        "--write-fraction",
        type=float,
        default=0.0,
        help="kbrec: share of requests that PUT an article (ids kbrec-loadtest-N) (default: 0)",
    )
    workload.add_argument("--seed", type=int, default=0, help="(default: 0)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, metavar="DIR", help="write the report files here")
    output.add_argument("--title", help="report title (default: target and mode)")
    parser.set_defaults(func=run)


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text!r}") from exc
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def run(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from loadtest.report import write_reports
    from loadtest.report.summary_json import run_summary
    from loadtest.report.summary_markdown import markdown_summary
    from loadtest.runner import execute
    from loadtest.setup import SetupError, build_load, run_config
    from loadtest.target import TargetError

    try:
        config = run_config(args)
        load = build_load(args, config)
        result = asyncio.run(execute(config, load))
    except (SetupError, TargetError) as exc:
        raise CommandError(str(exc)) from exc
    title = args.title or f"{args.target} {config.mode} loop"
    summary = run_summary(result)
    print(markdown_summary(summary, title), end="")
    if args.out is not None:
        for path in write_reports(summary, args.out, title):
            print(f"wrote {path}", file=sys.stderr)
    return 130 if result.interrupted else 0
