"""GET /openapi.json: a hand-written OpenAPI 3.1 description of the HTTP API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from kbrec.records import MAX_ID_LENGTH
from kbrec.repository import MAX_VERSION
from server.http.openapi_experiments import EXPERIMENT_PATHS, EXPERIMENT_SCHEMAS
from server.http.payloads import DEFAULT_TOP_K, MAX_TOP_K

ID_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9._-]+$", "maxLength": MAX_ID_LENGTH}
OK = {"description": "OK"}
LOCALE_SCHEMA = {"type": ["string", "null"], "examples": ["en-us"]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    texts = {
        400: "body is not UTF-8 JSON",
        404: "unknown account, article or model version",
        409: "the model version asked for is not serving",
        413: "body too large",
        422: "invalid field",
        503: "overloaded (expected wait over --max-queue-ms) or not ready (Retry-After)",
    }
    return {str(status): json_body(ref("Error"), texts[status]) for status in statuses}


def path_ids(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "schema": ID_SCHEMA} for name in names]


ARTICLE_PATH = {
    "parameters": path_ids("account_id", "article_id"),
    "put": {
        "summary": "Create or replace an article; returns once durable and recommendable",
        "requestBody": {"required": True, **json_body(ref("ArticleInput"))},
        "responses": {
            "200": json_body(ref("Article"), "replaced"),
            "201": json_body(ref("Article"), "created"),
            **errors(400, 413, 422, 503),
        },
    },
    "get": {
        "summary": "Read an article",
        "responses": {"200": json_body(ref("Article"), "the article"), **errors(404, 422)},
    },
    "delete": {
        "summary": "Delete an article (durable, no longer recommended)",
        "responses": {"204": {"description": "deleted"}, **errors(404, 422, 503)},
    },
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "RecommendationRequest": {
        "type": "object",
        "required": ["account_id", "text"],
        "properties": {
            "account_id": ID_SCHEMA,
            "text": {
                "type": "string",
                "minLength": 1,
                "description": "the ticket; cut to what the model reads; at most "
                "--max-query-bytes of UTF-8 (default 16384), else 413 text_too_large",
            },
            "top_k": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_TOP_K,
                "default": DEFAULT_TOP_K,
            },
            "locale": LOCALE_SCHEMA,
            "model_version": {
                "type": "integer",
                "minimum": 1,
                "description": "rank with this version instead of the active one: it must "
                "be serving (active, or the complete standby; else 409); outside any "
                "experiment",
            },
            "assignment_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "a user or ticket key: in an experiment by key, every request "
                "with the same key (in the account) gets the same arm (default: the account)",
            },
        },
    },
    "Recommendation": {
        "type": "object",
        "required": ["request_id", "model_version", "articles"],
        "properties": {
            "request_id": {
                "type": "string",
                "description": "32 hex digits; names the request for POST /v1/feedback",
            },
            "model_version": {"type": "integer"},
            "articles": {
                "type": "array",
                "description": "best first; only articles scoring at least the account's "
                "minimum score (an empty list is a valid answer)",
                "items": {
                    "type": "object",
                    "required": ["article_id", "title", "score"],
                    "properties": {
                        "article_id": {"type": "string"},
                        "title": {"type": "string"},
                        "score": {"type": "number"},
                    },
                },
            },
            "experiment_id": {
                "type": "string",
                "description": "only while an experiment's arm answered the request",
            },
            "arm": {"type": "string", "enum": ["control", "treatment"]},
        },
    },
    **EXPERIMENT_SCHEMAS,
    "ArticleInput": {
        "type": "object",
        "required": ["title", "body"],
        "properties": {
            "title": {"type": "string", "minLength": 1},
            "body": {"type": "string", "description": "plain text"},
            "locale": LOCALE_SCHEMA,
        },
    },
    "Article": {
        "type": "object",
        "properties": {
            "account_id": {"type": "string"},
            "article_id": {"type": "string"},
            "title": {"type": "string"},
            "body": {"type": "string"},
            "locale": LOCALE_SCHEMA,
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "ZendeskExport": {
        "type": "object",
        "required": ["articles"],
        "properties": {
            "articles": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "title", "body"],
                    "properties": {
                        "id": {"type": ["integer", "string"]},
                        "title": {"type": "string"},
                        "body": {"type": "string", "description": "HTML"},
                        "locale": LOCALE_SCHEMA,
                        "draft": {"type": "boolean", "description": "drafts are skipped"},
                    },
                },
            }
        },
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "kbrec", "version": "1", "description": "Help-center article recommendation"},
    "paths": {
        "/v1/recommendations": {
            "post": {
                "summary": "The account's articles that best answer a ticket",
                "requestBody": {"required": True, **json_body(ref("RecommendationRequest"))},
                "responses": {
                    "200": json_body(ref("Recommendation"), "ranked articles"),
                    **errors(400, 404, 409, 413, 422, 503),
                },
            }
        },
        "/v1/accounts/{account_id}/articles/{article_id}": ARTICLE_PATH,
        "/v1/accounts/{account_id}/articles/import": {
            "parameters": path_ids("account_id"),
            "post": {
                "summary": "Import a Zendesk Help Center export, committed in chunks",
                "description": "Articles are committed in chunks of --import-chunk-articles, "
                "in export order. A 200 means all of them are. An import that fails midway "
                "keeps the chunks committed before (503 import_interrupted says how many) "
                "and deletes nothing; re-sending the export is safe. mode=sync then deletes "
                "the account's articles that the export lacks or lists as drafts, in one "
                "transaction (also articles written meanwhile by others). At most "
                "--max-import-articles per export; one import more than "
                "--max-concurrent-imports at a time gets a 503 at once.",
                "parameters": [
                    {
                        "name": "mode",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["upsert", "sync"]},
                        "description": "upsert (default): write the export's articles; "
                        "sync: also delete the account's articles it lacks",
                    }
                ],
                "requestBody": {"required": True, **json_body(ref("ZendeskExport"))},
                "responses": {
                    "200": json_body(
                        {
                            "type": "object",
                            "properties": {
                                "account_id": {"type": "string"},
                                "mode": {"type": "string", "enum": ["upsert", "sync"]},
                                "imported": {"type": "integer"},
                                "created": {"type": "integer"},
                                "updated": {"type": "integer"},
                                "deleted": {"type": "integer"},
                            },
                        },
                        "imported",
                    ),
                    **errors(400, 413, 422, 503),
                },
            },
        },
        "/v1/models": {
            "get": {
                "summary": "Model versions, which is active, upgrade progress, whether this "
                "process leads model changes (others answer activations with 503 not_leader)",
                "responses": {"200": OK},
            }
        },
        "/v1/models/{version}/activate": {
            "parameters": [
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                }
            ],
            "post": {
                "summary": "Switch to a version (a kept previous one: at once) or start an "
                "upgrade to it (202; switches when its articles are re-embedded)",
                "responses": {"200": OK, "202": OK, **errors(404, 422, 503)},
            },
        },
        "/healthz": {"get": {"summary": "Alive", "responses": {"200": OK, **errors(503)}}},
        "/readyz": {
            "get": {"summary": "Model loaded, index built", "responses": {"200": OK, **errors(503)}}
        },
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": OK}}},
        **EXPERIMENT_PATHS,
    },
    "components": {"schemas": SCHEMAS},
}


async def openapi_document(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
