"""A kbrec app with authentication on (an admin token), on real uvicorn and a real
SQLite store, with a fake backend; clients for each kind of caller."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serving_helpers import FakeProvider, serve_in_thread, wait_until

from server.app import create_app
from server.settings import Settings

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
JSON = {"content-type": "application/json"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body


@dataclass
class AuthedServer:
    url: str
    db: Path
    admin: httpx.Client

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {**JSON, **(bearer(token) if token else {})}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def new_key(self, account_id: str, label: str = "") -> tuple[str, str]:
        """(key id, key) of a new key of the account (created if need be)."""
        response = self.admin.post(f"/v1/accounts/{account_id}/keys", json={"label": label})
        assert response.status_code == 201, response.text
        body = response.json()
        return body["key_id"], body["key"]


@contextlib.contextmanager
def authed_server(
    repository: Path, db: Path, host: str | None = None, **knobs: Any
) -> Iterator[AuthedServer]:
    """`host`: the Host header the admin client sends (default: the URL's)."""
    settings = Settings.of(repository=repository, db=db, port=0, **knobs)
    app = create_app(settings, backends=FakeProvider(), admin_token=ADMIN_TOKEN)
    with serve_in_thread(app) as url:
        headers = {**JSON, **bearer(ADMIN_TOKEN), **({"host": host} if host else {})}
        with httpx.Client(base_url=url, timeout=30, headers=headers) as admin:
            wait_until(lambda: ready(admin), f"{url}/readyz")
            yield AuthedServer(url, db, admin)


def ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False
