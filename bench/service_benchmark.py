"""Recommendation service benchmark: raw encoder limit, start-up, throughput and latency.

    .venv/bin/python bench/service_benchmark.py > /tmp/service_benchmark.md

One run prints Markdown tables for:

1. the raw encoder (ONNX Runtime alone, default threads) on the ticket texts of
   bench/ticket_texts.py, batches padded to their longest member: the limit of
   this machine;
2. `kbrec serve` start-up on a fresh store (every article embedded) and on a
   second start with the vectors stored;
3. each server configuration (default: micro-batching on, and off with
   --max-batch-size 1): closed-loop runs at fixed concurrencies and one
   open-loop run at a fixed Poisson arrival rate, whose latencies are measured
   from each request's scheduled send time, so a stalled server or generator
   cannot hide queueing.

Settings are compared by naming server configurations, each measured in the same run:

    .venv/bin/python bench/service_benchmark.py --db seeded.sqlite --concurrency 4 64
        --config "off=--max-batch-size 1" --config "wait 0=--max-wait-ms 0"

(--db reuses a store whose vectors are already embedded and skips the fresh-store
start-up; --launcher runs the server through another command, e.g. `taskset`.)

The load generator is one asyncio process speaking HTTP/1.1 over raw asyncio
streams (keep-alive, one connection per concurrent request), because on a
small machine it shares the cores with the server; its CPU time per request is
measured and reported, and one run repeats a closed-loop point with httpx for
comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import onnxruntime as ort

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script: the repo's packages come first

from bench.ticket_texts import Ticket, ticket_texts  # noqa: E402
from kbrec.tokenization import TextTokenizer, pad_batch  # noqa: E402

RECOMMEND_PATH: Final = "/v1/recommendations"
TOP_K: Final = 5
REQUEST_TIMEOUT_S: Final = 10.0
START_TIMEOUT_S: Final = 900.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
READY_LINE: Final = re.compile(r"kbrec ready on (http://\S+) ")
EMBED_LINE: Final = re.compile(r"index of version \d+: (\d+) stored vectors, (\d+) articles")
KBREC: Final = (sys.executable, "-m", "cli.main")
OPEN_LOOP_SEED: Final = 7
# uvicorn closes keep-alive connections idle for 5 s; like HTTP client pools, reopen
# a connection idle for longer than this instead of racing the server's close.
KEEP_ALIVE_REUSE_S: Final = 4.0
# Enough connections that the open-loop generator never waits for one below saturation.
OPEN_LOOP_POOL: Final = 256


# --- 1. raw encoder ------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderRow:
    order: str  # "mixed": tickets as they come; "length-sorted": similar lengths together
    batch: int
    runs: int
    mean_tokens: float  # real tokens per row
    mean_padded_length: float  # what the model computes on
    median_ms: float
    p99_ms: float

    @property
    def queries_per_s(self) -> float:
        return self.batch / self.median_ms * 1000


def ticket_batches(rows: Sequence[Sequence[int]], batch: int, count: int) -> list[np.ndarray]:
    """`count` batches cycling through the tickets, each padded to its longest member."""
    return [
        pad_batch([rows[(k * batch + j) % len(rows)] for j in range(batch)]) for k in range(count)
    ]


def time_encoder(
    run: Callable[[np.ndarray], object], batches: Sequence[np.ndarray], budget_s: float
) -> list[float]:
    """ms per call over the batches in turn, until the budget is spent (at least 5 calls)."""
    for warm in batches[:2]:
        run(warm)
    times: list[float] = []
    deadline = time.perf_counter() + budget_s
    k = 0
    while len(times) < 5 or (time.perf_counter() < deadline and k < len(batches)):
        ids = batches[k % len(batches)]
        start = time.perf_counter()
        run(ids)
        times.append((time.perf_counter() - start) * 1000)
        k += 1
    return times


def encoder_row(
    session: ort.InferenceSession,
    rows: Sequence[Sequence[int]],
    order: str,
    batch: int,
    budget_s: float,
) -> EncoderRow:
    input_name = session.get_inputs()[0].name

    def run(ids: np.ndarray) -> object:
        return session.run(None, {input_name: ids})

    # Batch 1 visits every ticket twice, so its latency covers the whole length mix.
    count = 2 * len(rows) if batch == 1 else max(len(rows) // batch * 4, 8)
    batches = ticket_batches(rows, batch, count)
    times = time_encoder(run, batches, budget_s)
    used = [batches[k % len(batches)] for k in range(len(times))]
    return EncoderRow(
        order=order,
        batch=batch,
        runs=len(times),
        mean_tokens=float(np.mean([np.count_nonzero(ids) / ids.shape[0] for ids in used])),
        mean_padded_length=float(np.mean([ids.shape[1] for ids in used])),
        median_ms=float(np.median(times)),
        p99_ms=float(np.percentile(times, 99)),
    )


def raw_encoder_rows(
    model_path: Path, rows: Sequence[Sequence[int]], batch_sizes: Sequence[int], budget_s: float
) -> list[EncoderRow]:
    """Rows per batch size, tickets mixed as they arrive (the limit of this machine), then
    sorted by length: what a length-aware batcher could reach. The session is freed on
    return, so its intra-op thread pool does not linger next to the server."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    by_length = sorted(rows, key=len)
    results = []
    for order, ordered in (("mixed", rows), ("length-sorted", by_length)):
        # One row has no padding: batch 1 is the same in both orders.
        sizes = [b for b in batch_sizes if order == "mixed" or b > 1]
        for batch in sizes:
            results.append(encoder_row(session, ordered, order, batch, budget_s))
            row = results[-1]
            print(f"  raw encoder {order} batch {batch}: {row.median_ms:.1f} ms", file=sys.stderr)
    return results


