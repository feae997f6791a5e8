"""Provisioned accounts over real HTTP with authentication on: an account exists only
once created, with quotas on its articles (count, bytes), and locales are bounded.
Without authentication a first write still creates the account."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from auth_helpers import AuthedServer, assert_error, authed_server
from serving_helpers import FakeProvider, serve_in_thread, wait_ready

from server.app import create_app
from server.settings import Settings

DEFAULT_MAX_ARTICLES = 50
DEFAULT_MAX_BYTES = 4096


@pytest.fixture(scope="module")
def server(
    bow_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuthedServer]:
    db = tmp_path_factory.mktemp("accounts") / "kbrec.sqlite"
    with authed_server(
        bow_repository,
        db,
        max_account_articles=DEFAULT_MAX_ARTICLES,
        max_article_bytes=DEFAULT_MAX_BYTES,
    ) as authed:
        yield authed


def put(http: httpx.Client, account: str, article: str, body: str = "b", **extra: str):
    return http.put(
        f"/v1/accounts/{account}/articles/{article}",
        json={"title": "reset password", "body": body, **extra},
    )


def test_an_account_exists_only_once_created(server: AuthedServer) -> None:
    admin = server.admin
    assert_error(put(admin, "later", "1"), 404, "unknown_account")
    export = {"articles": [{"id": 1, "title": "t", "body": "b"}]}
    assert_error(
        admin.post("/v1/accounts/later/articles/import", json=export), 404, "unknown_account"
    )
    assert_error(admin.get("/v1/accounts/later"), 404, "unknown_account")
    created = admin.post("/v1/accounts", json={"account_id": "later"})
    assert created.status_code == 201, created.text
    assert created.json() == {
        "account_id": "later",
        "created_at": created.json()["created_at"],
        "max_articles": DEFAULT_MAX_ARTICLES,
        "max_article_bytes": DEFAULT_MAX_BYTES,
        "articles": 0,
    }
    assert put(admin, "later", "1").status_code == 201
    assert admin.get("/v1/accounts/later").json()["articles"] == 1
    again = admin.post("/v1/accounts", json={"account_id": "later", "max_articles": 1})
    assert_error(again, 409, "account_exists")
    assert admin.get("/v1/accounts/later").json()["max_articles"] == DEFAULT_MAX_ARTICLES


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"account_id": "bad id"},
        {"account_id": "ok", "max_articles": 0},
        {"account_id": "ok", "max_articles": -1},
        {"account_id": "ok", "max_articles": "5"},
        {"account_id": "ok", "max_articles": True},
        {"account_id": "ok", "max_article_bytes": 1 << 40},
        {"account_id": "ok", "quota": 5},
    ],
)
def test_account_creation_is_validated(server: AuthedServer, body: dict) -> None:
    response = server.admin.post("/v1/accounts", json=body)
    assert response.status_code == 422, response.text
    assert server.admin.get("/v1/accounts/ok").status_code == 404


def test_the_article_quota(server: AuthedServer) -> None:
    admin = server.admin
    created = admin.post("/v1/accounts", json={"account_id": "small", "max_articles": 2})
    assert created.status_code == 201 and created.json()["max_articles"] == 2
    assert put(admin, "small", "1").status_code == 201
    assert put(admin, "small", "2").status_code == 201
    body = assert_error(put(admin, "small", "3"), 409, "article_quota_exceeded")
    assert "quota of 2" in body["error"]["message"]
    assert put(admin, "small", "2", "replaced").status_code == 200  # a replacement is no new one
    assert admin.get("/v1/accounts/small/articles/3").status_code == 404
    # An import: only its new articles count; over the quota nothing is written.
    export = {
        "articles": [{"id": 1, "title": "t", "body": "b"}, {"id": 9, "title": "t", "body": "b"}]
    }
    assert_error(
        admin.post("/v1/accounts/small/articles/import", json=export), 409, "article_quota_exceeded"
    )
    assert admin.get("/v1/accounts/small/articles/9").status_code == 404
    assert admin.delete("/v1/accounts/small/articles/2").status_code == 204
    imported = admin.post("/v1/accounts/small/articles/import", json=export)
    assert imported.status_code == 200, imported.text
    assert admin.get("/v1/accounts/small").json()["articles"] == 2


def test_a_sync_import_counts_what_the_account_will_hold(server: AuthedServer) -> None:
    admin = server.admin
    assert admin.post("/v1/accounts", json={"account_id": "synced", "max_articles": 2}).is_success
    assert put(admin, "synced", "old-1").status_code == 201
    assert put(admin, "synced", "old-2").status_code == 201
    export = {
        "articles": [{"id": 1, "title": "t", "body": "b"}, {"id": 2, "title": "t", "body": "b"}]
    }
    response = admin.post("/v1/accounts/synced/articles/import?mode=sync", json=export)
    assert response.status_code == 200, response.text
    three = {"articles": [{"id": i, "title": "t", "body": "b"} for i in (1, 2, 3)]}
    response = admin.post("/v1/accounts/synced/articles/import?mode=sync", json=three)
    assert_error(response, 409, "article_quota_exceeded")


def test_the_article_size_quota(server: AuthedServer) -> None:
    admin = server.admin
    created = admin.post("/v1/accounts", json={"account_id": "tiny", "max_article_bytes": 100})
    assert created.status_code == 201
    title_bytes = len(b"reset password")
    assert put(admin, "tiny", "fits", "x" * (100 - title_bytes)).status_code == 201
    response = put(admin, "tiny", "big", "x" * (101 - title_bytes))
    assert_error(response, 413, "article_too_large")
    # Bytes, not characters: "é" is two.
    assert_error(put(admin, "tiny", "wide", "é" * 50), 413, "article_too_large")
    # The server's default for accounts without their own.
    assert admin.post("/v1/accounts", json={"account_id": "plain"}).status_code == 201
    assert_error(put(admin, "plain", "big", "x" * DEFAULT_MAX_BYTES), 413, "article_too_large")
    assert admin.get("/v1/accounts/tiny/articles/big").status_code == 404


@pytest.mark.parametrize(
    ("locale", "accepted"),
    [
        ("en-us", True),
        ("zh-hant-tw", True),
        ("en-" + "-".join(["a" * 8, "b" * 8, "c" * 8, "d" * 5]), True),  # 35 characters
        ("en-" + "-".join(["a" * 8, "b" * 8, "c" * 8, "d" * 6]), False),  # 36
        ("en-" + "-".join(["abcdefgh"] * 100), False),
        ("en us", False),
        ("ënglish", False),
    ],
)
def test_locales_are_bounded(server: AuthedServer, locale: str, accepted: bool) -> None:
    created = server.admin.post("/v1/accounts", json={"account_id": "locales"})
    assert created.status_code in (201, 409)  # the first case creates it
    article = f"locale-{len(locale)}-{accepted}"
    response = put(server.admin, "locales", article, locale=locale)
    assert response.status_code == (201 if accepted else 422), response.text
    query = {"account_id": "locales", "text": "reset password", "locale": locale}
    recommended = server.admin.post("/v1/recommendations", json=query)
    assert recommended.status_code == (200 if accepted else 422), recommended.text


def test_without_authentication_a_first_write_creates_the_account(
    bow_repository: Path, tmp_path: Path
) -> None:
    settings = Settings.of(repository=bow_repository, db=tmp_path / "kbrec.sqlite", port=0)
    app = create_app(settings, backends=FakeProvider())
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_ready(url)
        assert_error(http.get("/v1/accounts/acme"), 404, "unknown_account")
        assert put(http, "acme", "1").status_code == 201
        account = http.get("/v1/accounts/acme").json()
        assert account["account_id"] == "acme" and account["articles"] == 1
