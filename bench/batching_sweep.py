"""The p99-target batcher against the fixed-wait batcher over a sweep of offered load.

    .venv/bin/python -m bench.batching_sweep > /tmp/batching_sweep.md

One run:

1. seeds a store (or copies --db) and starts a probe server with --max-wait-ms 0 (a
   query alone leaves at once, so nothing it measures is a deliberate wait): one
   query's latency is the median of a closed loop at concurrency 1, and the
   saturation is the throughput of a closed loop at --saturation-concurrency;
2. sets the target T to --target-multiple (3) × that one query's latency;
3. starts two servers side by side on copies of the store: the fixed-wait batcher
   (the defaults) and the p99-target batcher (`--target-p99-ms T`), and runs the
   same open-loop Poisson rates against both, alternating which goes first at each
   rate, so drift on a shared machine hits both alike; the rates are --fractions of
   the saturation, or --rates;
4. prints per rate and configuration the achieved req/s, p50, p99, whether p99 <= T
   with no error and no dropped request, the errors and drops and the mean batch; and
   per configuration the share of the rate range where the target is met (each rate
   stands for the half-gaps to its neighbours, from the lowest rate to the highest).

Markdown goes to stdout (command line and date first), progress to stderr. Only one
server carries load at a time; the idle one polls nothing (--repository-poll-s 0).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.serving import (
    OPEN_LOOP_SEED,
    TOP_K,
    kbrec_level,
    prepare_store,
    progress,
    run_header,
    start_server,
)
from kbrec.records import QUERIES_FILE
from loadtest.kbrec_process import KBREC, ServeProcess
from loadtest.point import Measured, level_config
from loadtest.sources import tickets_workload
from loadtest.tickets import ticket_texts
from loadtest.workload import Query, Workload

FIXED: Final = "fixed wait (defaults)"
TARGET: Final = "p99 target"
DEFAULT_FRACTIONS: Final = tuple(round(0.1 * k, 1) for k in range(1, 13))  # 10%..120%


@dataclass(frozen=True)
class Level:
    config: str
    offered: float  # requests/s scheduled
    measured: Measured
    target_ms: float

    @property
    def p99_ms(self) -> float:
        return self.measured.latency_ms("p99")

    @property
    def clean(self) -> bool:
        window = self.measured.window
        return window.ok > 0 and not window.errors and not window.dropped

    @property
    def meets(self) -> bool:
        """p99 within the target, and the load served: an error or a drop is a miss,
        as the percentiles are those of the successful requests only."""
        return self.clean and self.p99_ms <= self.target_ms

    @property
    def mean_batch(self) -> float:
        spent = self.measured.spent
        return spent["batch_rows"] / max(spent["batches"], 1)


def share_met(levels: Sequence[Level]) -> float:
    """Share of [lowest rate, highest rate] where the target is met; each rate stands for
    the half-gaps to its neighbours (one rate: all or nothing)."""
    ordered = sorted(levels, key=lambda level: level.offered)
    rates = [level.offered for level in ordered]
    if len(rates) == 1 or rates[-1] == rates[0]:
        return float(all(level.meets for level in ordered))
    bounds = [rates[0], *((a + b) / 2 for a, b in itertools.pairwise(rates)), rates[-1]]
    met = sum(bounds[i + 1] - bounds[i] for i, level in enumerate(ordered) if level.meets)
    return met / (rates[-1] - rates[0])


def meets_up_to(levels: Sequence[Level]) -> float | None:
    """The highest rate below which every rate met the target (None: not even the lowest)."""
    best = None
    for level in sorted(levels, key=lambda level: level.offered):
        if not level.meets:
            break
        best = level.offered
    return best


def sweep_table(levels: Sequence[Level]) -> str:
    lines = [
        "| offered req/s | batcher | achieved req/s | p50 ms | p99 ms | meets target "
        "| errors / drops | mean batch |",
        "|---:|---|---:|---:|---:|---|---|---:|",
    ]
    for level in sorted(levels, key=lambda level: (level.offered, level.config != FIXED)):
        m = level.measured
        lines.append(
            f"| {level.offered:.0f} | {level.config} | {m.window.throughput:.1f} "
            f"| {m.latency_ms('p50'):.1f} | {level.p99_ms:.1f} "
            f"| {'yes' if level.meets else 'no'} | {m.failures} | {level.mean_batch:.1f} |"
        )
    return "\n".join(lines)


def summary_table(levels: Sequence[Level], configs: Sequence[str], target_ms: float) -> str:
    """Per configuration: how much of the range meets the target, and (as a target may be
    met nowhere) at how many rates its p99 was the lowest of the run's configurations."""
    lines = [
        f"| batcher | rates meeting p99 <= {target_ms:.1f} ms | share of the rate range "
        "| meets at every rate up to (req/s) | lowest p99 of the run at |",
        "|---|---:|---:|---:|---:|",
    ]
    lowest = Counter(
        min(same, key=lambda level: (level.measured.window.ok == 0, level.p99_ms)).config
        for same in (
            [level for level in levels if level.offered == rate]
            for rate in dict.fromkeys(level.offered for level in levels)
        )
    )
    for config in configs:
        mine = [level for level in levels if level.config == config]
        upto = meets_up_to(mine)
        lines.append(
            f"| {config} | {sum(level.meets for level in mine)} of {len(mine)} "
            f"| {share_met(mine):.0%} | {'–' if upto is None else f'{upto:.0f}'} "
            f"| {lowest[config]} of {len(mine)} rates |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--db", type=Path, help="a seeded db to copy (default: import --corpus)")
    parser.add_argument(
        "--rates", type=float, nargs="+", help="offered rates, req/s (override --fractions)"
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=list(DEFAULT_FRACTIONS),
        help="offered rates as shares of the measured saturation",
    )
    parser.add_argument("--saturation-concurrency", type=int, default=64)
    parser.add_argument("--target-multiple", type=float, default=3.0)
    parser.add_argument(
        "--target-p99-ms", type=float, help="the target itself (skips measuring one query)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per window")
    parser.add_argument(
        "--serve-flags", default="", help="more `kbrec serve` flags, for every server"
    )
    parser.add_argument(
        "--launcher",
        default=shlex.join(KBREC),
        help="command that runs the kbrec CLI for the servers (e.g. under taskset)",
    )
    args = parser.parse_args(argv)
    if args.target_p99_ms is not None and args.target_p99_ms <= 0:
        parser.error("--target-p99-ms must be > 0")
    if args.target_p99_ms is not None and not args.rates:
        parser.error("--target-p99-ms needs --rates (the saturation is not measured)")
    return args


