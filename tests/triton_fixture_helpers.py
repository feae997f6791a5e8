"""The local Triton of the tests (`make triton-env`): its check and its launches on free ports.

Shared by tests/local_triton, tests/server/triton and tests/loadtest, hence in tests/ (on
sys.path).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from local_triton.environment import TritonEnvError, TritonEnvironment
from local_triton.launcher import TritonLaunch, TritonPorts

REPO_ROOT = Path(__file__).resolve().parents[1]
TRITON_ENV = REPO_ROOT / ".venv-triton"


def require_triton_env() -> None:
    """Skip without the local Triton on a developer machine; fail in CI (CI=true)."""
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