# --- 2. the server process -----------------------------------------------------------


def system_busy_cpu_s() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait (from /proc/stat)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]
    # guest time is already inside user time
    return (sum(ticks[:8]) - idle) / CLOCK_TICKS


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class ServerProcess:
    """`kbrec serve --port 0` as a child process, timed from spawn to /readyz 200.

    The URL is known only from the ready log line (port 0), so readiness is that
    line followed by a /readyz that answers 200.
    """

    def __init__(
        self, launcher: Sequence[str], db: Path, extra_args: Sequence[str], repository: Path
    ) -> None:
        command = [*launcher, "serve", "--port", "0"]
        command += ["--db", str(db), "--repository", str(repository), *extra_args]
        self.command = command
        self.lines: list[str] = []
        self.embed_started: float | None = None
        self.articles_to_embed = 0
        self._ready_url: str | None = None
        self._ready = threading.Event()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if (embed := EMBED_LINE.search(line)) is not None:
                self.embed_started = time.perf_counter()
                self.articles_to_embed = int(embed.group(2))
            if (ready := READY_LINE.search(line)) is not None:
                self._ready_url = ready.group(1)
                self._ready.set()
        self._ready.set()  # exited: wake the waiter

    def wait_ready(self) -> tuple[str, float]:
        """(base URL, seconds from spawn to the first /readyz 200)."""
        if not self._ready.wait(START_TIMEOUT_S) or self._ready_url is None:
            self.stop()
            raise RuntimeError("kbrec serve did not get ready:\n" + "".join(self.lines[-30:]))
        url = self._ready_url
        deadline = time.perf_counter() + START_TIMEOUT_S
        while http_status(f"{url}/readyz") != 200:
            if time.perf_counter() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"{url}/readyz never answered 200")
            time.sleep(0.01)
        return url, time.perf_counter() - self.started

    def cpu_s(self) -> float:
        return process_cpu_s(self.process.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


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
    label: str, args: argparse.Namespace, db: Path, extra_args: Sequence[str]
) -> tuple[ServerProcess, str, StartResult]:
    server = ServerProcess(shlex.split(args.launcher), db, extra_args, args.repository)
    url, seconds = server.wait_ready()
    try:
        check_recommendation(url)
    except BaseException:
        server.stop()
        raise
    embed_seconds = None
    if server.embed_started is not None:
        embed_seconds = server.started + seconds - server.embed_started
    result = StartResult(label, seconds, server.articles_to_embed, embed_seconds)
    print(f"  {label}: ready in {seconds:.1f} s", file=sys.stderr)
    return server, url, result


