"""Fixtures of the load-test tests: stub HTTP servers on free loopback ports."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.stub_server import StubThread, stub_thread

# The server tests' helpers (`kbrec serve` on a free port, waiting for its ready line)
# serve here too; pytest only puts tests/server on sys.path when it collects that folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))


@pytest.fixture
def fast_stub() -> Iterator[StubThread]:
    """Answers after 2 ms: well below any rate the tests ask for."""
    with stub_thread(delay_s=0.002) as stub:
        yield stub
