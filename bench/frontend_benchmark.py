"""Front-end benchmark: kbrec's CPU per recommendation against the least Starlette + uvicorn can do.

    .venv/bin/python -m bench.frontend_benchmark --repository /tmp/kbrec-bench-repo \
        --version 2 --corpus /tmp/kbrec-bench-corpus > /tmp/frontend_benchmark.md

With the tiny test encoder (its model call costs almost nothing) a recommendation's
cost is the Python front end: HTTP, JSON, validation, tokenization, batching, ranking,
the response. To measure that cost alone:

- each server runs pinned to one core (--server-cpu, default 0) and the load generator
  (this process, the harness of loadtest.point) to another (--client-cpu, default 1),
  closed loop at a few concurrencies (default 1, 8, 32; the last one saturates);
- server CPU per request comes from /proc of the server process (every thread), and
  req/s per server core divides the throughput by the cores the server used;
- the anchor (bench/anchor_app.py) runs in the same run on the same core: the least a
  Starlette + uvicorn endpoint does for this API (parse the same JSON, check three
  fields, answer five articles), with h11/asyncio and with httptools/uvloop (kbrec's
  uvicorn[standard] picks the latter). kbrec is reported as a share of each;
  target: kbrec ≥ 50% of the httptools/uvloop anchor's req/s at saturation;
- a per-stage breakdown of kbrec (--profile, default on): one more saturated level
  sampled with py-spy from outside the server; each stack is given the stage of its
  innermost frame that STAGE_RULES names, and each thread's CPU seconds (from
  /proc/PID/task) are split among stages by its samples (loadtest.stack_profile).
  µs per request = the stage's share × the CPU µs per request of the unprofiled level.

All systems get the same ticket texts (loadtest/tickets.py) in the same order; the
anchor ignores them. A before/after comparison runs two source trees in one run, each
a --config of `kbrec serve` flags through a --launcher (which then does the pinning):

    .venv/bin/python -m bench.frontend_benchmark --repository /tmp/kbrec-bench-repo \
        --version 2 --corpus /tmp/kbrec-bench-corpus --launcher /work/tools/tree_kbrec.sh \
        --config 'before=--tree /work/before' --config 'after=--tree /work/main'

With --rounds N the configurations run N times in turn (before, after, before, after,
…), each on a fresh server, and are compared by their medians (py-spy samples the
first round only): on a shared machine, one run of each differs by more than most
changes do.

Markdown tables go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shlex
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.anchor_app import READY_PREFIX
from bench.serving import (
    GENERATOR_CPU,
    SERVER_CPU,
    SYSTEM_CPU,
    TOP_K,
    kbrec_level,
    load_average,
    parse_configs,
    progress,
    start_server,
)
from kbrec.records import QUERIES_FILE
from kbrec.repository import MODEL_NAME, version_dir
from loadtest.kbrec_process import (
    KBREC,
    ServeError,
    ServerProcess,
    check_recommendation,
    seed_store,
)
from loadtest.point import Measured, level_config
from loadtest.sources import tickets_workload
from loadtest.stack_profile import (
    NATIVE,
    OTHER,
    ProfileError,
    PySpySampler,
    Sampled,
    StageProfile,
    py_spy_executable,
)
from loadtest.tickets import ticket_texts
from loadtest.workload import Query, Workload

ANCHORS: Final = (("asyncio", "h11"), ("uvloop", "httptools"))  # (loop, http); the last: target
ANCHOR_READY: Final = re.compile(re.escape(READY_PREFIX) + r" (http://\S+)")
TARGET_SHARE: Final = 0.5  # kbrec ≥ 50% of the httptools/uvloop anchor's req/s
GENERATOR_BOUND: Final = 0.9  # generator cores above which a level may measure the generator

HTTP = "HTTP: uvicorn protocol, h11/httptools"
STARLETTE = "Starlette: routing, middleware, request"
JSON_DECODE = "JSON decode: body read, json.loads"
VALIDATION = "validation: payloads.py"
SERVICE = "service: service.py, serving_model.py, versions/"
TOKENIZATION = "tokenization: tokenizers, tokenizing.py"
HANDOFF = "thread hand-off: asyncio ↔ executor futures"
BATCHER = "batcher: batching.py, compute_gate.py"
MODEL = "model call: onnxruntime, backends/"
RANKING = "ranking: ranking.py, index.py"
RESPONSE = "response: route, request id, JSON encode"
METRICS = "metrics: prometheus_client, metrics.py"
EVENT_LOOP = "event loop, socket I/O: uvloop/asyncio"
# Stack → stage: the innermost frame some pattern matches decides; within one frame the
# first matching row wins (so the hand-off row must stay above the event loop's).
# Frames look like "MicroBatcher._embed (server/inference/batching.py:401)"; a library
# no row names (numpy, threading, …) counts for the frame that called it. A stack whose
# innermost frame is the event loop's entry (uvloop runs in C, without frames) is the
# loop itself: polling, socket reads and writes, callbacks.
STAGE_RULES: Final = tuple(
    (stage, re.compile(pattern))
    for stage, pattern in (
        (METRICS, r"\(prometheus_client/|\(server/http/metrics\.py"),
        (JSON_DECODE, r"\(json/decoder\.py|^loads \(json/|orjson|^(read_json|decode_json) \("),
        (VALIDATION, r"\(server/http/payloads\.py|\(kbrec/(records|locales)\.py"),
        (TOKENIZATION, r"\(tokenizers/|\(server/inference/tokenizing\.py|^TextTokenizer\."),
        (MODEL, r"\(onnxruntime/|\(server/inference/backends/"),
        (RANKING, r"\(server/inference/(ranking|index)\.py"),
        (BATCHER, r"\(server/inference/(batching|compute_gate)\.py|^pad_batch \("),
        (SERVICE, r"\(server/(service|inference/serving_model)\.py|\(server/versions/"),
        (RESPONSE, r"\(starlette/responses\.py|\(json/encoder\.py|^dumps \(json/|\(uuid\.py"),
        (RESPONSE, r"\(server/http/routes/recommendations\.py|\(bench/anchor_app\.py"),
        (HTTP, r"\(uvicorn/|\(h11/|\(httptools/"),
        (STARLETTE, r"\(starlette/"),
        (HANDOFF, r"\(asyncio/futures\.py|\(concurrent/futures/"),
        (EVENT_LOOP, r"\(asyncio/|\(uvloop/|\(selectors\.py"),
    )
)
STAGES: Final = tuple(dict.fromkeys(stage for stage, _ in STAGE_RULES))


@dataclass(frozen=True)
class System:
    name: str
    server: ServerProcess
    start_s: float
    affinity: str  # the server's CPU affinity as the kernel reports it
    is_kbrec: bool
    repinned: set[int] = field(default_factory=set)  # threads found off those cores
    profile: bool = True  # a kbrec run sampled with py-spy (--profile, first round)


@dataclass(frozen=True)
class Row:
    system: str
    concurrency: int
    measured: Measured

    @property
    def throughput(self) -> float:
        return self.measured.window.throughput

    @property
    def cpu_us(self) -> float:
        """Server CPU µs per request, over the whole level (warm-up and drain included)."""
        return self.measured.ms_per_request(SERVER_CPU) * 1000

    @property
    def per_core(self) -> float:
        """req/s per server core: requests per second of server CPU, i.e. req/s over the
        cores used, both over the whole level (a short level's set-up and drain, when the
        server idles, would otherwise inflate it)."""
        return 1e6 / self.cpu_us if self.cpu_us else 0.0

    @property
    def other_cores(self) -> float:
        spent = self.measured.spent
        ours = spent[SERVER_CPU] + spent[GENERATOR_CPU]
        return max(spent[SYSTEM_CPU] - ours, 0.0) / self.measured.elapsed_s


@dataclass(frozen=True)
class Profiled:
    system: str
    row: Row  # the profiled level itself (py-spy running)
    sampled: Sampled
    stages: StageProfile


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument(
        "--version", type=int, help="serve only this encoder version (default: kbrec's choice)"
    )
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per window")
    parser.add_argument(
        "--config",
        dest="configs",
        action="append",
        help="'name=kbrec serve flags' (repeatable; default: kbrec with its defaults)",
    )
    parser.add_argument(
        "--launcher",
        help="command that runs the kbrec CLI for the server, pinning included "
        "(default: taskset -c SERVER_CPU with this interpreter's python -m cli.main)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="core of every server")
    parser.add_argument("--client-cpu", type=int, default=1, help="core of the generator")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-stage breakdown of kbrec with py-spy (one more saturated level)",
    )
    parser.add_argument(
        "--profile-anchor",
        action="store_true",
        help="also profile the httptools/uvloop anchor (its stages are the floor)",
    )
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the kbrec configurations this many times in turn (a fresh server each "
        "time) and judge each by its medians: on a shared machine one run each is noise",
    )
    parser.add_argument(
        "--pin-threads",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="before each level, put server threads that left the server's cores back "
        "(ONNX Runtime pins its pool threads to cores of its own choosing)",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    args.configs = args.configs or ["kbrec="]
    return args


def kbrec_launcher(args: argparse.Namespace) -> str:
    if args.launcher:
        return args.launcher
    return shlex.join(["taskset", "-c", str(args.server_cpu), *KBREC])


def single_version_repository(repository: Path, version: int, into: Path) -> Path:
    """A repository holding only a copy of `version`, so kbrec serves exactly that one (a
    link would not do: kbrec refuses version directories that are symbolic links)."""
    source = version_dir(repository, version).resolve()
    if not source.is_dir():
        raise SystemExit(f"no version {version} in {repository}")
    shutil.copytree(source, into / MODEL_NAME / str(version))
    return into


def affinity(pid: int) -> str:
    cores = sorted(os.sched_getaffinity(pid))
    return ",".join(map(str, cores))


def pin_threads(pid: int) -> list[int]:
    """Put every thread of `pid` on the process's own cores; the ids of those elsewhere.

    taskset pins a process and new threads inherit that, but a library may set its
    threads' affinity itself: ONNX Runtime's default intra-op pool pins one thread per
    core of the machine, which would run part of a server "on core 0" on the generator's.
    """
    cores = os.sched_getaffinity(pid)
    moved = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        tid = int(task.name)
        try:
            if os.sched_getaffinity(tid) != cores:
                os.sched_setaffinity(tid, cores)
                moved.append(tid)
        except ProcessLookupError:  # exited meanwhile
            continue
    return moved


def anchor_name(loop: str, http: str) -> str:
    return f"anchor {http}/{loop}"


def start_anchor(loop: str, http: str, cpu: int, probe: Query) -> System:
    name = anchor_name(loop, http)
    command = ["taskset", "-c", str(cpu), sys.executable, "-m", "bench.anchor_app"]
    command += ["--port", "0", "--loop", loop, "--http", http]
    server = ServerProcess(command, ANCHOR_READY)
    server.name = name
    try:
        seconds = server.wait_ready(60)
        check_recommendation(server.url, probe.account_id, probe.text, TOP_K)
    except BaseException:
        server.stop()
        raise
    print(f"  {name}: ready in {seconds:.1f} s", file=sys.stderr)
    return System(name, server, seconds, affinity(server.pid), is_kbrec=False)


def start_kbrec(
    name: str, serve_args: Sequence[str], launcher: str, probe: Query, profile: bool = True
) -> System:
    """`profile`: sample it with py-spy (the first round's runs only: it costs a level)."""
    server, start = start_server(name, serve_args, launcher, probe)
    return System(name, server, start.seconds, affinity(server.pid), True, profile=profile)


def run_level(
    system: System, workload: Workload, order: Sequence[Query], c: int, args: argparse.Namespace
) -> Row:
    if args.pin_threads:
        system.repinned.update(pin_threads(system.server.pid))
    config = level_config("closed", float(c), args.warmup, args.duration)
    measured = kbrec_level(
        system.server, workload, order, config, TOP_K, batch_metrics=system.is_kbrec
    )
    row = Row(system.name, c, measured)
    extra = f", server CPU {row.cpu_us:.0f} µs/req, {row.per_core:.0f} req/s per core"
    progress(f"{system.name} c={c}", measured, extra)
    return row


def profile_level(
    system: System, workload: Workload, order: Sequence[Query], c: int, args: argparse.Namespace
) -> Profiled:
    """The saturated level once more, py-spy sampling the server through its window."""
    # Whole seconds inside the window: py-spy starts after the warm-up, ends before the drain.
    sampler = PySpySampler(system.server.pid, args.warmup, int(args.duration), args.profile_rate)
    sampler.start()
    row = run_level(system, workload, order, c, args)
    sampled = sampler.result()
    print(f"  {system.name} profile: {sampled.summary}", file=sys.stderr)
    return Profiled(system.name, row, sampled, sampled.profile(STAGE_RULES))


def wants_profile(system: System, args: argparse.Namespace) -> bool:
    if not args.profile:
        return False
    if system.is_kbrec:
        return system.profile
    return args.profile_anchor and system.name == anchor_name(*ANCHORS[-1])


def level_table(rows: Sequence[Row]) -> str:
    lines = [
        "| system | load | req/s | p50 ms | p99 ms | errors | server CPU µs/req "
        "| server CPU (cores) | req/s per server core | generator CPU (cores) "
        "| other CPU (cores) |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m = r.measured
        lines.append(
            f"| {r.system} | closed c={r.concurrency} | {r.throughput:.0f} "
            f"| {m.latency_ms('p50'):.2f} | {m.latency_ms('p99'):.2f} | {m.failures} "
            f"| {r.cpu_us:.0f} | {m.cores(SERVER_CPU):.2f} | {r.per_core:.0f} "
            f"| {m.cores(GENERATOR_CPU):.2f} | {r.other_cores:.2f} |"
        )
    return "\n".join(lines)


def comparison_table(rows: Sequence[Row], kbrec: Sequence[str], anchors: Sequence[str]) -> str:
    """Each kbrec configuration as a share of each anchor, level by level."""
    head = "| kbrec | load | req/s |"
    rule = "|---|---|---:|"
    for a in anchors:
        head += f" % of {a} req/s | % of {a} req/s per core | CPU µs/req ÷ {a} |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    by_key = {(r.system, r.concurrency): r for r in rows}
    for name in kbrec:
        for r in (r for r in rows if r.system == name):
            line = f"| {name} | closed c={r.concurrency} | {r.throughput:.0f} |"
            for a in anchors:
                anchor = by_key[(a, r.concurrency)]
                line += (
                    f" {r.throughput / anchor.throughput:.0%} "
                    f"| {r.per_core / anchor.per_core:.0%} "
                    f"| {r.cpu_us / anchor.cpu_us:.1f} × |"
                )
            lines.append(line)
    return "\n".join(lines)


def run_label(name: str, round_index: int) -> str:
    """The row label of a configuration's run: its name, then "name #2", "name #3" …"""
    return name if round_index == 0 else f"{name} #{round_index + 1}"


def runs_at(rows: Sequence[Row], labels: Sequence[str], c: int) -> list[Row]:
    """The rows of the runs `labels` at concurrency c, in run order."""
    return [r for r in rows if r.system in labels and r.concurrency == c]


def median_of(rows: Sequence[Row], labels: Sequence[str], c: int) -> tuple[float, float, float]:
    """Median req/s, server CPU µs/req and req/s per server core of the runs `labels` at c."""
    runs = runs_at(rows, labels, c)
    return (
        statistics.median(r.throughput for r in runs),
        statistics.median(r.cpu_us for r in runs),
        statistics.median(r.per_core for r in runs),
    )


def target_lines(
    rows: Sequence[Row], runs: Mapping[str, Sequence[str]], anchor: str, top: int
) -> list[str]:
    """Each configuration against the anchor at the top level (medians over its runs)."""
    floor = next(r for r in rows if r.system == anchor and r.concurrency == top)
    out = []
    for name, labels in runs.items():
        throughput, _, per_core = median_of(rows, labels, top)
        share = throughput / floor.throughput
        verdict = "meets" if share >= TARGET_SHARE else "misses"
        over = f" (median of {len(labels)} runs)" if len(labels) > 1 else ""
        out.append(
            f"- {name}: {share:.0%} of the {anchor}'s req/s at c={top} "
            f"({throughput:.0f}{over} against {floor.throughput:.0f}); target ≥ "
            f"{TARGET_SHARE:.0%}: {verdict}. Per server core: "
            f"{per_core / floor.per_core:.0%}."
        )
    return out


def rounds_table(
    rows: Sequence[Row], runs: Mapping[str, Sequence[str]], concurrencies: Sequence[int]
) -> str:
    """Per configuration and level: the median of its runs, and every run's CPU µs/req."""
    lines = [
        "| kbrec | load | runs | median req/s | median server CPU µs/req | each run µs/req |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, labels in runs.items():
        for c in concurrencies:
            throughput, cpu_us, _ = median_of(rows, labels, c)
            each = ", ".join(f"{r.cpu_us:.0f}" for r in runs_at(rows, labels, c))
            lines.append(
                f"| {name} | closed c={c} | {len(labels)} | {throughput:.0f} | {cpu_us:.0f} "
                f"| {each} |"
            )
    return "\n".join(lines)


def stage_table(profiles: Sequence[Profiled], rows: Sequence[Row]) -> str:
    """Share of the server's CPU per stage and µs per request (share × unprofiled CPU/req)."""
    clean = {(r.system, r.concurrency): r for r in rows}
    head, rule = "| stage |", "|---|"
    for p in profiles:
        head += f" {p.system}: share | {p.system}: µs/req |"
        rule += "---:|---:|"
    lines = [head, rule]
    for stage in (*STAGES, OTHER, NATIVE):
        if not any(p.stages.cpu_s.get(stage) for p in profiles):
            continue
        line = f"| {stage} |"
        for p in profiles:
            share = p.stages.share(stage)
            us = share * clean[(p.system, p.row.concurrency)].cpu_us
            line += f" {share:.1%} | {us:.0f} |"
        lines.append(line)
    total = "| total |"
    for p in profiles:
        total += f" 100% | {clean[(p.system, p.row.concurrency)].cpu_us:.0f} |"
    lines.append(total)
    return "\n".join(lines)


def thread_table(profiles: Sequence[Profiled], rows: Sequence[Row]) -> str:
    """µs per request of each server thread (its share of the process's CPU × the
    unprofiled CPU/req): which costs sit on the event loop and which beside it."""
    clean = {(r.system, r.concurrency): r for r in rows}
    by_name = [p.sampled.cpu_by_thread_name() for p in profiles]
    names = list(dict.fromkeys(name for cpu in by_name for name in cpu))
    head, rule = "| thread |", "|---|"
    for p in profiles:
        head += f" {p.system}: µs/req |"
        rule += "---:|"
    lines = [head, rule]
    for name in names:
        line = f"| {name} |"
        for p, cpu in zip(profiles, by_name, strict=True):
            total = sum(cpu.values())
            share = cpu.get(name, 0.0) / total if total else 0.0
            line += f" {share * clean[(p.system, p.row.concurrency)].cpu_us:.0f} |"
        lines.append(line)
    return "\n".join(lines)


def profile_notes(profiles: Sequence[Profiled], rows: Sequence[Row]) -> list[str]:
    clean = {(r.system, r.concurrency): r for r in rows}
    out = []
    for p in profiles:
        unprofiled = clean[(p.system, p.row.concurrency)]
        threads = sum(1 for s in p.sampled.thread_cpu_s.values() if s > 0)
        out.append(
            f"- {p.system}: profiled at c={p.row.concurrency}, {p.sampled.span_s:.1f} s "
            f"sampled ({p.sampled.summary}); {p.row.throughput:.0f} req/s and "
            f"{p.row.cpu_us:.0f} µs/req with py-spy against {unprofiled.throughput:.0f} and "
            f"{unprofiled.cpu_us:.0f} without; {p.stages.total_cpu_s:.2f} CPU s in "
            f"threads: {threads} busy, {p.stages.native_threads} of them without Python frames"
            + (
                f"; {p.stages.unweighted_samples} samples of threads gone before the end"
                if p.stages.unweighted_samples
                else ""
            )
            + "."
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.sched_setaffinity(0, {args.client_cpu})  # children inherit it until taskset
    if args.profile and py_spy_executable() is None:  # fail before any level, not after
        raise ProfileError("py-spy not found: pip install py-spy, or run with --no-profile")
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    workload = tickets_workload(args.corpus)
    launcher = kbrec_launcher(args)
    command = shlex.join([".venv/bin/python", "-m", "bench.frontend_benchmark", *sys.argv[1:]])
    started = datetime.datetime.now()
    out = [
        f"Run {started:%Y-%m-%d %H:%M}: `{command}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared machine), Python "
        f"{sys.version.split()[0]}; servers on core {args.server_cpu}, the generator "
        f"(loadtest harness, asyncio) on core {args.client_cpu}; load "
        f"average at start {load_average()}.",
        "",
        f"Requests: {len(tickets)} tickets (loadtest/tickets.py) in a fixed order, top_k "
        f"{TOP_K}; closed loop, {args.warmup:g} s warm-up then {args.duration:g} s measured "
        "per level. Server CPU: user + system of the server process (all threads) from "
        "/proc over the whole level; req/s per server core = requests per server CPU "
        "second (req/s ÷ server cores, over the same span).",
    ]
    rows: list[Row] = []
    profiles: list[Profiled] = []
    systems: list[str] = []
    failures: list[str] = []
    # configuration → the labels of its runs ("name", "name #2", …)
    runs: dict[str, list[str]] = {name: [] for name, _ in parse_configs(args.configs)}
    with tempfile.TemporaryDirectory(prefix="kbrec-frontend-") as tmp:
        repository = args.repository.resolve()
        if args.version is not None:
            repository = single_version_repository(repository, args.version, Path(tmp) / "repo")
        print("seeding a store from the corpus", file=sys.stderr)
        seeded = Path(tmp) / "seeded.sqlite"
        seed_store(args.corpus, seeded)

        def measure_system(system: System, how: str) -> None:
            """Every level, then the profiled one; the server is stopped at the end."""
            with system.server:
                if system.affinity != str(args.server_cpu):
                    print(f"  warning: {system.name} on cores {system.affinity}", file=sys.stderr)
                rows.extend(run_level(system, workload, tickets, c, args) for c in args.concurrency)
                if wants_profile(system, args):
                    try:
                        top = max(args.concurrency)
                        profiles.append(profile_level(system, workload, tickets, top, args))
                    except ProfileError as exc:  # the levels stand without it
                        print(f"  {system.name}: no profile: {exc}", file=sys.stderr)
                        failures.append(f"- {system.name}: no profile: {exc}")
            moved = len(system.repinned)
            systems.append(
                f"- {system.name}: `{how}`, on cores {system.affinity}, "
                f"ready in {system.start_s:.1f} s"
                + (f"; {moved} of its threads had left them and were put back" if moved else "")
            )

        for loop, http in ANCHORS:
            print(anchor_name(loop, http), file=sys.stderr)
            anchor = start_anchor(loop, http, args.server_cpu, tickets[0])
            measure_system(anchor, shlex.join(anchor.server.command))
        for round_index in range(args.rounds):  # the configurations in turn, each round
            for i, (name, flags) in enumerate(parse_configs(args.configs)):
                label = run_label(name, round_index)
                runs[name].append(label)
                print(label, file=sys.stderr)
                db = Path(tmp) / f"kbrec-{round_index}-{i}.sqlite"
                shutil.copy(seeded, db)
                serve = ["--db", str(db), "--repository", str(repository), *flags]
                kbrec = start_kbrec(label, serve, launcher, tickets[0], profile=round_index == 0)
                measure_system(kbrec, shlex.join([*shlex.split(launcher), "serve", *serve]))
    anchors = [anchor_name(loop, http) for loop, http in ANCHORS]
    top = max(args.concurrency)
    out += ["", "Systems (store and repository: this run's temporary copies):", "", *systems]
    out += ["", "### Levels", "", level_table(rows)]
    busy = [r for r in rows if r.measured.cores(GENERATOR_CPU) >= GENERATOR_BOUND]
    if busy:
        out += [
            "",
            "Generator near a full core at "
            + ", ".join(f"{r.system} c={r.concurrency}" for r in busy)
            + ": those levels may measure the generator, not the server (compare req/s per "
            "server core).",
        ]
    out += ["", "### kbrec against the anchors (same core)", ""]
    out += [
        comparison_table(rows, [label for labels in runs.values() for label in labels], anchors)
    ]
    if args.rounds > 1:
        out += ["", f"### Medians over {args.rounds} rounds", ""]
        out += [rounds_table(rows, runs, args.concurrency)]
    out += ["", *target_lines(rows, runs, anchors[-1], top)]
    if profiles or failures:
        out += ["", f"### Where the server's CPU goes (py-spy, c={top})", "", *failures]
    if profiles:
        out += [""] if failures else []
        out += [stage_table(profiles, rows), "", *profile_notes(profiles, rows)]
        out += [
            "",
            "A stack counts for the stage of its innermost frame that STAGE_RULES "
            "(bench/frontend_benchmark.py) names; each thread's CPU seconds (/proc/PID/task) "
            f'are split by its samples. "{NATIVE}": CPU of threads without Python '
            "frames: ONNX Runtime's intra-op pool (unless --intra-op-threads 1) and the "
            "tokenizers' rayon pool, where `encode_batch` does its work while the "
            f'tokenizer thread waits (so most of tokenization is in this row). "{OTHER}": '
            "stacks no rule names. Executor threads count as hand-off while they take their "
            "next work item, also when runnable but waiting for the core.",
            "",
            f"### The server's CPU by thread (py-spy names, c={top})",
            "",
            thread_table(profiles, rows),
            "",
            "MainThread runs the event loop (HTTP, Starlette, the handler, the batcher, "
            "ranking); tokenize_0 hands batches to the tokenizers' pool; ort-v1_0 runs the "
            "model of version 1; sqlite_0 is the store's thread (the recommendation log's "
            f'writes, the change feed\'s polls); "{NATIVE}": threads never seen in Python '
            "code (the tokenizers' rayon pool, ONNX Runtime's own threads).",
        ]
    elapsed = datetime.datetime.now() - started
    out += ["", f"Load average at end: {load_average()}; {elapsed.seconds} s in all."]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (ServeError, ProfileError) as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(1) from None
