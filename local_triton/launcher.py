"""Start the local tritonserver on a model repository, wait until the model is READY, stop it.

    with TritonServer(TritonLaunch(repository, ports=TritonPorts.free())) as triton:
        ... triton.grpc_url ...

The server runs in explicit model-control mode with exactly one model loaded
(`--load-model`), which is also how a later live upgrade swaps versions without
failed requests (docs/architecture.md, "Platform facts"). Readiness is Triton's
own: server ready and model ready over the HTTP v2 health endpoints, polled until
a deadline; if the process exits first, the error carries the tail of its log.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from kbrec.repository import CONFIG_FILE, MODEL_NAME, list_versions, model_dir
from local_triton.environment import DEFAULT_ENV, TritonEnvironment

LOG_TAIL_LINES: Final = 40
POLL_S: Final = 0.05
PROBE_TIMEOUT_S: Final = 2.0
BACKEND_LINE: Final = re.compile(r'^\s*backend\s*:\s*"([^"]+)"', re.MULTILINE)


class TritonLaunchError(Exception):
    """tritonserver could not be started or did not get ready; the message says why."""


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> TritonPorts:
        """Three distinct ports that are free now (held together, so never the same one)."""
        with contextlib.ExitStack() as stack:
            sockets = [
                stack.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(3)
            ]
            http, grpc, metrics = (s.getsockname()[1] for s in sockets)
        return cls(http=http, grpc=grpc, metrics=metrics)


@dataclass(frozen=True)
class TritonLaunch:
    """What to start: which repository and model, where to listen, how long to wait."""

    repository: Path
    model: str = MODEL_NAME
    ports: TritonPorts = field(default_factory=TritonPorts)
    address: str = "127.0.0.1"
    environment: Path = DEFAULT_ENV
    ready_timeout_s: float = 120.0
    # Triton waits this long for in-flight requests on SIGTERM; then we kill it.
    exit_timeout_s: int = 10

    @property
    def host(self) -> str:
        """The address clients use: a wildcard listen address is reached on loopback."""
        return "127.0.0.1" if self.address in {"0.0.0.0", ""} else self.address

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"


def check_repository(repository: Path, model: str) -> None:
    """The local Triton has the python backend only: refuse anything else up front."""
    config = model_dir(repository, model) / CONFIG_FILE
    if not config.is_file():
        raise TritonLaunchError(f"{config} not found: publish a version with `kbrec convert`")
    match = BACKEND_LINE.search(config.read_text(encoding="utf-8"))
    backend = match.group(1) if match else None
    if backend != "python":
        raise TritonLaunchError(
            f"{config} is for backend {backend!r}, but the local Triton has the python backend "
            "only: publish the version with `kbrec convert --backend python`"
        )
    if not list_versions(repository, model):
        raise TritonLaunchError(f"{model_dir(repository, model)} has no version")


def triton_command(launch: TritonLaunch, environment: TritonEnvironment) -> list[str]:
    ports = launch.ports
    return [
        str(environment.tritonserver),
        f"--model-repository={launch.repository.absolute()}",
        "--model-control-mode=explicit",
        f"--load-model={launch.model}",
        f"--backend-directory={environment.backend_directory}",
        f"--http-address={launch.address}",
        f"--http-port={ports.http}",
        f"--grpc-address={launch.address}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={launch.address}",
        f"--metrics-port={ports.metrics}",
        "--allow-gpu-metrics=false",  # no GPU here; spares a DCGM error at start
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={launch.exit_timeout_s}",
    ]


def triton_environ(environment: TritonEnvironment, base: Mapping[str, str]) -> dict[str, str]:
    """The server's environment: the stub embeds the first `python3` on PATH (the Triton
    venv's, with numpy<2 and ONNX Runtime), and must not write bytecode into the
    repository (poll mode would reload the model on the new `__pycache__`; see
    docs/architecture.md, "Platform facts")."""
    env = {k: v for k, v in base.items() if k not in {"PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = os.pathsep.join([str(environment.bin_dir), base.get("PATH", os.defpath)])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class LogTail:
    """Drains the server's output (a full pipe would stall it), keeps the last lines and
    optionally echoes every line to a stream."""

    def __init__(self, stream: TextIO, echo: TextIO | None, lines: int = LOG_TAIL_LINES) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._echo = echo
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: TextIO) -> None:
        for line in stream:
            self._lines.append(line.rstrip("\n"))
            if self._echo is not None:
                self._echo.write(line)
                self._echo.flush()

    def text(self) -> str:
        return "\n".join(self._lines)

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)


class TritonServer:
    """One tritonserver process; a context manager that starts it ready and stops it."""

    def __init__(self, launch: TritonLaunch, echo: TextIO | None = None) -> None:
        self.launch = launch
        self._echo = echo
        self._process: subprocess.Popen[str] | None = None
        self._log: LogTail | None = None

    @property
    def grpc_url(self) -> str:
        return self.launch.grpc_url

    @property
    def http_url(self) -> str:
        return self.launch.http_url

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log_tail(self) -> str:
        return "" if self._log is None else self._log.text()

    def start(self) -> None:
        """Spawn tritonserver and return once the model is READY (TritonLaunchError if not)."""
        if self._process is not None:
            raise RuntimeError("this TritonServer was already started")
        environment = TritonEnvironment.locate(self.launch.environment)
        environment.check()
        check_repository(self.launch.repository, self.launch.model)
        self._process = subprocess.Popen(
            triton_command(self.launch, environment),
            env=triton_environ(environment, os.environ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own session: a terminal's Ctrl-C reaches kbrec, which stops it in order.
            start_new_session=True,
        )
        assert self._process.stdout is not None
        self._log = LogTail(self._process.stdout, self._echo)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.launch.ready_timeout_s
        while not self.ready():
            # Waiting on the process is the pause between polls: an exit ends it at once.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self._process.wait(POLL_S)
                assert self._log is not None
                self._log.join(PROBE_TIMEOUT_S)  # the last lines say why
                raise TritonLaunchError(
                    f"tritonserver exited with status {code} before {self.launch.model!r} "
                    f"was ready; its log ends:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise TritonLaunchError(
                    f"{self.launch.model!r} not ready after {self.launch.ready_timeout_s:.0f} s; "
                    f"tritonserver's log ends:\n{self.log_tail()}"
                )

    def ready(self) -> bool:
        """Server ready and the model ready (Triton's HTTP v2 health endpoints)."""
        paths = ("/v2/health/ready", f"/v2/models/{self.launch.model}/ready")
        return all(http_ok(self.http_url + path) for path in paths)

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def wait(self) -> int:
        """Block until the process ends by itself; its exit status."""
        if self._process is None:
            raise RuntimeError("not started")
        return self._process.wait()

    def stop(self) -> int | None:
        """SIGTERM (Triton drains in-flight requests), SIGKILL after its exit timeout."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(self.launch.exit_timeout_s + 5)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        # Stopped while a model was loading, Triton leaves its python-backend stubs
        # running; they are in the process group start() created, so end them too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.join(PROBE_TIMEOUT_S)
        return code

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