def start(
    label: str, args: argparse.Namespace, db: Path, flags: Sequence[str], probe: Query
) -> ServeProcess:
    """A ready server on `db` that has answered `probe` with TOP_K articles."""
    serve = [
        *("--db", str(db), "--repository", str(args.repository), "--repository-poll-s", "0"),
        *shlex.split(args.serve_flags),
        *flags,
    ]
    server, _ = start_server(label, serve, args.launcher, probe)
    return server


def closed_level(
    server: ServeProcess,
    args: argparse.Namespace,
    workload: Workload,
    tickets: Sequence[Query],
    concurrency: int,
) -> Measured:
    config = level_config("closed", float(concurrency), args.warmup, args.duration)
    measured = kbrec_level(server, workload, tickets, config, TOP_K)
    progress(f"probe closed c={concurrency}", measured)
    return measured


def open_level(
    server: ServeProcess,
    args: argparse.Namespace,
    workload: Workload,
    tickets: Sequence[Query],
    rate: float,
) -> Measured:
    config = level_config(
        "open", rate, args.warmup, args.duration, poisson=True, seed=OPEN_LOOP_SEED
    )
    return kbrec_level(server, workload, tickets, config, TOP_K)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    workload = tickets_workload(args.corpus)
    out = run_header(
        "bench.batching_sweep",
        f"Requests: {len(tickets)} tickets (loadtest.tickets), top_k {TOP_K}, "
        f"Poisson arrivals; warm-up {args.warmup:g} s, window {args.duration:g} s per level.",
    )
    with tempfile.TemporaryDirectory(prefix="kbrec-sweep-") as tmp:
        fixed_db, target_db = Path(tmp) / "fixed.sqlite", Path(tmp) / "target.sqlite"
        prepare_store(args.db, args.corpus, fixed_db)
        print("probe (--max-wait-ms 0)", file=sys.stderr)
        probe = start("probe server", args, fixed_db, ["--max-wait-ms", "0"], tickets[0])
        with probe:
            if args.target_p99_ms is None:
                single = closed_level(probe, args, workload, tickets, 1)
                single_ms = single.latency_ms("p50")
                concurrency = args.saturation_concurrency
                saturated = closed_level(probe, args, workload, tickets, concurrency)
                saturation = saturated.window.throughput
                target_ms = args.target_multiple * single_ms
                alone_p99 = single.latency_ms("p99")
                out.append(
                    f"\nOne query (closed loop c=1, median, --max-wait-ms 0): {single_ms:.2f} ms; "
                    f"target T = {args.target_multiple:g} × that = **{target_ms:.1f} ms**. "
                    f"Saturation (closed loop c={args.saturation_concurrency}): "
                    f"{saturation:.1f} req/s (p99 {saturated.latency_ms('p99'):.1f} ms)."
                )
                # A query alone never waits for a batch: its p99 is what no batcher beats.
                out.append(
                    f"One query alone, p99: {alone_p99:.1f} ms"
                    + (
                        " — above T: no batcher can meet T at any load on this machine."
                        if alone_p99 > target_ms
                        else "."
                    )
                )
            else:
                target_ms, saturation = args.target_p99_ms, 0.0
                out.append(f"\nTarget T = **{target_ms:.1f} ms** (given).")
        # The probe's first start stored every vector: both servers start from a copy.
        shutil.copy(fixed_db, target_db)
        rates = args.rates or [round(f * saturation, 1) for f in args.fractions]
        configs = {
            FIXED: (fixed_db, []),
            TARGET: (target_db, ["--target-p99-ms", f"{target_ms:.3f}"]),
        }
        servers: dict[str, ServeProcess] = {}
        try:
            for name, (db, flags) in configs.items():
                servers[name] = start(name, args, db, flags, tickets[0])
            levels = run_sweep(args, workload, tickets, servers, rates, target_ms)
        finally:
            for server in servers.values():
                server.stop()
    flags = f"`{shlex.join(configs[TARGET][1])}`"
    out += [
        "",
        f"Batchers: {FIXED}: `--max-wait-ms` and `--max-batch-size` at their defaults; "
        f"{TARGET}: {flags}." + (f" Both with `{args.serve_flags}`." if args.serve_flags else ""),
        "",
        sweep_table(levels),
        "",
        summary_table(levels, list(configs), target_ms),
        "",
        f"Load average at end: {load_average()}.",
    ]
    print("\n".join(out))
    return 0


def run_sweep(
    args: argparse.Namespace,
    workload: Workload,
    tickets: Sequence[Query],
    servers: dict[str, ServeProcess],
    rates: Sequence[float],
    target_ms: float,
) -> list[Level]:
    """Every rate against every server, alternating which server goes first."""
    levels = []
    names = list(servers)
    for i, rate in enumerate(rates):
        for name in names if i % 2 == 0 else names[::-1]:
            measured = open_level(servers[name], args, workload, tickets, rate)
            level = Level(name, rate, measured, target_ms)
            progress(
                f"{name} open {rate:.0f}/s",
                measured,
                f", mean batch {level.mean_batch:.1f}, {'meets' if level.meets else 'misses'}",
            )
            levels.append(level)
    return levels


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
