"""`kbrec serve` in the benchmarks: start-up timing, and fixed load levels with their cost.

Shared by the service and Triton benchmarks. A server is loadtest.kbrec_process's
child process, timed from spawn to /readyz 200 and checked with one real
recommendation before any load. A level is loadtest.point's: the harness's client
and loops on the ticket workload, the tickets sent in their fixed order round and
round, so every configuration and system gets the same sequence. Besides latency and
throughput a row carries the server's batch metrics and the CPU of the server, of
the generator and of anything else on the machine (noise that a small shared machine
has to own up to).
"""

from __future__ import annotations

import datetime
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from loadtest.kbrec_api import recommendation_body
from loadtest.kbrec_process import (
    ServeProcess,
    ServerProcess,
    batch_counters,
    check_recommendation,
    seed_store,
)
from loadtest.library_clients import LibraryTarget, httpx_client
from loadtest.point import GENERATOR_CPU, Counters, Measured, level_config, measure
from loadtest.proc_stats import system_busy_cpu_s
from loadtest.runner import Load, RunConfig
from loadtest.setup import TargetFactory, kbrec_target
from loadtest.workload import Query, Workload, in_order

TOP_K: Final = 5
LOADTEST: Final = "loadtest"  # the harness's own HTTP client
HTTPX: Final = "httpx"
REQUEST_TIMEOUT_S: Final = 10.0
OPEN_LOOP_SEED: Final = 7
# Enough connections that the open loop never hits its in-flight cap below saturation.
OPEN_LOOP_POOL: Final = 256
SERVER_CPU: Final = "server_cpu_s"
SYSTEM_CPU: Final = "system_cpu_s"


@dataclass(frozen=True)
class StartResult:
    label: str
    seconds: float
    articles_embedded: int
    embed_seconds: float | None

    @property
    def articles_per_s(self) -> float | None:
        if not self.articles_embedded or not self.embed_seconds:
            return None
        return self.articles_embedded / self.embed_seconds


def start_server(
    label: str, serve_args: Sequence[str], launcher: str, probe: Query, top_k: int = TOP_K
) -> tuple[ServeProcess, StartResult]:
    """`kbrec serve ARGS` through `launcher`, ready and answering `probe` with top_k articles."""
    server = ServeProcess(serve_args, shlex.split(launcher))
    try:
        seconds = server.wait_ready()
        check_recommendation(server.url, probe.account_id, probe.text, top_k)
    except BaseException:
        server.stop()
        raise
    print(f"  {label}: ready in {seconds:.1f} s", file=sys.stderr)
    return server, StartResult(label, seconds, server.articles_to_embed, server.embed_seconds)


