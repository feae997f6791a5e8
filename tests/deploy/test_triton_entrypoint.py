"""deploy/triton-entrypoint.sh (Dockerfile.gpu's entry point), run here without Docker.

`tritonserver` on PATH is a wrapper around the local CPU Triton (`make triton-env`)
and the repository is the tiny encoder converted for the python backend; `kbrec` and
`python` come from the test's own virtualenv. What is checked is the script's own
job: Triton first, kbrec once the model is ready, both stopped in order on SIGTERM,
and neither left running when the other dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from local_triton.environment import TritonEnvError, TritonEnvironment

pytestmark = pytest.mark.triton

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO_ROOT / "deploy" / "triton-entrypoint.sh"
DEADLINE_S = 120.0


def triton_environment() -> TritonEnvironment:
    try:
        environment = TritonEnvironment.locate(REPO_ROOT / ".venv-triton")
        environment.check()
    except TritonEnvError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the local Triton is missing in CI: {exc}")
        pytest.skip(str(exc))
    return environment


def write_tritonserver_wrapper(directory: Path, environment: TritonEnvironment) -> None:
    """What the Triton image has on PATH, played by the local CPU tritonserver."""
    wrapper = directory / "tritonserver"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        f'export PATH="{environment.bin_dir}:$PATH" PYTHONDONTWRITEBYTECODE=1\n'
        f'exec "{environment.tritonserver}" '
        f'--backend-directory="{environment.backend_directory}" '
        '--allow-gpu-metrics=false "$@"\n'
    )
    wrapper.chmod(0o755)


def free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.create_server(("127.0.0.1", 0))) for _ in range(count)
        ]
        return [s.getsockname()[1] for s in sockets]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Container:
    """The entry point as a process, with the ports and log a test looks at."""

    def __init__(self, tmp: Path, repository: Path, corpus: Path) -> None:
        environment = triton_environment()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        write_tritonserver_wrapper(bin_dir, environment)
        db = tmp / "kbrec.sqlite"
        kbrec = [sys.executable, "-m", "cli.main"]
        subprocess.run(
            [*kbrec, "store", "import", "--corpus", str(corpus), "--db", str(db)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        self.port, self.grpc_port, http, metrics = free_ports(4)
        env = {
            **os.environ,
            "PATH": os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent)])
            + os.pathsep
            + os.environ["PATH"],
            "KBREC_REPOSITORY": str(repository),
            "KBREC_DB": str(db),
            "KBREC_PORT": str(self.port),
            # The entry point serves 0.0.0.0, which kbrec refuses without an admin token.
            "KBREC_ADMIN_TOKEN": "entrypoint-test-admin-token",
            "TRITON_GRPC_PORT": str(self.grpc_port),
            "TRITON_HTTP_PORT": str(http),
            "TRITON_METRICS_PORT": str(metrics),
        }
        self.log = tmp / "container.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [str(ENTRYPOINT)], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"entrypoint exited:\n{self.output()}")
            return http_status(self.url("/readyz")) == 200

        wait_until(ready, "kbrec /readyz through the entrypoint")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(DEADLINE_S)


@pytest.fixture
def container(
    tiny_model_repository: Path, tiny_corpus: Path, tmp_path: Path
) -> Iterator[Container]:
    started = Container(tmp_path, tiny_model_repository, tiny_corpus)
    try:
        yield started
    finally:
        started.stop()


def pids_of(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout
    return [int(pid) for pid in found.split()]


def test_sigterm_stops_kbrec_then_triton(container: Container) -> None:
    container.wait_ready()
    assert "kbrec ready on" in container.output()
    container.process.send_signal(signal.SIGTERM)
    assert container.process.wait(DEADLINE_S) == 0
    log = container.output()
    kbrec_done = log.index("Application shutdown complete")
    triton_done = log.index("successfully unloaded 'encoder'")
    assert log.index("Triton is ready; starting kbrec") < kbrec_done < triton_done
    assert pids_of(f"tritonserver .*--grpc-port={container.grpc_port}") == []
    assert http_status(container.url("/healthz")) is None


def test_triton_dying_takes_kbrec_down_with_a_failure(container: Container) -> None:
    container.wait_ready()
    (triton,) = pids_of(f"tritonserver .*--grpc-port={container.grpc_port}")
    os.kill(triton, signal.SIGKILL)
    assert container.process.wait(DEADLINE_S) != 0
    assert "stopping the other" in container.output()
    assert http_status(container.url("/healthz")) is None  # kbrec is gone too