def check_recommendation(url: str) -> None:
    """One real request before any timing: the service must rank top_k articles."""
    body = json.dumps({"account_id": "writer", "text": "page numbers", "top_k": TOP_K}).encode()
    request = urllib.request.Request(
        f"{url}{RECOMMEND_PATH}", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if len(answer["articles"]) != TOP_K:
        raise RuntimeError(f"expected {TOP_K} articles, got {answer}")


def seed_store(corpus: Path, db: Path) -> float:
    """`kbrec store import` into a new db; returns its wall seconds."""
    start = time.perf_counter()
    subprocess.run(
        [*KBREC, "store", "import", "--corpus", str(corpus), "--db", str(db)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


# --- 3. load generation --------------------------------------------------------------


class RequestPool(Protocol):
    async def request(self, payload: int) -> str:
        """Send request `payload` (an index); the status code as text, or an error name."""
        ...

    async def close(self) -> None: ...


def request_bodies(tickets: Sequence[Ticket]) -> list[bytes]:
    return [
        json.dumps({"account_id": t.account_id, "text": t.text, "top_k": TOP_K}).encode()
        for t in tickets
    ]


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: cheap on the CPU.

    The server (uvicorn + Starlette) always sends Content-Length, so no chunked decoding.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._last_used = 0.0

    async def exchange(self, raw_request: bytes) -> tuple[int, bytes]:
        now = asyncio.get_running_loop().time()
        if self._streams is not None and (
            now - self._last_used > KEEP_ALIVE_REUSE_S or self._streams[0].at_eof()
        ):
            self.close()  # the server may have closed it already: no request on a dead socket
        if self._streams is None:
            self._streams = await asyncio.open_connection(self._host, self._port)
        self._last_used = now
        reader, writer = self._streams
        writer.write(raw_request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        start = lowered.index(b"content-length:") + len(b"content-length:")
        body = await reader.readexactly(int(lowered[start : lowered.index(b"\r\n", start)]))
        if b"connection: close" in lowered:
            self.close()
        return status, body

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


def raw_post(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class RawPool:
    """Connections opened on first use and reused LIFO (warm ones first)."""

    def __init__(self, url: str, bodies: Sequence[bytes], size: int) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self._requests = [raw_post(host, int(port), RECOMMEND_PATH, body) for body in bodies]
        self._free: asyncio.LifoQueue[RawConnection] = asyncio.LifoQueue()
        for _ in range(size):
            self._free.put_nowait(RawConnection(host, int(port)))

    async def request(self, payload: int) -> str:
        connection = await self._free.get()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                status, _ = await connection.exchange(self._requests[payload])
            return str(status)
        except TimeoutError:
            connection.close()  # a half-read response would poison the next request
            return "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            connection.close()
            return f"connection error ({type(exc).__name__})"
        finally:
            self._free.put_nowait(connection)

    async def close(self) -> None:
        while not self._free.empty():
            self._free.get_nowait().close()


class HttpxPool:
    """The same requests through httpx.AsyncClient, to compare the generator's CPU cost."""

    def __init__(self, url: str, bodies: Sequence[bytes], size: int) -> None:
        import httpx

        self._bodies = bodies
        self._url = url + RECOMMEND_PATH
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=REQUEST_TIMEOUT_S,
            headers={"content-type": "application/json"},
        )
        self._errors: tuple[type[Exception], ...] = (httpx.TransportError,)

    async def request(self, payload: int) -> str:
        try:
            response = await self._client.post(self._url, content=self._bodies[payload])
        except self._errors as exc:
            return f"connection error ({type(exc).__name__})"
        return str(response.status_code)

    async def close(self) -> None:
        await self._client.aclose()


@dataclass
class Recorder:
    """Latencies of requests started in the window; completions counted in the window."""

    window_start: float
    window_end: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    completed_in_window: int = 0
    completed_total: int = 0

    def add(self, started: float, ended: float, status: str) -> None:
        self.completed_total += 1
        if self.window_start <= ended <= self.window_end and status == "200":
            self.completed_in_window += 1
        if started >= self.window_start and started < self.window_end:
            self.latencies_s.append(ended - started)
            self.statuses[status] += 1


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds (generator, server) and the batcher's metrics at one instant."""

    generator_cpu_s: float
    server_cpu_s: float
    system_cpu_s: float
    batches: float
    batch_rows: float
    batch_seconds: float


def metric_sum(text: str, name: str, lane: str = "query") -> float:
    for line in text.splitlines():
        if line.startswith(name) and f'lane="{lane}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def snapshot(url: str, server: ServerProcess) -> Snapshot:
    # Read between phases, never during a timed window (urllib blocks the loop briefly).
    text = http_text(f"{url}/metrics")
    return Snapshot(
        generator_cpu_s=time.process_time(),
        server_cpu_s=server.cpu_s(),
        system_cpu_s=system_busy_cpu_s(),
        batches=metric_sum(text, "kbrec_batch_size_count"),
        batch_rows=metric_sum(text, "kbrec_batch_size_sum"),
        batch_seconds=metric_sum(text, "kbrec_batch_duration_seconds_sum"),
    )


@dataclass(frozen=True)
class LoadResult:
    config: str
    mode: str  # "closed c=16" or "open 120/s"
    client: str
    duration_s: float  # the timed window
    elapsed_s: float  # the whole run, warm-up included: what the snapshots span
    recorder: Recorder
    before: Snapshot
    after: Snapshot

    @property
    def throughput(self) -> float:
        return self.recorder.completed_in_window / self.duration_s

    def percentile_ms(self, q: float) -> float:
        if not self.recorder.latencies_s:
            return float("nan")
        return float(np.percentile(self.recorder.latencies_s, q)) * 1000

    @property
    def errors(self) -> str:
        bad = {k: v for k, v in sorted(self.recorder.statuses.items()) if k != "200"}
        return ", ".join(f"{k}: {v}" for k, v in bad.items()) or "0"

    def spent(self, attribute: str) -> float:
        return getattr(self.after, attribute) - getattr(self.before, attribute)

    def cpu_ms_per_request(self, attribute: str) -> float:
        return self.spent(attribute) / max(self.recorder.completed_total, 1) * 1000

    def cpu_share(self, attribute: str) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.spent(attribute) / self.elapsed_s

    @property
    def other_cpu_share(self) -> float:
        """Cores busy with neither the server nor the generator: the neighbours' noise."""
        ours = self.spent("server_cpu_s") + self.spent("generator_cpu_s")
        return max(self.spent("system_cpu_s") - ours, 0.0) / self.elapsed_s

    @property
    def mean_batch(self) -> float:
        return self.spent("batch_rows") / max(self.spent("batches"), 1)

    @property
    def backend_busy(self) -> float:
        """Share of the wall time the batcher spent in backend calls (and ranking)."""
        return self.spent("batch_seconds") / self.elapsed_s


async def closed_loop(
    pool: RequestPool, payloads: int, concurrency: int, warmup_s: float, duration_s: float
) -> Recorder:
    """`concurrency` workers, each sending its next request as soon as one returns."""
    loop = asyncio.get_running_loop()
    window_start = loop.time() + warmup_s
    recorder = Recorder(window_start, window_start + duration_s)

    async def worker(first: int) -> None:
        k = first
        while (started := loop.time()) < recorder.window_end:
            status = await pool.request(k % payloads)
            recorder.add(started, loop.time(), status)
            k += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return recorder


async def open_loop(
    pool: RequestPool, payloads: int, rate: float, warmup_s: float, duration_s: float
) -> Recorder:
    """Poisson arrivals at `rate`/s; latency counts from the scheduled send time."""
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(OPEN_LOOP_SEED)
    total_s = warmup_s + duration_s
    gaps = rng.exponential(1 / rate, size=int(rate * total_s * 1.5) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < total_s]
    start = loop.time()
    recorder = Recorder(start + warmup_s, start + total_s)

    async def send(k: int, scheduled: float) -> None:
        status = await pool.request(k % payloads)
        recorder.add(scheduled, loop.time(), status)

    tasks = []
    for k, offset in enumerate(offsets):
        scheduled = start + float(offset)
        if (delay := scheduled - loop.time()) > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(k, scheduled)))
    await asyncio.gather(*tasks)
    return recorder


@dataclass(frozen=True)
class LoadPlan:
    warmup_s: float
    duration_s: float
    concurrencies: tuple[int, ...]
    open_rates: tuple[float, ...]  # the first is the one judged against the p99 target


def measure(
    url: str,
    server: ServerProcess,
    label: tuple[str, str, str],
    make_pool: Callable[[], RequestPool],
    drive: Callable[[RequestPool], Awaitable[Recorder]],
    duration_s: float,
) -> LoadResult:
    async def run() -> Recorder:
        pool = make_pool()
        try:
            return await drive(pool)
        finally:
            await pool.close()

    before = snapshot(url, server)
    started = time.perf_counter()
    recorder = asyncio.run(run())
    elapsed = time.perf_counter() - started
    after = snapshot(url, server)
    result = LoadResult(*label, duration_s, elapsed, recorder, before, after)
    print(
        f"  {label[0]} {label[1]} ({label[2]}): {result.throughput:.1f} req/s, "
        f"p50 {result.percentile_ms(50):.1f} ms, p99 {result.percentile_ms(99):.1f} ms, "
        f"errors {result.errors}",
        file=sys.stderr,
    )
    return result


def load_runs(
    config: str,
    url: str,
    server: ServerProcess,
    bodies: Sequence[bytes],
    plan: LoadPlan,
    httpx_check: int | None,
) -> list[LoadResult]:
    """Closed loop at each concurrency, then each open-loop rate; optionally one httpx point."""
    n = len(bodies)
    results = []
    for concurrency in plan.concurrencies:
        results.append(
            measure(
                url,
                server,
                (config, f"closed c={concurrency}", "raw"),
                lambda c=concurrency: RawPool(url, bodies, c),
                lambda pool, c=concurrency: closed_loop(pool, n, c, plan.warmup_s, plan.duration_s),
                plan.duration_s,
            )
        )
    for rate in plan.open_rates:
        results.append(
            measure(
                url,
                server,
                (config, f"open {rate:.0f}/s", "raw"),
                lambda: RawPool(url, bodies, OPEN_LOOP_POOL),
                lambda pool, r=rate: open_loop(pool, n, r, plan.warmup_s, plan.duration_s),
                plan.duration_s,
            )
        )
    if httpx_check is not None:
        results.append(
            measure(
                url,
                server,
                (config, f"closed c={httpx_check}", "httpx"),
                lambda: HttpxPool(url, bodies, httpx_check),
                lambda pool: closed_loop(pool, n, httpx_check, plan.warmup_s, plan.duration_s),
                plan.duration_s,
            )
        )
    return results


# --- Markdown ------------------------------------------------------------------------


def encoder_table(rows: Sequence[EncoderRow]) -> str:
    lines = [
        "| batch order | batch | timed batches | tokens / row | padded to | median ms / batch "
        "| p99 ms | queries/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.order} | {r.batch} | {r.runs} | {r.mean_tokens:.1f} "
            f"| {r.mean_padded_length:.1f} | {r.median_ms:.1f} "
            f"| {r.p99_ms:.1f} | {r.queries_per_s:.0f} |"
        )
    return "\n".join(lines)


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


def load_table(results: Sequence[LoadResult]) -> str:
    lines = [
        "| server | load | client | req/s | p50 ms | p90 ms | p99 ms | errors "
        "| mean batch | backend busy | server CPU ms/req | server CPU (cores) "
        "| generator CPU ms/req | generator CPU (cores) | other CPU (cores) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.config} | {r.mode} | {r.client} | {r.throughput:.1f} "
            f"| {r.percentile_ms(50):.1f} | {r.percentile_ms(90):.1f} "
            f"| {r.percentile_ms(99):.1f} | {r.errors} | {r.mean_batch:.1f} "
            f"| {r.backend_busy:.0%} | {r.cpu_ms_per_request('server_cpu_s'):.2f} "
            f"| {r.cpu_share('server_cpu_s'):.2f} "
            f"| {r.cpu_ms_per_request('generator_cpu_s'):.2f} "
            f"| {r.cpu_share('generator_cpu_s'):.2f} | {r.other_cpu_share:.2f} |"
        )
    return "\n".join(lines)


def summary_table(
    results: Sequence[LoadResult], raw_best: float, single_ms: float, configs: Sequence[str]
) -> str:
    lines = [
        "| server | saturation req/s | of raw encoder best | open-loop p99 ms "
        "| p99 target (3 × single query) | open loop offered → achieved req/s, errors |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for config in configs:
        closed = [r for r in results if r.config == config and r.mode.startswith("closed")]
        closed = [r for r in closed if r.client == "raw"]
        opened = [r for r in results if r.config == config and r.mode.startswith("open")]
        best = max(r.throughput for r in closed)
        p99 = opened[0].percentile_ms(99)
        target = 3 * single_ms
        lines.append(
            f"| {config} | {best:.1f} | {best / raw_best:.0%} "
            f"({'meets' if best >= 0.85 * raw_best else 'misses'} 85%) "
            f"| {p99:.1f} | {target:.1f} ({'meets' if p99 < target else 'misses'}) "
            f"| {opened[0].mode.removeprefix('open ')} → {opened[0].throughput:.1f}, "
            f"{opened[0].errors} |"
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------


def parse_configs(specs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """'name=--flag value ...' → (name, extra `kbrec serve` arguments)."""
    configs = []
    for spec in specs:
        name, _, flags = spec.partition("=")
        configs.append((name, shlex.split(flags)))
    return configs


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


def machine_note() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPU cores (shared machine), Python {sys.version.split()[0]}, "
        f"ONNX Runtime {ort.__version__}; load average at start {load}"
    )


def ticket_note(rows: Sequence[Sequence[int]], tickets: Sequence[Ticket]) -> str:
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
    os.chdir(REPO_ROOT)
    version_dir = args.repository / "encoder" / str(args.version)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    tokenizer = TextTokenizer(version_dir / "tokenizer.json", metadata["max_length"])
    tickets = ticket_texts(args.corpus / "queries.jsonl")
    rows = tokenizer.encode([t.text for t in tickets])
    out: list[str] = [
        f"Run {datetime.date.today().isoformat()}: "
        f"`{shlex.join(['.venv/bin/python', 'bench/service_benchmark.py', *sys.argv[1:]])}`",
        "",
        f"Machine: {machine_note()}.",
        "",
        f"Requests: {ticket_note(rows, tickets)}; top_k {TOP_K}.",
    ]

    print("raw encoder", file=sys.stderr)
    encoder = raw_encoder_rows(version_dir / "model.onnx", rows, args.batches, args.encoder_seconds)
    best = max((r for r in encoder if r.order == "mixed"), key=lambda r: r.queries_per_s)
    raw_best = best.queries_per_s
    single = next(r for r in encoder if r.batch == 1)
    single_ms = single.median_ms
    out += ["", "### Raw encoder (ONNX Runtime alone, default threads)", "", encoder_table(encoder)]
    out += [
        "",
        f"Limit of this machine: {raw_best:.0f} queries/s (batch {best.batch}); "
        f"one query {single_ms:.1f} ms (median over the tickets; p99 {single.p99_ms:.1f} ms).",
    ]

    with tempfile.TemporaryDirectory(prefix="kbrec-bench-") as tmp:
        db = Path(tmp) / "kbrec.sqlite"
        results, start_md = run_service(args, db, raw_best)
    out += ["", "### Service start", "", start_md]
    out += ["", "### Service load", "", load_table(results)]
    names = [name for name, _ in parse_configs(args.configs)]
    out += ["", summary_table(results, raw_best, single_ms, names)]
    out += ["", f"Load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}."]
    print("\n".join(out))
    return 0


def run_service(
    args: argparse.Namespace, db: Path, raw_best: float
) -> tuple[list[LoadResult], str]:
    """Start-up timings, then every configuration's load runs; (results, start table)."""
    starts: list[StartResult] = []
    import_s = None
    if args.db is not None:
        shutil.copy(args.db, db)  # the store is written to: never touch the original
    else:
        print("seeding the store and first start", file=sys.stderr)
        import_s = seed_store(args.corpus, db)
        server, _, first = start_server(
            "first start, spawn → /readyz 200 (embeds every article)", args, db, []
        )
        server.stop()
        starts.append(first)
    tickets = ticket_texts(args.corpus / "queries.jsonl")
    bodies = request_bodies(tickets)
    rates = tuple(args.open_rate or [round(args.open_load * raw_best)])
    plan = LoadPlan(args.warmup, args.duration, tuple(args.concurrency), rates)
    results: list[LoadResult] = []
    for i, (name, flags) in enumerate(parse_configs(args.configs)):
        label = f"start with vectors stored, spawn → /readyz 200: {name}"
        server, url, start = start_server(label, args, db, flags)
        starts.append(start)
        try:
            check = args.httpx_check if i == 0 and args.httpx_check > 0 else None
            results += load_runs(name, url, server, bodies, plan, check)
        finally:
            with contextlib.suppress(Exception):
                server.stop()
    return results, start_table(starts, import_s)


if __name__ == "__main__":
    raise SystemExit(main())
