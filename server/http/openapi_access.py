"""GET /openapi.json: the API description of `server.http.openapi` with who may call
what: the bearer scheme, 401/403 on every route that needs credentials, 415 on every
body, the accounts' quota errors, and the account and key routes.

Kept apart from the routes' own descriptions, so each route's text stays where it was;
`test_auth.py` checks that the open operations here are the routes built `Access.OPEN`.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.openapi import DOCUMENT, ID_SCHEMA, json_body, path_ids, ref
from server.storage.accounts import MAX_LABEL_LENGTH, MAX_QUOTA

# Answered without credentials (Access.OPEN).
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz", "/openapi.json"})
METHODS: Final = ("get", "put", "post", "delete", "patch")
ARTICLE = "/v1/accounts/{account_id}/articles/{article_id}"
IMPORT = "/v1/accounts/{account_id}/articles/import"

BEARER: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": "The admin token (every route) or an account's API key (`kb_<id>.<secret>`: "
    "that account's routes only). Without authentication configured (a loopback "
    "development server) every caller is the admin.",
}

ERRORS: Final = {
    "401": json_body(ref("Error"), "no valid token (WWW-Authenticate: Bearer)"),
    "403": json_body(ref("Error"), "the token may not use this route or account"),
    "415": json_body(ref("Error"), "the body is not declared application/json"),
}
# The account's quotas and existence, on the routes that write its articles.
WRITE_ERRORS: Final = {
    "404": json_body(
        ref("Error"),
        "unknown account (with authentication, accounts exist once created) or article",
    ),
    "409": json_body(ref("Error"), "over the account's article quota (article_quota_exceeded)"),
    "413": json_body(ref("Error"), "body too large, or an article over its account's bytes"),
}

QUOTA = {"type": "integer", "minimum": 1, "maximum": MAX_QUOTA}
SCHEMAS: Final[dict[str, Any]] = {
    "AccountInput": {
        "type": "object",
        "required": ["account_id"],
        "additionalProperties": False,
        "properties": {
            "account_id": ID_SCHEMA,
            "max_articles": {**QUOTA, "description": "default: the server's"},
            "max_article_bytes": {**QUOTA, "description": "title and body, UTF-8"},
        },
    },
    "Account": {
        "type": "object",
        "properties": {
            "account_id": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "max_articles": {"type": "integer"},
            "max_article_bytes": {"type": "integer"},
            "articles": {"type": "integer"},
        },
    },
    "KeyInput": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"label": {"type": "string", "maxLength": MAX_LABEL_LENGTH}},
    },
    "ApiKey": {
        "type": "object",
        "properties": {
            "key_id": {"type": "string"},
            "account_id": {"type": "string"},
            "label": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
            "revoked_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    "NewApiKey": {
        "allOf": [
            ref("ApiKey"),
            {
                "type": "object",
                "properties": {
                    "key": {"type": "string", "description": "shown this once"},
                    "account_created": {"type": "boolean"},
                },
            },
        ]
    },
}


def error(status: int, text: str) -> dict[str, Any]:
    return {str(status): json_body(ref("Error"), text)}


PATHS: Final[dict[str, Any]] = {
    "/v1/accounts": {
        "post": {
            "summary": "Create an account, with quotas (admin)",
            "requestBody": {"required": True, **json_body(ref("AccountInput"))},
            "responses": {
                "201": json_body(ref("Account"), "created"),
                **error(409, "the account exists (account_exists)"),
                **error(422, "invalid field"),
            },
        }
    },
    "/v1/accounts/{account_id}": {
        "parameters": path_ids("account_id"),
        "get": {
            "summary": "An account: its quotas and article count (its keys, or the admin)",
            "responses": {
                "200": json_body(ref("Account"), "the account"),
                **error(404, "unknown account"),
                **error(422, "invalid account id"),
            },
        },
    },
    "/v1/accounts/{account_id}/keys": {
        "parameters": path_ids("account_id"),
        "get": {
            "summary": "The account's API keys, revoked ones included; never the keys (admin)",
            "responses": {
                "200": json_body(
                    {
                        "type": "object",
                        "properties": {
                            "account_id": {"type": "string"},
                            "keys": {"type": "array", "items": ref("ApiKey")},
                        },
                    },
                    "the keys",
                ),
                **error(404, "unknown account"),
                **error(422, "invalid account id"),
            },
        },
        "post": {
            "summary": "A new API key, shown this once; creates the account if need be (admin)",
            "requestBody": {"required": True, **json_body(ref("KeyInput"))},
            "responses": {
                "201": json_body(ref("NewApiKey"), "the key"),
                **error(422, "invalid field"),
            },
        },
    },
    "/v1/accounts/{account_id}/keys/{key_id}": {
        "parameters": [
            *path_ids("account_id"),
            {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}},
        ],
        "delete": {
            "summary": "Revoke a key: refused here at once, by other processes within "
            "--key-cache-s (admin)",
            "responses": {
                "204": {"description": "revoked (also if it already was)"},
                **error(404, "no such key of this account (key_not_found)"),
                **error(422, "invalid account id"),
            },
        },
    },
    "/openapi.json": {
        "get": {"summary": "This description", "responses": {"200": {"description": "OK"}}}
    },
}


def with_access(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of `document` with the access routes, scheme and errors."""
    out = copy.deepcopy(document)
    out["paths"].update(copy.deepcopy(PATHS))
    out["components"]["schemas"].update(copy.deepcopy(SCHEMAS))
    out["components"]["securitySchemes"] = {"bearer": BEARER}
    out["security"] = [{"bearer": []}]
    for path, item in out["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            responses = operation["responses"]
            if path in OPEN_PATHS:
                operation["security"] = []
            else:
                for status in ("401", "403"):
                    responses.setdefault(status, ERRORS[status])
            if "requestBody" in operation:
                responses.setdefault("415", ERRORS["415"])
            if path == IMPORT or (path == ARTICLE and method == "put"):
                for status, response in WRITE_ERRORS.items():
                    responses.setdefault(status, response)
    return out


FULL_DOCUMENT: Final = with_access(DOCUMENT)


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(FULL_DOCUMENT)
