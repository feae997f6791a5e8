"""Accounts and their API keys: create an account (with quotas), read it, issue, list
and revoke its keys. Admin routes, except reading an account (its own keys may)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.errors import InvalidRequest, UnknownAccount
from server.http.keyring import KeyRing
from server.http.payloads import checked_id, json_object, json_type, read_json
from server.service import RecommendationService
from server.storage.accounts import MAX_QUOTA, Account, ApiKey, check_label, issue_key
from server.storage.store import utc_now

QUOTA_FIELDS = ("max_articles", "max_article_bytes")


def service_of(request: Request) -> RecommendationService:
    return request.app.state.service


def keyring_of(request: Request) -> KeyRing:
    return request.app.state.keys


def key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "account_id": key.account_id,
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    }


async def account_json(service: RecommendationService, account: Account) -> dict[str, Any]:
    quotas = service.quotas_of(account)
    return {
        "account_id": account.account_id,
        "created_at": account.created_at,
        "max_articles": quotas.max_articles,
        "max_article_bytes": quotas.max_article_bytes,
        "articles": await service.store.count_articles(account.account_id),
    }


def optional_quota(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_QUOTA:
        raise InvalidRequest(f"{name!r} must be an integer in 1..{MAX_QUOTA}, got {value!r}")
    return value


def optional_label(body: dict[str, Any]) -> str:
    label = body.get("label", "")
    if not isinstance(label, str):
        raise InvalidRequest(f"'label' must be a string, got {json_type(label)}")
    try:
        return check_label(label)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


async def create_account(request: Request) -> JSONResponse:
    """201 with the account; 409 `account_exists` if it does (left as it is)."""
    service = service_of(request)
    body = json_object(await read_json(request, service.settings.http.max_body_bytes))
    unknown = set(body) - {"account_id", *QUOTA_FIELDS}
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    account = Account(
        checked_id(body.get("account_id"), "account id"),
        utc_now(),
        *(optional_quota(body, name) for name in QUOTA_FIELDS),
    )
    (created,) = await service.store.create_accounts([account])
    if not created:
        raise InvalidRequest(f"account {account.account_id!r} exists", "account_exists", status=409)
    return JSONResponse(await account_json(service, account), status_code=201)


async def existing_account(request: Request) -> Account:
    account_id = checked_id(request.path_params["account_id"], "account id")
    account = await service_of(request).store.get_account(account_id)
    if account is None:
        raise UnknownAccount(account_id)
    return account


async def get_account(request: Request) -> JSONResponse:
    service = service_of(request)
    return JSONResponse(await account_json(service, await existing_account(request)))


async def create_key(request: Request) -> JSONResponse:
    """201 with the key, shown this once; creates the account if it does not exist."""
    service = service_of(request)
    account_id = checked_id(request.path_params["account_id"], "account id")
    body = json_object(await read_json(request, service.settings.http.max_body_bytes))
    unknown = set(body) - {"label"}
    if unknown:
        raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    issued = await issue_key(service.store, account_id, optional_label(body))
    await keyring_of(request).reload()  # usable here at once, elsewhere within a miss
    return JSONResponse(
        {**key_json(issued.record), "key": issued.key, "account_created": issued.account_created},
        status_code=201,
    )


async def list_keys(request: Request) -> JSONResponse:
    account = await existing_account(request)
    keys = await service_of(request).store.api_keys(account.account_id)
    return JSONResponse({"account_id": account.account_id, "keys": [key_json(k) for k in keys]})


async def revoke_key(request: Request) -> Response:
    """204 once revoked (also if it already was); 404 `key_not_found`."""
    account_id = checked_id(request.path_params["account_id"], "account id")
    key_id = request.path_params["key_id"]
    store = service_of(request).store
    keys = {key.key_id for key in await store.api_keys(account_id)}
    if key_id not in keys or await store.revoke_api_key(key_id, utc_now()) is None:
        raise InvalidRequest(
            f"account {account_id!r} has no key {key_id[:40]!r}", "key_not_found", status=404
        )
    await keyring_of(request).reload()  # refused here at once, elsewhere within --key-cache-s
    return Response(status_code=204)


async def account_keys(request: Request) -> Response:
    """One route for the keys path, so a wrong method gets a 405 listing both."""
    handler = create_key if request.method == "POST" else list_keys
    return await handler(request)
