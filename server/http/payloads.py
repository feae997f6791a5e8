"""Request bodies and path parameters: read within a byte limit, decode, validate.

Everything here raises `InvalidRequest` (400 for bytes that are not UTF-8 JSON,
413 for a body or a query text over its limit, 422 for well-formed JSON with bad
fields), so no malformed input can reach the service and become a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from kbrec.locales import normalize_locale
from kbrec.records import MAX_ID_LENGTH, is_valid_id
from server.errors import InvalidRequest

DEFAULT_TOP_K = 5
MAX_TOP_K = 100


@dataclass(frozen=True)
class RecommendationQuery:
    account_id: str
    text: str
    top_k: int
    locale: str | None
    model_version: int | None = None  # None: the active version
    assignment_key: str | None = None  # a user or ticket key: its experiment arm sticks


@dataclass(frozen=True)
class ArticleFields:
    title: str
    body: str
    locale: str | None


async def read_json(request: Request, limit: int) -> object:
    """The request body as JSON, refusing bodies over `limit` bytes before reading them all."""
    return decode_json(await read_body(request, limit))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body's bytes, refusing bodies over `limit` bytes before reading them all."""
    require_json_content(request)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise body_too_large(limit)
    return bytes(body)


def require_json_content(request: Request) -> None:
    """415 unless the body is declared JSON. A browser may send a cross-site POST without
    asking first only as text/plain, a form or with no type: none of them gets in."""
    declared = request.headers.get("content-type", "")
    media_type = declared.partition(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise InvalidRequest(
            f"Content-Type must be application/json, got {declared or 'none'!r}",
            "unsupported_media_type",
            415,
        )


def body_too_large(limit: int) -> InvalidRequest:
    return InvalidRequest(f"request body is over {limit} bytes", "body_too_large", 413)


def decode_json(body: bytes) -> object:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body is not valid UTF-8: {exc}", "invalid_utf8", 400) from exc
    try:
        data = json.loads(text, parse_constant=reject_constant)
    except ValueError as exc:  # JSONDecodeError, or an integer over the 4300-digit limit
        raise InvalidRequest(f"body is not valid JSON: {exc}", "invalid_json", 400) from exc
    except RecursionError as exc:
        raise InvalidRequest("body is nested too deeply", "invalid_json", 400) from exc
    if "\\u" in text:
        reject_surrogates(data)
    return data


def reject_surrogates(data: object) -> None:
    """JSON may escape lone surrogates ("\\ud800"): valid JSON, but no Unicode text.

    They would fail later in the tokenizer, HTML parser or database, so stop them here.
    """
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except RecursionError as exc:
        raise InvalidRequest("body is nested too deeply", "invalid_json", 400) from exc
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            "body has an unpaired surrogate escape", "invalid_unicode", 400
        ) from exc


def reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


def json_object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidRequest(f"body must be a JSON object, got {json_type(data)}")
    return data


def json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def optional_string(data: dict[str, Any], name: str) -> str | None:
    """A string member, None if missing or null."""
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name!r} must be a string, got {json_type(value)}")
    return value


def required_string(data: dict[str, Any], name: str) -> str:
    value = optional_string(data, name)
    if value is None:
        raise InvalidRequest(f"{name!r} is required")
    return value


def non_blank(data: dict[str, Any], name: str) -> str:
    value = required_string(data, name)
    if not value.strip():
        raise InvalidRequest(f"{name!r} must not be empty")
    return value


def optional_locale(data: dict[str, Any]) -> str | None:
    value = optional_string(data, "locale")
    if value is None:
        return None
    try:
        return normalize_locale(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def top_k_field(data: dict[str, Any]) -> int:
    value = data.get("top_k", DEFAULT_TOP_K)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"'top_k' must be an integer, got {json_type(value)}")
    if not 1 <= value <= MAX_TOP_K:
        raise InvalidRequest(f"'top_k' must be in 1..{MAX_TOP_K}, got {value}")
    return value


def optional_version(data: dict[str, Any]) -> int | None:
    value = data.get("model_version")
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidRequest(f"'model_version' must be a positive integer, got {value!r}")
    return value


def checked_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_valid_id(value):
        raise InvalidRequest(
            f"invalid {what} {value!r}: use 1-{MAX_ID_LENGTH} characters from "
            "A-Z a-z 0-9 . _ - (not only dots)",
            "invalid_id",
        )
    return value


def parse_recommendation(data: object, max_text_bytes: int | None = None) -> RecommendationQuery:
    body = json_object(data)
    return RecommendationQuery(
        account_id=checked_id(required_string(body, "account_id"), "account id"),
        text=capped_text(non_blank(body, "text"), max_text_bytes),
        top_k=top_k_field(body),
        locale=optional_locale(body),
        model_version=optional_version(body),
        assignment_key=optional_key(body, "assignment_key"),
    )


MAX_KEY_LENGTH = 200


def optional_key(data: dict[str, Any], name: str) -> str | None:
    """A caller's opaque key (a user or ticket id): 1-200 printable characters."""
    value = optional_string(data, name)
    if value is not None and not (0 < len(value) <= MAX_KEY_LENGTH and value.isprintable()):
        raise InvalidRequest(f"{name!r} must be 1-{MAX_KEY_LENGTH} printable characters")
    return value


def capped_text(text: str, max_bytes: int | None) -> str:
    """`text` if it is at most `max_bytes` in UTF-8, else 413 `text_too_large`.

    A query is cut to what the model reads anyway, but a text far over that is a
    mistake or an attack: refused before anything else is done with it.
    """
    # A character is 1-4 bytes: encode only when the length alone cannot tell.
    if max_bytes is None or len(text) * 4 <= max_bytes:
        return text
    size = len(text) if len(text) > max_bytes else len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidRequest(
            f"'text' is over {max_bytes} bytes (UTF-8)", "text_too_large", status=413
        )
    return text


def parse_article(data: object) -> ArticleFields:
    body = json_object(data)
    return ArticleFields(
        title=non_blank(body, "title"),
        body=required_string(body, "body"),
        locale=optional_locale(body),
    )
