"""Fixtures of the Triton tests: the real local tritonserver (`make triton-env`) serving the
tiny encoder converted with `--backend python`, on free loopback ports.

Without `.venv-triton` these tests are skipped on a developer machine and fail in CI
(CI=true), where `make test` installs it first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from triton_helpers import RestartableTriton, require_triton_env, triton_launch


@pytest.fixture
def own_triton(tiny_model_repository: Path) -> Iterator[RestartableTriton]:
    require_triton_env()
    triton = RestartableTriton(triton_launch(tiny_model_repository))
    triton.start()
    try:
        yield triton
    finally:
        triton.stop()
