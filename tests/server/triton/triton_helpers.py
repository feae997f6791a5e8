"""Helpers of the Triton tests: the local Triton (tests/triton_fixture_helpers.py) and a Triton a
test may stop and start again."""

from __future__ import annotations

from triton_fixture_helpers import TRITON_ENV, require_triton_env, triton_launch

from local_triton.launcher import TritonLaunch, TritonServer

__all__ = ["TRITON_ENV", "RestartableTriton", "require_triton_env", "triton_launch"]


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
