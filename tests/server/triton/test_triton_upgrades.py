"""Live model upgrades through a real Triton: kbrec asks Triton to load the new version
next to the serving one (explicit model control, `version_policy: specific`), re-embeds
every article through it, and switches, all under continuous recommendation traffic.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from serving_helpers import serve_in_thread, wait_ready
from triton_helpers import require_triton_env, triton_launch
from upgrade_helpers import run_upgrade_scenario, version_publisher

from local_triton.launcher import TritonServer
from server.app import create_app
from server.inference.backends.triton_control import ready_versions
from server.settings import Settings

pytestmark = pytest.mark.triton


def test_upgrade_rollback_and_rejected_versions_through_triton(tmp_path: Path) -> None:
    require_triton_env()
    repository, db = tmp_path / "repository", tmp_path / "kbrec.sqlite"
    publish = version_publisher(repository, triton=True)
    assert publish(seed=0) == 1
    with TritonServer(triton_launch(repository)) as triton:
        settings = Settings.of(
            repository=repository,
            db=db,
            port=0,
            triton_url=triton.grpc_url,
            repository_poll_s=0.05,
            backfill_share=0.5,
            backfill_step_tokens=40,
        )
        with serve_in_thread(create_app(settings)) as url:
            wait_ready(url)
            run_upgrade_scenario(url, repository, db, publish)
            # Triton holds exactly what kbrec serves: active 2 and previous 1, not 3 or 4.
            assert loaded_versions(triton.grpc_url) == {1, 2}
            response = httpx.get(f"{url}/readyz")
            assert response.status_code == 200, response.text


def loaded_versions(grpc_url: str) -> set[int]:
    import asyncio

    import tritonclient.grpc.aio as triton

    async def ask() -> set[int]:
        client = triton.InferenceServerClient(grpc_url.removeprefix("grpc://"))
        try:
            return await ready_versions(client, "encoder")
        finally:
            await client.close()

    return asyncio.run(ask())