def start_table(starts: Sequence[StartResult], import_s: float | None) -> str:
    lines = [
        "| step | seconds | articles embedded | embedding articles/s |",
        "|---|---:|---:|---:|",
    ]
    if import_s is not None:
        lines.append(f"| `kbrec store import` (fresh db) | {import_s:.1f} | – | – |")
    for s in starts:
        rate = f"{s.articles_per_s:.1f}" if s.articles_per_s else "–"
        lines.append(f"| {s.label} | {s.seconds:.1f} | {s.articles_embedded} | {rate} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class LevelPlan:
    warmup_s: float
    duration_s: float
    concurrencies: tuple[int, ...]
    open_rates: tuple[float, ...]  # the first is the one judged against the p99 target
    top_k: int
    honour_retry_after: bool = True  # closed loops: clients wait out a 503's Retry-After


@dataclass(frozen=True)
class LoadRow:
    config: str
    mode: str  # "closed c=16" or "open 120/s"
    client: str
    measured: Measured

    @property
    def throughput(self) -> float:
        return self.measured.window.throughput

    @property
    def mean_batch(self) -> float:
        spent = self.measured.spent
        return spent["batch_rows"] / max(spent["batches"], 1)

    @property
    def backend_busy(self) -> float:
        """Share of the wall time the batcher spent in backend calls (and ranking)."""
        return self.measured.spent["batch_seconds"] / self.measured.elapsed_s

    @property
    def other_cores(self) -> float:
        """Cores busy with neither the server nor the generator: the neighbours' noise."""
        m = self.measured
        ours = m.spent[SERVER_CPU] + m.spent[GENERATOR_CPU]
        return max(m.spent[SYSTEM_CPU] - ours, 0.0) / m.elapsed_s


def kbrec_level(
    server: ServerProcess,
    workload: Workload,
    order: Sequence[Query],
    config: RunConfig,
    top_k: int,
    client: str = LOADTEST,
    more: Sequence[Counters] = (),
    batch_metrics: bool = True,
) -> Measured:
    """One level against a server of kbrec's API; its CPU, batch metrics and `more` read
    around it (batch_metrics=False: a server without kbrec's /metrics, e.g. an anchor)."""
    cap = int(config.loads[0]) if config.mode == "closed" else OPEN_LOOP_POOL
    if client == HTTPX:
        # Queries come first in a workload: body k is item k's.
        bodies = [recommendation_body(q, top_k) for q in workload.items if isinstance(q, Query)]

        async def make() -> LibraryTarget:
            return await LibraryTarget.open(
                httpx_client(server.url), bodies, cap, REQUEST_TIMEOUT_S
            )

        factory: TargetFactory = make
    else:
        factory = kbrec_target(server.url, workload, top_k, cap, REQUEST_TIMEOUT_S)
    load = Load(factory, in_order(workload, order), workload.ops, server.url, "tickets")

    def cpu() -> dict[str, float]:
        return {SERVER_CPU: server.cpu_s(), SYSTEM_CPU: system_busy_cpu_s()}

    batches: list[Counters] = [lambda: batch_counters(server.url)] if batch_metrics else []
    return measure(config, load, [cpu, *batches, *more])


def run_levels(
    name: str,
    server: ServeProcess,
    workload: Workload,
    order: Sequence[Query],
    plan: LevelPlan,
    httpx_check: int | None,
) -> list[LoadRow]:
    """Closed loop at each concurrency, then each open-loop rate; optionally one httpx level."""
    levels = [(f"closed c={c}", "closed", float(c), LOADTEST) for c in plan.concurrencies]
    levels += [(f"open {r:.0f}/s", "open", r, LOADTEST) for r in plan.open_rates]
    if httpx_check is not None:
        levels.append((f"closed c={httpx_check}", "closed", float(httpx_check), HTTPX))
    rows = []
    for mode, kind, load, client in levels:
        config = level_config(
            kind,
            load,
            plan.warmup_s,
            plan.duration_s,
            poisson=True,
            seed=OPEN_LOOP_SEED,
            honour_retry_after=plan.honour_retry_after,
        )
        measured = kbrec_level(server, workload, order, config, plan.top_k, client)
        rows.append(LoadRow(name, mode, client, measured))
        progress(f"{name} {mode} ({client})", measured)
    return rows


def parse_configs(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """'name=--flag value ...' → (name, extra `kbrec serve` arguments)."""
    return [(name, shlex.split(flags)) for name, _, flags in (s.partition("=") for s in specs)]


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def run_header(module: str, note: str = "") -> list[str]:
    """The first lines of a benchmark's Markdown: when, the command, the machine."""
    command = shlex.join([".venv/bin/python", "-m", module, *sys.argv[1:]])
    return [
        f"Run {datetime.datetime.now().isoformat(timespec='minutes')}: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared machine), Python "
        f"{sys.version.split()[0]}; load average at start {load_average()}. {note}".rstrip(),
    ]


def progress(label: str, measured: Measured, extra: str = "") -> None:
    """One line on stderr per level, so a long run shows where it is."""
    print(
        f"  {label}: {measured.window.throughput:.1f} req/s, "
        f"p50 {measured.latency_ms('p50'):.1f} ms, p99 {measured.latency_ms('p99'):.1f} ms, "
        f"errors {measured.failures}{extra}",
        file=sys.stderr,
    )


def prepare_store(seeded: Path | None, corpus: Path, db: Path) -> float | None:
    """`db`: a copy of `seeded` (servers write to their store: never to the original), or
    else a fresh `kbrec store import` of the corpus, whose wall seconds are returned."""
    if seeded is not None:
        shutil.copy(seeded, db)
        return None
    print("seeding a store from the corpus", file=sys.stderr)
    return seed_store(corpus, db)


def load_table(rows: Sequence[LoadRow]) -> str:
    lines = [
        "| server | load | client | req/s | p50 ms | p90 ms | p99 ms | errors "
        "| mean batch | backend busy | server CPU ms/req | server CPU (cores) "
        "| generator CPU ms/req | generator CPU (cores) | other CPU (cores) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.measured
        lines.append(
            f"| {r.config} | {r.mode} | {r.client} | {r.throughput:.1f} "
            f"| {m.latency_ms('p50'):.1f} | {m.latency_ms('p90'):.1f} "
            f"| {m.latency_ms('p99'):.1f} | {m.failures} | {r.mean_batch:.1f} "
            f"| {r.backend_busy:.0%} | {m.ms_per_request(SERVER_CPU):.2f} "
            f"| {m.cores(SERVER_CPU):.2f} | {m.ms_per_request(GENERATOR_CPU):.2f} "
            f"| {m.cores(GENERATOR_CPU):.2f} | {r.other_cores:.2f} |"
        )
    return "\n".join(lines)
