"""Who may call what, over real HTTP with authentication on: every route × {no key,
another account's key, the account's key, the admin token}; cross-account reads and
writes refused; revocation (here at once, in another process within --key-cache-s);
keys never stored in the clear; Host and Content-Type checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_helpers import (
    ADMIN_TOKEN,
    AuthedServer,
    assert_error,
    authed_server,
    bearer,
)
from serving_helpers import REPO_ROOT, FakeProvider, serve_in_thread, wait_until

from server.app import create_app
from server.http.auth import Access, route_access
from server.http.routes import ROUTES
from server.settings import Settings

CALLERS = ("nobody", "other", "own", "admin")  # "own": acme's key, "other": beta's
RECOMMEND = {"account_id": "acme", "text": "reset password"}
EXPORT = {"articles": [{"id": 7, "title": "billing invoice", "body": "<p>refund</p>"}]}


@dataclass(frozen=True)
class Case:
    method: str
    template: str  # the route's path template: every route of ROUTES has its cases
    path: str  # "{who}" becomes the caller's name: each caller its own resource
    allowed: dict[str, int]  # caller → status; the others get 401 (nobody) or 403
    body: Any = None

    def request(self, client: httpx.Client, who: str) -> httpx.Response:
        path = self.path.replace("{who}", who)
        return client.request(self.method, path, json=self.body)


ARTICLE = "/v1/accounts/{account_id}/articles/{article_id}"
KEYS = "/v1/accounts/{account_id}/keys"
SETTINGS = "/v1/accounts/{account_id}/settings"
EXPERIMENT = "/v1/experiments/{experiment_id}"
ACCOUNT_ROUTE = {"own": 200, "admin": 200}
ADMIN_ROUTE = {"admin": 200}
EVERYONE = dict.fromkeys(CALLERS, 200)

CASES = [
    Case("POST", "/v1/recommendations", "/v1/recommendations", ACCOUNT_ROUTE, RECOMMEND),
    Case(
        "POST",
        "/v1/accounts/{account_id}/articles/import",
        "/v1/accounts/acme/articles/import",
        ACCOUNT_ROUTE,
        EXPORT,
    ),
    Case("GET", ARTICLE, "/v1/accounts/acme/articles/a1", ACCOUNT_ROUTE),
    Case(
        "PUT",
        ARTICLE,
        "/v1/accounts/acme/articles/put-{who}",
        {"own": 201, "admin": 201},
        {"title": "reset password", "body": "b"},
    ),
    Case("DELETE", ARTICLE, "/v1/accounts/acme/articles/del-{who}", {"own": 204, "admin": 204}),
    Case("POST", "/v1/accounts", "/v1/accounts", {"admin": 201}, {"account_id": "new-{who}"}),
    Case("GET", "/v1/accounts/{account_id}", "/v1/accounts/acme", ACCOUNT_ROUTE),
    Case("GET", KEYS, "/v1/accounts/acme/keys", ADMIN_ROUTE),
    Case("POST", KEYS, "/v1/accounts/acme/keys", {"admin": 201}, {"label": "matrix"}),
    Case(
        "DELETE",
        KEYS + "/{key_id}",
        "/v1/accounts/acme/keys/{throwaway}",
        {"admin": 204},
    ),
    Case("GET", SETTINGS, "/v1/accounts/acme/settings", ACCOUNT_ROUTE),
    Case("PUT", SETTINGS, "/v1/accounts/acme/settings", ADMIN_ROUTE, {"min_score": None}),
    # Any valid caller gets past the guard; a logged request's account is checked after
    # (tests/server/experiments/test_feedback_scope.py): this one was never logged.
    Case(
        "POST",
        "/v1/feedback",
        "/v1/feedback",
        {"own": 404, "other": 404, "admin": 404},
        {"request_id": "0" * 32, "event": "ticket_solved"},
    ),
    Case("GET", "/v1/experiments", "/v1/experiments", ADMIN_ROUTE),
    Case("POST", "/v1/experiments", "/v1/experiments", {"admin": 422}, {}),
    Case("GET", EXPERIMENT, "/v1/experiments/exp-0", {"admin": 404}),
    Case("POST", EXPERIMENT + "/stop", "/v1/experiments/exp-0/stop", {"admin": 404}, {}),
    Case("GET", "/v1/models", "/v1/models", ADMIN_ROUTE),
    Case("POST", "/v1/models/{version}/activate", "/v1/models/1/activate", ADMIN_ROUTE),
    Case("GET", "/metrics", "/metrics", ADMIN_ROUTE),
    Case("GET", "/healthz", "/healthz", EVERYONE),
    Case("GET", "/readyz", "/readyz", EVERYONE),
    Case("GET", "/openapi.json", "/openapi.json", EVERYONE),
]


@dataclass
class Matrix:
    server: AuthedServer
    clients: dict[str, httpx.Client]
    throwaway_key: str
    keys: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def matrix(bow_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Matrix]:
    db = tmp_path_factory.mktemp("auth") / "kbrec.sqlite"
    with authed_server(bow_repository, db) as server:
        keys = {"own": server.new_key("acme")[1], "other": server.new_key("beta")[1]}
        throwaway, _ = server.new_key("acme", "to revoke")
        admin = server.admin
        for article_id in ("a1", "del-own", "del-admin"):
            put = admin.put(
                f"/v1/accounts/acme/articles/{article_id}", json={"title": "t", "body": "b"}
            )
            assert put.status_code == 201, put.text
        assert admin.put(
            "/v1/accounts/beta/articles/b1", json={"title": "t", "body": "b"}
        ).is_success
        clients = {
            "nobody": server.client(),
            "other": server.client(keys["other"]),
            "own": server.client(keys["own"]),
            "admin": server.admin,
        }
        yield Matrix(server, clients, throwaway, keys)
        for who in ("nobody", "other", "own"):
            clients[who].close()


def test_every_route_has_a_rule_and_cases() -> None:
    """A new route without an access rule, or without a row in CASES, fails here."""
    routes = {(route.path, method) for route in ROUTES for method in route.methods - {"HEAD"}}  # type: ignore[attr-defined]
    assert routes == {(case.template, case.method) for case in CASES}
    assert all(route_access(route) is not None for route in ROUTES)  # type: ignore[arg-type]


@pytest.mark.parametrize("who", CALLERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.template}")
def test_the_authorization_matrix(matrix: Matrix, case: Case, who: str) -> None:
    case = Case(
        case.method,
        case.template,
        case.path.replace("{throwaway}", matrix.throwaway_key),
        case.allowed,
        case.body if not isinstance(case.body, dict) else fill(case.body, who),
    )
    response = case.request(matrix.clients[who], who)
    if who in case.allowed:
        assert response.status_code == case.allowed[who], response.text
    elif who == "nobody":
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == 'Bearer realm="kbrec"'
    else:
        assert_error(response, 403, "forbidden")
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


def fill(body: dict[str, Any], who: str) -> dict[str, Any]:
    return {k: v.replace("{who}", who) if isinstance(v, str) else v for k, v in body.items()}


def test_cross_account_reads_and_writes_are_refused(matrix: Matrix) -> None:
    beta = matrix.clients["other"]  # beta's key against acme's data
    before = matrix.server.admin.get("/v1/accounts/acme/articles/a1").json()
    assert_error(beta.get("/v1/accounts/acme/articles/a1"), 403, "forbidden")
    assert_error(
        beta.put("/v1/accounts/acme/articles/a1", json={"title": "pwned", "body": "x"}),
        403,
        "forbidden",
    )
    assert_error(beta.delete("/v1/accounts/acme/articles/a1"), 403, "forbidden")
    assert_error(beta.post("/v1/accounts/acme/articles/import", json=EXPORT), 403, "forbidden")
    assert_error(beta.post("/v1/recommendations", json=RECOMMEND), 403, "forbidden")
    # An account that does not exist answers the same: nothing to learn about others.
    ghost = {"account_id": "ghost", "text": "reset password"}
    assert_error(beta.post("/v1/recommendations", json=ghost), 403, "forbidden")
    assert matrix.server.admin.get("/v1/accounts/acme/articles/a1").json() == before
    # Its own account still works with the same key.
    own = beta.post("/v1/recommendations", json={"account_id": "beta", "text": "reset"})
    assert own.status_code == 200, own.text


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ({"authorization": "Bearer nonsense"}, 'Bearer realm="kbrec", error="invalid_token"'),
        (bearer("kb_0123456789abcdef." + "A" * 43), 'Bearer realm="kbrec", error="invalid_token"'),
        (bearer(ADMIN_TOKEN + "x"), 'Bearer realm="kbrec", error="invalid_token"'),
        ({"authorization": f"Basic {ADMIN_TOKEN}"}, 'Bearer realm="kbrec", error="invalid_token"'),
        ({"authorization": "Bearer"}, 'Bearer realm="kbrec", error="invalid_token"'),
        ({}, 'Bearer realm="kbrec"'),
    ],
)
def test_bad_credentials_are_401_with_a_challenge(
    matrix: Matrix, headers: dict[str, str], challenge: str
) -> None:
    with httpx.Client(base_url=matrix.server.url, timeout=30, headers=headers) as http:
        response = http.get("/v1/accounts/acme/articles/a1")
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == challenge
        assert http.get("/healthz").status_code == 200  # open routes ignore credentials


def test_a_revoked_key_is_refused_at_once_in_its_process(matrix: Matrix) -> None:
    key_id, key = matrix.server.new_key("acme", "short-lived")
    with matrix.server.client(key) as http:
        assert http.get("/v1/accounts/acme").status_code == 200
        revoked = matrix.server.admin.delete(f"/v1/accounts/acme/keys/{key_id}")
        assert revoked.status_code == 204
        assert_error(http.get("/v1/accounts/acme"), 401, "unauthorized")
    listed = matrix.server.admin.get("/v1/accounts/acme/keys").json()["keys"]
    (record,) = [k for k in listed if k["key_id"] == key_id]
    assert record["revoked_at"] and record["label"] == "short-lived"
    assert "key" not in record
    # Again: still 204; a key of another account, or none: 404.
    assert matrix.server.admin.delete(f"/v1/accounts/acme/keys/{key_id}").status_code == 204
    beta_key_id, _ = matrix.server.new_key("beta")
    response = matrix.server.admin.delete(f"/v1/accounts/acme/keys/{beta_key_id}")
    assert_error(response, 404, "key_not_found")
    assert_error(matrix.server.admin.delete("/v1/accounts/acme/keys/x"), 404, "key_not_found")


def test_keys_are_stored_hashed(matrix: Matrix) -> None:
    _, key = matrix.server.new_key("acme")
    secret = key.split(".")[1].encode()
    files = list(matrix.server.db.parent.glob("kbrec.sqlite*"))
    assert files
    for path in files:
        data = path.read_bytes()
        assert key.encode() not in data and secret not in data, path


def test_a_new_key_of_a_new_account_creates_it(matrix: Matrix) -> None:
    response = matrix.server.admin.post("/v1/accounts/fresh/keys", json={})
    assert response.status_code == 201 and response.json()["account_created"] is True
    with matrix.server.client(response.json()["key"]) as http:
        account = http.get("/v1/accounts/fresh").json()
        assert account["account_id"] == "fresh" and account["articles"] == 0
        put = http.put("/v1/accounts/fresh/articles/1", json={"title": "reset", "body": "b"})
        assert put.status_code == 201, put.text


def test_key_requests_are_validated(matrix: Matrix) -> None:
    admin = matrix.server.admin
    assert_error(admin.post("/v1/accounts/acme/keys", json={"label": 5}), 422, "validation_error")
    response = admin.post("/v1/accounts/acme/keys", json={"label": "x" * 101})
    assert_error(response, 422, "validation_error")
    assert_error(admin.post("/v1/accounts/acme/keys", json={"nope": 1}), 422, "validation_error")
    assert_error(admin.post("/v1/accounts/b%20d/keys", json={}), 422, "invalid_id")
    assert_error(admin.get("/v1/accounts/nobody/keys"), 404, "unknown_account")
    assert_error(admin.patch("/v1/accounts/acme/keys"), 405, "method_not_allowed")


# --- across processes -------------------------------------------------------------------


def test_revocation_reaches_another_process_within_the_cache_time(
    bow_repository: Path, tmp_path: Path
) -> None:
    """Two apps on one store (as two workers): a key created in one works in the other
    at once; revoked in one, it is refused by the other within --key-cache-s."""
    cache_s = 1.0
    db = tmp_path / "kbrec.sqlite"
    with authed_server(bow_repository, db, key_cache_s=cache_s) as first:
        settings = Settings.of(repository=bow_repository, db=db, port=0, key_cache_s=cache_s)
        second_app = create_app(settings, backends=FakeProvider(), admin_token=ADMIN_TOKEN)
        with serve_in_thread(second_app) as second_url:
            wait_until(lambda: httpx.get(f"{second_url}/readyz").status_code == 200, "follower")
            key_id, key = first.new_key("acme")
            with httpx.Client(base_url=second_url, headers=bearer(key), timeout=30) as second:
                assert second.get("/v1/accounts/acme").status_code == 200  # created elsewhere
                assert first.admin.delete(f"/v1/accounts/acme/keys/{key_id}").status_code == 204
                revoked_at = time.monotonic()
                wait_until(
                    lambda: second.get("/v1/accounts/acme").status_code == 401,
                    "the revocation in the other process",
                )
                assert time.monotonic() - revoked_at <= cache_s + 0.5


# --- starting up ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", ""])
def test_no_exposed_address_without_an_admin_token(bow_repository: Path, host: str) -> None:
    from server.errors import StartupError

    settings = Settings.of(repository=bow_repository, host=host)
    with pytest.raises(StartupError, match="without authentication"):
        create_app(settings, backends=FakeProvider())
    create_app(settings, backends=FakeProvider(), admin_token=ADMIN_TOKEN)  # with one: fine


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_without_a_token_is_open(
    bow_repository: Path, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_app(Settings.of(repository=bow_repository, host=host), backends=FakeProvider())
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_the_admin_token_from_a_file_or_the_environment(
    bow_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server.errors import StartupError
    from server.http.auth import load_auth

    token_file = tmp_path / "admin-token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    from_file = Settings.of(repository=bow_repository, admin_token_file=str(token_file))
    assert load_auth(from_file, {}).admin_token == ADMIN_TOKEN
    assert load_auth(Settings(), {"KBREC_ADMIN_TOKEN": ADMIN_TOKEN}).admin_token == ADMIN_TOKEN
    with pytest.raises(StartupError, match="use one"):
        load_auth(from_file, {"KBREC_ADMIN_TOKEN": ADMIN_TOKEN})
    with pytest.raises(StartupError, match="at least 16"):
        load_auth(Settings(), {"KBREC_ADMIN_TOKEN": "short"})
    missing = Settings.of(admin_token_file=str(tmp_path / "absent"))
    with pytest.raises(StartupError, match="cannot read"):
        load_auth(missing, {})


def test_kbrec_serve_refuses_an_exposed_address_without_a_token(bow_repository: Path) -> None:
    command = [sys.executable, "-m", "cli.main", "serve", "--repository", str(bow_repository)]
    done = subprocess.run(
        [*command, "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "KBREC_ADMIN_TOKEN"},
    )
    assert done.returncode == 2
    assert "without authentication" in done.stderr and "Traceback" not in done.stderr


# --- Host and Content-Type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("127.0.0.1", True),
        ("localhost:8000", True),
        ("[::1]:8000", True),
        ("LOCALHOST", True),
        ("evil.example", False),
        ("evil.example:8000", False),
        ("127.0.0.1.evil.example", False),
        ("", False),
    ],
)
def test_a_loopback_server_serves_loopback_names_only(
    matrix: Matrix, host: str, served: bool
) -> None:
    """DNS rebinding: a page whose name resolves to 127.0.0.1 sends its own name as Host."""
    response = matrix.clients["admin"].get("/healthz", headers={"host": host})
    if served:
        assert response.status_code == 200
    else:
        assert_error(response, 400, "invalid_host")


def test_allowed_hosts_narrow_the_names(bow_repository: Path, tmp_path: Path) -> None:
    db = tmp_path / "kbrec.sqlite"
    with authed_server(
        bow_repository, db, host="api.example.com", allowed_hosts="api.example.com,*.corp.example"
    ) as server:
        get = server.admin.get
        assert get("/healthz", headers={"host": "api.example.com"}).status_code == 200
        assert get("/healthz", headers={"host": "kb.corp.example:80"}).status_code == 200
        assert_error(get("/healthz", headers={"host": "127.0.0.1"}), 400, "invalid_host")
        assert_error(get("/healthz", headers={"host": "corp.example"}), 400, "invalid_host")


@pytest.mark.parametrize(
    ("content_type", "refused"),
    [
        (None, True),
        ("text/plain", True),
        ("text/plain; charset=utf-8", True),
        ("application/x-www-form-urlencoded", True),
        ("multipart/form-data; boundary=x", True),
        ("application/jsonx", True),
        ("application/json", False),
        ("Application/JSON; charset=utf-8", False),
        ("application/vnd.kbrec+json", False),
    ],
)
def test_a_body_must_be_declared_json(
    matrix: Matrix, content_type: str | None, refused: bool
) -> None:
    """A browser posts text/plain, forms and untyped bodies cross-site without asking."""
    headers = {**bearer(matrix.keys["own"])}
    if content_type is not None:
        headers["content-type"] = content_type
    body = b'{"account_id": "acme", "text": "reset password"}'
    with httpx.Client(base_url=matrix.server.url, timeout=30) as http:
        for method, path in [
            ("POST", "/v1/recommendations"),
            ("PUT", "/v1/accounts/acme/articles/typed"),
            ("POST", "/v1/accounts/acme/articles/import"),
        ]:
            response = http.request(method, path, content=body, headers=headers)
            if refused:
                assert_error(response, 415, "unsupported_media_type")
            else:
                assert response.status_code != 415, response.text


def test_metrics_have_no_series_per_account(matrix: Matrix) -> None:
    text = matrix.server.admin.get("/metrics").text
    assert "account_id=" not in text and "acme" not in text and "beta" not in text
    assert any(line.startswith("kbrec_articles{") for line in text.splitlines())


def test_the_api_description_says_who_may_call_what(matrix: Matrix) -> None:
    """Every route and method is described; open ones need no token, the others name
    401 and 403; every body names 415."""
    document = matrix.clients["nobody"].get("/openapi.json").json()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["security"] == [{"bearer": []}]
    for route in ROUTES:
        for method in route.methods - {"HEAD"}:  # type: ignore[attr-defined]
            operation = document["paths"][route.path][method.lower()]
            responses = operation["responses"]
            if route_access(route) is Access.OPEN:  # type: ignore[arg-type]
                assert operation["security"] == [], route.path
            else:
                assert "security" not in operation, route.path
                assert {"401", "403"} <= responses.keys(), (route.path, method)
            if "requestBody" in operation:
                assert "415" in responses, (route.path, method)
