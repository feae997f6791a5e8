"""Helpers of the Triton tests: the local Triton environment and launches on free ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from serving_helpers import REPO_ROOT

from server.triton.environment import TritonEnvError, TritonEnvironment
from server.triton.launcher import TritonLaunch, TritonPorts, TritonServer

TRITON_ENV = REPO_ROOT / ".venv-triton"


def require_triton_env() -> None:
    try:
        TritonEnvironment.locate(TRITON_ENV).check()
    except TritonEnvError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the local Triton is missing in CI: {exc}")
        pytest.skip(str(exc))


def triton_launch(repository: Path, ports: TritonPorts | None = None) -> TritonLaunch:
    return TritonLaunch(
        repository=repository,
        ports=ports or TritonPorts.free(),
        environment=TRITON_ENV,
        ready_timeout_s=120,
        exit_timeout_s=5,
    )


class RestartableTriton:
    """A Triton of one test's own that the test may stop and start again on the same ports."""

    def __init__(self, launch: TritonLaunch) -> None:
        self.launch = launch
        self.server: TritonServer | None = None

    def start(self) -> TritonServer:
        assert self.server is None, "already running"
        server = TritonServer(self.launch)
        server.start()
        self.server = server
        return server

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
