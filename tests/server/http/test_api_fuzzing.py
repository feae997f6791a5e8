"""Schemathesis against the live `/openapi.json`, with authentication on: every operation
gets generated cases (valid and invalid by the schema) with the admin token, and the
account routes also with an account's own key, over real HTTP on loopback, a real SQLite
store and the bag-of-words version on real ONNX Runtime.

No case may answer 5xx; every 4xx carries the JSON error shape. KBREC_FUZZ_CASES sets the
total number of generated cases (the CI default, 500, runs in about 15 s); the big run is
`KBREC_FUZZ_CASES=3000 pytest -s tests/server/http/test_api_fuzzing.py` (BENCHMARKS.md).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from auth_helpers import ADMIN_TOKEN, JSON, AuthedServer, bearer, ready
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.schemas import APIOperation
from serving_helpers import serve_in_thread, wait_until

from server.app import create_app
from server.settings import Settings

CASES = int(os.environ.get("KBREC_FUZZ_CASES", "500"))
ACCOUNT = "acme"
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
BODY_ACCOUNT = frozenset({"/v1/recommendations", "/v1/feedback"})  # account_id in the body


@pytest.fixture(scope="module")
def server(
    bow_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthedServer]:
    db = tmp_path_factory.mktemp("fuzz") / "kbrec.sqlite3"
    config = Settings.of(repository=bow_repository, db=db, port=0)
    app = create_app(config, admin_token=ADMIN_TOKEN)  # the real ONNX Runtime backend
    with (
        serve_in_thread(app) as url,
        httpx.Client(base_url=url, timeout=30, headers={**JSON, **bearer(ADMIN_TOKEN)}) as admin,
    ):
        wait_until(lambda: ready(admin), f"{url}/readyz")
        server = AuthedServer(url, db, admin)
        created = admin.post("/v1/accounts", json={"account_id": ACCOUNT})
        assert created.status_code == 201, created.text
        response = server.admin.put(
            f"/v1/accounts/{ACCOUNT}/articles/a1", json={"title": "reset password", "body": "b"}
        )
        assert response.status_code in (200, 201), response.text
        yield server


def operations(schema: Any) -> list[APIOperation]:
    return [result.ok() for result in schema.get_all_operations()]


def is_account_route(operation: APIOperation) -> bool:
    """Routes an account key may call: its account in the path or in the JSON body."""
    return operation.path.startswith("/v1/accounts/{account_id}") or operation.path in BODY_ACCOUNT


def modes(operation: APIOperation) -> tuple[GenerationMode, ...]:
    """Invalid cases need something to make invalid: a parameter or a body (the token is
    fixed: the authorization matrix of test_auth.py covers bad credentials)."""
    names = [p.name.lower() for p in operation.iter_parameters()]
    has_input = any(name != "authorization" for name in names) or len(operation.body) > 0
    return MODES if has_input else (GenerationMode.POSITIVE,)


def assert_sane(response: requests.Response, where: str) -> None:
    """No server error; a 4xx is `{"error": {"code", "message"}}` with non-empty strings."""
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            pytest.fail(f"{where}: {response.status_code} not JSON: {response.text[:300]!r}")
        assert isinstance(body, dict) and set(body) == {"error"}, f"{where}: {body}"
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"code", "message"}, f"{where}: {body}"
        assert all(isinstance(error[k], str) and error[k] for k in ("code", "message")), body


def fuzz(
    operation: APIOperation,
    mode: GenerationMode,
    url: str,
    token: str,
    examples: int,
    seen: Counter[tuple[str, int]],
    path_parameters: dict[str, Any] | None = None,
) -> None:
    caller = "admin" if token == ADMIN_TOKEN else "account key"
    where = f"{operation.method.upper()} {operation.path} [{mode.value}, {caller}]"
    # The token is fixed, not generated: invalid cases are invalid in what the route reads.
    strategy = operation.as_strategy(
        generation_mode=mode, path_parameters=path_parameters, headers=bearer(token)
    )
    session = requests.Session()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same cases each CI run; a finding stays reproducible
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        if path_parameters and isinstance(case.body, dict) and "account_id" in case.body:
            case.body["account_id"] = path_parameters["account_id"]  # the key's own account
        response = case.call(base_url=url, session=session, timeout=30)
        seen[(where, response.status_code)] += 1
        assert_sane(response, f"{where}: {case.method} {case.formatted_path}")

    check()


def test_generated_cases_get_no_server_error_and_only_json_errors(server: AuthedServer) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    ops = operations(schema)
    assert len(ops) >= 10, [op.path for op in ops]
    _, account_key = server.new_key(ACCOUNT, "fuzz")
    account_ops = [op for op in ops if is_account_route(op)]
    runs = sum(len(modes(op)) for op in ops) + len(account_ops)
    examples = max(CASES // runs, 1)
    seen: Counter[tuple[str, int]] = Counter()
    for operation in ops:
        for mode in modes(operation):
            fuzz(operation, mode, server.url, ADMIN_TOKEN, examples, seen)
    for operation in account_ops:  # the account's own key, on its own account
        fuzz(
            operation,
            GenerationMode.POSITIVE,
            server.url,
            account_key,
            examples,
            seen,
            path_parameters={"account_id": ACCOUNT},
        )
    report(seen)
    assert sum(seen.values()) >= runs  # every operation and mode was really called
    assert server.admin.get("/healthz").status_code == 200  # and the server is still up


def report(seen: Counter[tuple[str, int]]) -> None:
    """A Markdown table for the big run's record: cases and statuses per operation."""
    rows: dict[str, Counter[int]] = {}
    for (where, status), count in seen.items():
        rows.setdefault(where, Counter())[status] += count
    print(f"\n{sum(seen.values())} cases, {len(rows)} operation × mode runs")
    print("| operation | cases | statuses |\n|---|---:|---|")
    for where in sorted(rows):
        statuses = ", ".join(f"{s}×{n}" for s, n in sorted(rows[where].items()))
        print(f"| `{where}` | {sum(rows[where].values())} | {statuses} |")


def canned(status: int, body: bytes) -> requests.Response:
    response = requests.Response()
    response.status_code, response._content = status, body
    return response


@pytest.mark.parametrize(
    "status, body",
    [
        (500, b'{"error": {"code": "internal", "message": "boom"}}'),
        (503, b"Service Unavailable"),
        (400, b"Bad Request"),
        (422, b'{"detail": "bad"}'),
        (404, b'{"error": {"code": "not_found"}}'),
        (403, b'{"error": {"code": "", "message": "no"}}'),
    ],
)
def test_the_check_refuses_server_errors_and_other_error_shapes(status: int, body: bytes) -> None:
    with pytest.raises((AssertionError, pytest.fail.Exception)):
        assert_sane(canned(status, body), "canned")


def test_the_check_accepts_the_error_shape_and_successes() -> None:
    assert_sane(canned(404, b'{"error": {"code": "not_found", "message": "no such"}}'), "ok")
    assert_sane(canned(200, b"[]"), "ok")
