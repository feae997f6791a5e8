"""kbrec on Triton vs kbrec embedded vs Triton direct, at the same closed-loop load.

    make triton-env
    .venv/bin/python bench/triton_benchmark.py --db data/kbrec.sqlite > /tmp/triton_benchmark.md

Systems, each at every `--concurrency` (closed loop: each worker sends its next
request as soon as one returns):

- kbrec embedded: `kbrec serve` with ONNX Runtime in process (the default);
- kbrec → Triton: `kbrec serve --triton-url` on the local CPU Triton;
- kbrec → Triton, no front-end batching: the same with `--max-batch-size 1`;
- Triton direct: tritonclient's asyncio gRPC client, no front end, one ticket's
  token row (INT32 [1, seq], from the version's own tokenizer) per request: the
  same rows kbrec would send, with Triton's dynamic batcher as the only batching.

The load generator, the ticket texts and the server process come from
bench/service_benchmark.py. The repository may be converted for either backend:
Triton is given a view of it (a temporary repository whose config.pbtxt is
rendered for the python backend, `--version`'s directory linked); every system,
kbrec's servers included, reads that view, so all serve the same version from
the same files. With `--db` (a store whose articles already
have vectors of the version, e.g. `make run`'s) no server re-embeds anything.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: the repo's packages come first

from bench.service_benchmark import (  # noqa: E402
    KBREC,
    REQUEST_TIMEOUT_S,
    RawPool,
    Recorder,
    ServerProcess,
    check_recommendation,
    closed_loop,
    http_text,
    measure,
    request_bodies,
    seed_store,
)
from bench.ticket_texts import ticket_texts  # noqa: E402
from conversion.triton_config import MAX_QUEUE_DELAY_US, render_config  # noqa: E402
from kbrec.repository import CONFIG_FILE, MODEL_NAME, read_metadata, version_dir  # noqa: E402
from kbrec.tokenization import TextTokenizer  # noqa: E402
from local_triton.environment import DEFAULT_ENV  # noqa: E402
from local_triton.launcher import TritonLaunch, TritonPorts, TritonServer  # noqa: E402

EMBEDDED: Final = "kbrec embedded"
THROUGH_TRITON: Final = "kbrec → Triton"
UNBATCHED: Final = "kbrec → Triton, no front-end batching"
DIRECT: Final = "Triton direct"


@dataclass(frozen=True)
class Cell:
    system: str
    concurrency: int
    duration_s: float
    recorder: Recorder
    # Rows per model execution in Triton (its dynamic batching), warm-up included.
    triton_batch: float | None = None

    @property
    def throughput(self) -> float:
        return self.recorder.completed_in_window / self.duration_s

    def p_ms(self, q: float) -> float:
        latencies = self.recorder.latencies_s
        return float(np.percentile(latencies, q)) * 1000 if latencies else float("nan")

    @property
    def errors(self) -> str:
        bad = {k: v for k, v in sorted(self.recorder.statuses.items()) if k != "200"}
        return ", ".join(f"{k}: {v}" for k, v in bad.items()) or "0"


class TritonPool:
    """A `RequestPool` that sends token rows straight to Triton (one gRPC channel; calls
    are multiplexed over HTTP/2, so concurrency needs no pool of connections)."""

    def __init__(self, url: str, rows: Sequence[np.ndarray], version: int) -> None:
        import tritonclient.grpc.aio as triton

        from server.inference.backends.triton_grpc import grpc_target

        self._client = triton.InferenceServerClient(grpc_target(url))
        self._rows = rows
        self._version = str(version)

    async def request(self, payload: int) -> str:
        from tritonclient.grpc import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException

        row = self._rows[payload]
        ids = InferInput("input_ids", list(row.shape), "INT32")
        ids.set_data_from_numpy(row)
        try:
            await self._client.infer(
                MODEL_NAME,
                [ids],
                model_version=self._version,
                outputs=[InferRequestedOutput("embedding")],
                client_timeout=REQUEST_TIMEOUT_S,
            )
        except InferenceServerException as exc:
            return exc.status() or "error"
        return "200"

    async def close(self) -> None:
        await self._client.close()


class TritonBatching:
    """Rows per model execution between two reads of Triton's Prometheus counters."""

    def __init__(self, triton: TritonServer) -> None:
        launch = triton.launch
        self._url = f"http://{launch.host}:{launch.ports.metrics}/metrics"
        self._start = self._counts()

    def _counts(self) -> tuple[float, float]:
        counts = {"nv_inference_count": 0.0, "nv_inference_exec_count": 0.0}
        for line in http_text(self._url).splitlines():
            name, _, rest = line.partition("{")
            if name in counts and f'model="{MODEL_NAME}"' in rest:
                counts[name] += float(line.rsplit(" ", 1)[1])
        return counts["nv_inference_count"], counts["nv_inference_exec_count"]

    def rows_per_execution(self) -> float:
        (rows_now, executions_now), (rows_then, executions_then) = self._counts(), self._start
        rows, executions = rows_now - rows_then, executions_now - executions_then
        return rows / executions if executions else float("nan")


