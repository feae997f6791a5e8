"""kbrec on Triton vs kbrec embedded vs Triton direct, at the same closed-loop load.

    make triton-env
    .venv/bin/python -m bench.triton_benchmark --db data/kbrec.sqlite > /tmp/triton_benchmark.md

Systems, each at every `--concurrency`, all sent the same tickets in the same order
by loadtest's closed loop (bench/serving.py), so the rows differ by the system only:
kbrec embedded (`kbrec serve`, ONNX Runtime in process); kbrec → Triton (`kbrec serve
--triton-url` on the local CPU Triton), also with `--max-batch-size 1` (no front-end
batching); Triton direct (loadtest's Triton target: one ticket's token row per gRPC
request, the rows kbrec would send, Triton's dynamic batcher the only batching).

Triton is given a view of the repository (config.pbtxt rendered for the python
backend, `--version`'s directory linked) and kbrec's servers read the same view, so
all serve one version from the same files. With `--db` (a store whose articles have
vectors of the version, e.g. `make run`'s) no server re-embeds anything.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

import numpy as np

from bench.serving import (
    REQUEST_TIMEOUT_S,
    TOP_K,
    kbrec_level,
    prepare_store,
    progress,
    start_server,
)
from conversion.triton_config import MAX_QUEUE_DELAY_US, render_config
from kbrec.records import QUERIES_FILE
from kbrec.repository import CONFIG_FILE, MODEL_NAME, read_metadata, version_dir
from loadtest.kbrec_process import KBREC
from loadtest.point import Counters, Measured, level_config, measure
from loadtest.runner import Load, RunConfig
from loadtest.setup import triton_target
from loadtest.sources import tickets_workload
from loadtest.tickets import ticket_texts
from loadtest.triton_target import (
    TritonModel,
    execution_counters,
    rows_per_execution,
    triton_model,
)
from loadtest.workload import Query, Workload, in_order
from local_triton.environment import DEFAULT_ENV
from local_triton.launcher import TritonLaunch, TritonPorts, TritonServer

SYSTEMS: Final = {  # --systems name → row label, in the order they run
    "embedded": "kbrec embedded",
    "direct": "Triton direct",
    "triton": "kbrec → Triton",
    "unbatched": "kbrec → Triton, no front-end batching",
}
THROUGH_TRITON, DIRECT = SYSTEMS["triton"], SYSTEMS["direct"]


@dataclass(frozen=True)
class Cell:
    system: str
    concurrency: int
    measured: Measured
    triton_batch: float | None  # rows per model execution in Triton, warm-up included


def triton_counters(triton: TritonServer) -> Counters:
    launch = triton.launch
    return partial(execution_counters, f"http://{launch.host}:{launch.ports.metrics}/metrics")


def triton_view(repository: Path, version: int, out: Path, queue_delay_us: int) -> Path:
    """A repository with a python-backend config.pbtxt and a copy of the version directory
    (kbrec refuses version directories that are symbolic links)."""
    source = version_dir(repository, version)
    metadata = read_metadata(source)
    model = out / MODEL_NAME
    model.mkdir(parents=True)
    config = render_config(
        model=MODEL_NAME,
        backend="python",
        dim=metadata.dim,
        max_length=metadata.max_length,
        max_queue_delay_us=queue_delay_us,
    )
    (model / CONFIG_FILE).write_text(config, encoding="utf-8")
    shutil.copytree(source.resolve(), model / str(version))
    return out


@dataclass(frozen=True)
class Setup:  # what every cell of one run shares
    args: argparse.Namespace
    repository: Path  # the Triton view: kbrec reads it too, so all serve one version
    db: Path
    workload: Workload  # the tickets, plus article writes that are never sent
    order: Sequence[Query]  # the tickets in their order: what every system is sent


def closed_cells(
    system: str, args: argparse.Namespace, run_level: Callable[[RunConfig], Measured]
) -> list[Cell]:
    cells = []
    for c in args.concurrency:
        measured = run_level(level_config("closed", c, args.warmup, args.duration))
        batch = rows_per_execution(measured.spent)  # None: no Triton here
        cells.append(Cell(system, c, measured, batch))
        note = "" if batch is None else f", Triton rows/execution {batch:.1f}"
        progress(f"{system} c={c}", measured, note)
    return cells


def kbrec_cells(
    setup: Setup, system: str, extra: Sequence[str], triton: TritonServer | None = None
) -> list[Cell]:
    more = [triton_counters(triton)] if triton is not None else []
    serve_args = ["--db", str(setup.db), "--repository", str(setup.repository), *extra]
    server, _ = start_server(system, serve_args, shlex.join(KBREC), setup.order[0])

    def run_level(config: RunConfig) -> Measured:
        return kbrec_level(server, setup.workload, setup.order, config, TOP_K, more=more)

    with server:
        return closed_cells(system, setup.args, run_level)


def direct_cells(setup: Setup, triton: TritonServer, model: TritonModel) -> list[Cell]:
    def run_level(config: RunConfig) -> Measured:
        make = triton_target(triton.grpc_url, model, int(config.loads[0]), REQUEST_TIMEOUT_S)
        picks = in_order(setup.workload, setup.order)
        load = Load(make, picks, setup.workload.ops, triton.grpc_url, "tickets")
        return measure(config, load, [triton_counters(triton)])

    return closed_cells(DIRECT, setup.args, run_level)


def results_table(cells: Sequence[Cell]) -> str:
    lines = [
        "| system | concurrency | req/s | p50 ms | p99 ms | errors | Triton rows / execution |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for c in cells:
        batch, m = "–" if c.triton_batch is None else f"{c.triton_batch:.1f}", c.measured
        lines.append(
            f"| {c.system} | {c.concurrency} | {m.window.throughput:.1f} "
            f"| {m.latency_ms('p50'):.1f} | {m.latency_ms('p99'):.1f} | {m.failures} | {batch} |"
        )
    return "\n".join(lines)


def front_end_table(cells: Sequence[Cell]) -> str:
    """p50 of kbrec → Triton minus p50 of Triton direct, per concurrency."""
    by_key = {(c.system, c.concurrency): c for c in cells}
    lines = [
        "| concurrency | kbrec → Triton p50 ms | Triton direct p50 ms | p50 the front end adds |",
        "|---:|---:|---:|---:|",
    ]
    for concurrency in sorted({c.concurrency for c in cells}):
        front, direct = by_key.get((THROUGH_TRITON, concurrency)), by_key.get((DIRECT, concurrency))
        if front is None or direct is None:
            continue
        f50, d50 = front.measured.latency_ms("p50"), direct.measured.latency_ms("p50")
        lines.append(f"| {concurrency} | {f50:.1f} | {d50:.1f} | {f50 - d50:+.1f} ms |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--version", type=int, default=1, help="encoder version directory")
    parser.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    parser.add_argument("--db", type=Path, help="a seeded store to copy (default: seed anew)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each window")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    parser.add_argument(
        "--queue-delay-us",
        type=int,
        default=MAX_QUEUE_DELAY_US,
        help="Triton's dynamic batching max_queue_delay_microseconds",
    )
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--triton-env", type=Path, default=DEFAULT_ENV)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    metadata = read_metadata(version_dir(args.repository, args.version))
    tickets = ticket_texts(args.corpus / QUERIES_FILE)
    cells: list[Cell] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kbrec-triton-bench-") as tmp:
        db = Path(tmp) / "kbrec.sqlite"
        prepare_store(args.db, args.corpus, db)  # fresh: the first server embeds every article
        view = triton_view(args.repository, args.version, Path(tmp) / "triton", args.queue_delay_us)
        setup = Setup(args, view, db, tickets_workload(args.corpus), tickets)
        model = triton_model(setup.workload, view, args.version)
        if "embedded" in args.systems:
            cells += kbrec_cells(setup, SYSTEMS["embedded"], [])
        launch = TritonLaunch(view, ports=TritonPorts.free(), environment=args.triton_env)
        with TritonServer(launch) as triton:
            through = ["--triton-url", triton.grpc_url]
            for system in [name for name in SYSTEMS if name in args.systems]:
                if system == "direct":
                    cells += direct_cells(setup, triton, model)
                elif system != "embedded":
                    unbatched = ["--max-batch-size", "1"] if system == "unbatched" else []
                    cells += kbrec_cells(setup, SYSTEMS[system], [*through, *unbatched], triton)
    command = shlex.join([".venv/bin/python", "-m", "bench.triton_benchmark", *sys.argv[1:]])
    lengths = [row.shape[1] for row in model.rows]
    out = [
        f"Run {datetime.date.today().isoformat()}: `{command}` "
        f"({time.perf_counter() - started:.0f} s).",
        "",
        f"Machine: {os.cpu_count()} CPU cores (shared), load average at end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}. Triton: nvidia-pytriton's "
        f"tritonserver, python backend running ONNX Runtime, dynamic batching "
        f"max_queue_delay_microseconds {args.queue_delay_us}.",
        "",
        f"Requests: {len(tickets)} tickets, {min(lengths)}–{max(lengths)} tokens "
        f"(median {np.median(lengths):.0f}); closed loop, {args.warmup:g} s warm-up, "
        f"{args.duration:g} s per cell; model version {args.version} "
        f"({metadata.dim}-d, max length {metadata.max_length}).",
        "",
        results_table(cells),
        "",
        front_end_table(cells),
    ]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
