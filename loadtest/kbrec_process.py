"""kbrec as child processes, for benchmarks that load a real server.

Every benchmark of bench/ starts `kbrec serve` the same way: on port 0 (a free port,
so runs never collide), timed from spawn to the first /readyz 200, stopped at the end
whatever happens. The server is a child process rather than an in-process app so
that its CPU and memory can be read from /proc apart from the generator's, and so
that it runs exactly as deployed (`--launcher` can wrap it, e.g. in `taskset`).
The CLI is started by module name, never imported: loadtest sits below `cli/`.
`ServerProcess` is the same for any HTTP server a benchmark runs next to kbrec (e.g.
the anchor of bench/frontend_benchmark.py): only its command and ready line differ.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from loadtest.kbrec_api import RECOMMEND_PATH
from loadtest.proc_stats import memory_kib, tree_cpu_s

KBREC: Final = (sys.executable, "-m", "cli.main")
START_TIMEOUT_S: Final = 900.0  # a first start embeds every article of the store
STOP_TIMEOUT_S: Final = 60.0
READY_LINE: Final = re.compile(r"kbrec ready on (http://\S+) ")
EMBED_LINE: Final = re.compile(r"index of version \d+: (\d+) stored vectors, (\d+) articles")
QUERY_LANE: Final = 'lane="query"'


class ServeError(RuntimeError):
    """A server (`kbrec serve`) exited or never got ready; the message ends with its last
    output."""


class ServerProcess:
    """An HTTP server as a child process that logs its URL once it listens; stopped on
    leaving a `with` block.

    Ready is that log line (its first group is the URL) followed by a /readyz that
    answers 200. A thread reads the output (kept in `lines` for error messages) and
    hands each line to `_on_line`, so a subclass can follow the server's start-up.
    """

    name = "server"

    def __init__(self, command: Sequence[str], ready_line: re.Pattern[str]) -> None:
        self.command = list(command)
        self.lines: list[str] = []
        self.url = ""
        self.ready_at: float | None = None
        self._ready_pattern = ready_line
        self._ready_line = threading.Event()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
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
            self._on_line(line)
            if (ready := self._ready_pattern.search(line)) is not None:
                self.url = ready.group(1)
                self._ready_line.set()
        self._ready_line.set()  # exited: wake the waiter

    def _on_line(self, line: str) -> None:
        """Called with every output line, in the reader thread."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> float:
        """Seconds from spawn to the first /readyz 200; `url` is set from then on."""
        deadline = self.started + timeout_s
        if not self._ready_line.wait(timeout_s) or not self.url:
            raise self._error("did not log that it is ready")
        while http_status(f"{self.url}/readyz") != 200:
            if time.perf_counter() > deadline or self.process.poll() is not None:
                raise self._error(f"{self.url}/readyz never answered 200")
            time.sleep(0.01)
        self.ready_at = time.perf_counter()
        return self.ready_at - self.started

    def cpu_s(self) -> float:
        """CPU seconds of the server and its child processes (`kbrec serve --workers`)."""
        return tree_cpu_s(self.pid)

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.pid)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)

    def _error(self, what: str) -> ServeError:
        self.stop()
        return ServeError(f"{self.name} {what}:\n" + "".join(self.lines[-30:]))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class ServeProcess(ServerProcess):
    """`kbrec serve --port 0 ARGS` as a child process.

    Besides readiness, the reader notes when the server starts embedding articles, so
    a start-up can be split into loading and embedding.
    """

    name = "kbrec serve"

    def __init__(self, serve_args: Sequence[str], launcher: Sequence[str] = KBREC) -> None:
        self.embed_started: float | None = None
        self.articles_to_embed = 0
        super().__init__([*launcher, "serve", "--port", "0", *serve_args], READY_LINE)

    def _on_line(self, line: str) -> None:
        if (embed := EMBED_LINE.search(line)) is not None:
            self.embed_started = time.perf_counter()
            self.articles_to_embed = int(embed.group(2))

    @property
    def embed_seconds(self) -> float | None:
        """From the start of embedding the store's articles to ready (None: nothing to embed)."""
        if self.embed_started is None or self.ready_at is None or not self.articles_to_embed:
            return None
        return self.ready_at - self.embed_started


def seed_store(corpus: Path, db: Path | str, launcher: Sequence[str] = KBREC) -> float:
    """`kbrec store import` of a corpus into `db` (a file or a store URL); returns its
    wall seconds."""
    start = time.perf_counter()
    command = [*launcher, "store", "import", "--corpus", str(corpus), "--db", str(db)]
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def check_recommendation(url: str, account_id: str, text: str, top_k: int) -> None:
    """One real request before any timing: the service must rank `top_k` articles."""
    body = json.dumps({"account_id": account_id, "text": text, "top_k": top_k}).encode()
    request = urllib.request.Request(
        f"{url}{RECOMMEND_PATH}", body, {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if len(answer["articles"]) != top_k:
        raise ServeError(f"expected {top_k} articles for {account_id!r}, got {answer}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def fetch_text(url: str) -> str:
    """A GET's body. Blocking: call it between load levels, never during one."""
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def fetch_json(url: str) -> Any:
    return json.loads(fetch_text(url))


def batch_counters(url: str) -> dict[str, float]:
    """kbrec's query batcher from /metrics: batches, rows and seconds in backend calls
    (ranking included) so far; differences over a load level give its mean batch size
    and how busy the backend was."""
    names = {
        "kbrec_batch_size_count": "batches",
        "kbrec_batch_size_sum": "batch_rows",
        "kbrec_batch_duration_seconds_sum": "batch_seconds",
    }
    counters = dict.fromkeys(names.values(), 0.0)
    for line in fetch_text(f"{url}/metrics").splitlines():
        name = line.split("{", 1)[0]
        if name in names and QUERY_LANE in line:
            counters[names[name]] = float(line.rsplit(" ", 1)[1])
    return counters