def triton_view(repository: Path, version: int, out: Path, queue_delay_us: int) -> Path:
    """A repository with a python-backend config.pbtxt and a link to the version directory."""
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
    (model / str(version)).symlink_to(source.resolve(), target_is_directory=True)
    return out


@dataclass(frozen=True)
class Setup:
    """What every cell of one run shares."""

    args: argparse.Namespace
    repository: Path  # the Triton view: kbrec reads it too, so all serve one version
    db: Path
    bodies: Sequence[bytes]  # kbrec requests
    rows: Sequence[np.ndarray]  # the same tickets as token rows, for Triton direct


def kbrec_cells(
    setup: Setup, system: str, extra: Sequence[str], triton: TritonServer | None = None
) -> list[Cell]:
    args, bodies = setup.args, setup.bodies
    server = ServerProcess(list(KBREC), setup.db, extra, setup.repository)
    try:
        url, seconds = server.wait_ready()
        check_recommendation(url)
        print(f"{system}: ready in {seconds:.1f} s", file=sys.stderr)
        cells = []
        for c in args.concurrency:
            batching = TritonBatching(triton) if triton is not None else None
            result = measure(
                url,
                server,
                (system, f"closed c={c}", "raw"),
                lambda c=c: RawPool(url, bodies, c),
                lambda pool, c=c: closed_loop(pool, len(bodies), c, args.warmup, args.duration),
                args.duration,
            )
            triton_batch = batching.rows_per_execution() if batching is not None else None
            cells.append(Cell(system, c, args.duration, result.recorder, triton_batch))
        return cells
    finally:
        server.stop()


def direct_cells(setup: Setup, triton: TritonServer) -> list[Cell]:
    args, rows = setup.args, setup.rows

    async def run(concurrency: int) -> Recorder:
        # Made inside the loop: the gRPC channel binds to the running event loop.
        pool = TritonPool(triton.grpc_url, rows, args.version)
        try:
            return await closed_loop(pool, len(rows), concurrency, args.warmup, args.duration)
        finally:
            await pool.close()

    cells = []
    for c in args.concurrency:
        batching = TritonBatching(triton)
        recorder = asyncio.run(run(c))
        cell = Cell(DIRECT, c, args.duration, recorder, batching.rows_per_execution())
        print(
            f"  {DIRECT} c={c}: {cell.throughput:.1f} req/s, p50 {cell.p_ms(50):.1f} ms, "
            f"p99 {cell.p_ms(99):.1f} ms, errors {cell.errors}, "
            f"Triton rows/execution {cell.triton_batch:.1f}",
            file=sys.stderr,
        )
        cells.append(cell)
    return cells


def results_table(cells: Sequence[Cell]) -> str:
    lines = [
        "| system | concurrency | req/s | p50 ms | p99 ms | errors | Triton rows / execution |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for c in cells:
        batch = "–" if c.triton_batch is None else f"{c.triton_batch:.1f}"
        lines.append(
            f"| {c.system} | {c.concurrency} | {c.throughput:.1f} | {c.p_ms(50):.1f} "
            f"| {c.p_ms(99):.1f} | {c.errors} | {batch} |"
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
        added = front.p_ms(50) - direct.p_ms(50)
        lines.append(
            f"| {concurrency} | {front.p_ms(50):.1f} | {direct.p_ms(50):.1f} | {added:+.1f} ms |"
        )
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
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=["embedded", "triton", "unbatched", "direct"],
        default=["embedded", "triton", "unbatched", "direct"],
    )
    parser.add_argument("--triton-env", type=Path, default=DEFAULT_ENV)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO_ROOT)
    source = version_dir(args.repository, args.version)
    metadata = read_metadata(source)
    tickets = ticket_texts(args.corpus / "queries.jsonl")
    bodies = request_bodies(tickets)
    tokenizer = TextTokenizer(source / "tokenizer.json", metadata.max_length)
    rows = [np.array([row], dtype=np.int32) for row in tokenizer.encode([t.text for t in tickets])]
    cells: list[Cell] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kbrec-triton-bench-") as tmp:
        db = Path(tmp) / "kbrec.sqlite"
        if args.db is not None:
            shutil.copy(args.db, db)  # servers write to their store: never touch the original
        else:
            print("seeding a store (the first server embeds every article)", file=sys.stderr)
            seed_store(args.corpus, db)
        view = triton_view(args.repository, args.version, Path(tmp) / "triton", args.queue_delay_us)
        setup = Setup(args, view, db, bodies, rows)
        if "embedded" in args.systems:
            cells += kbrec_cells(setup, EMBEDDED, [])
        launch = TritonLaunch(view, ports=TritonPorts.free(), environment=args.triton_env)
        with TritonServer(launch) as triton:
            if "direct" in args.systems:
                cells += direct_cells(setup, triton)
            through = ["--triton-url", triton.grpc_url]
            if "triton" in args.systems:
                cells += kbrec_cells(setup, THROUGH_TRITON, through, triton)
            if "unbatched" in args.systems:
                unbatched = [*through, "--max-batch-size", "1"]
                cells += kbrec_cells(setup, UNBATCHED, unbatched, triton)
    command = shlex.join([".venv/bin/python", "bench/triton_benchmark.py", *sys.argv[1:]])
    lengths = [row.shape[1] for row in rows]
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
