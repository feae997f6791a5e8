"""The one place where exceptions become HTTP responses: {"error": {"code", "message"}}.

Caller mistakes are 400/404/405/409/413/415/422; no valid credentials 401, and
credentials that may not do it 403 (both with WWW-Authenticate); overload,
not-ready and failing dependencies are 503 with Retry-After (the service as a whole
is saturated or starting, not this client over a quota, hence not 429). Anything else is a bug:
a 500 with a generic message, logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kbrec.zendesk import ZendeskExportError
from server.errors import (
    ArticleNotFound,
    ExperimentNotFound,
    Forbidden,
    ImportInterrupted,
    InvalidRequest,
    NotLeader,
    NotReady,
    Overloaded,
    RequestNotLogged,
    TrialInProgress,
    Unauthorized,
    UnknownAccount,
    VersionNotFound,
    VersionNotServing,
    VersionRejected,
)
from server.inference.backends.base import BackendError
from server.storage.store import StoreError

log = logging.getLogger(__name__)

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def retry_later(request: Request, code: str, message: str) -> JSONResponse:
    retry_after = request.app.state.settings.http.retry_after_s
    return error_response(503, code, message, {"Retry-After": str(retry_after)})


async def invalid_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    return error_response(exc.status, exc.code, str(exc))


async def invalid_export(request: Request, exc: Exception) -> Response:
    return error_response(422, "invalid_export", str(exc))


BEARER_REALM = 'Bearer realm="kbrec"'


async def unauthorized(request: Request, exc: Exception) -> Response:
    """401 with the challenge of RFC 6750 (`invalid_token` when a token was refused)."""
    assert isinstance(exc, Unauthorized)
    challenge = f'{BEARER_REALM}, error="invalid_token"' if exc.token_rejected else BEARER_REALM
    return error_response(401, "unauthorized", str(exc), {"WWW-Authenticate": challenge})


async def forbidden(request: Request, exc: Exception) -> Response:
    challenge = f'{BEARER_REALM}, error="insufficient_scope"'
    return error_response(403, "forbidden", str(exc), {"WWW-Authenticate": challenge})


async def unknown_account(request: Request, exc: Exception) -> Response:
    return error_response(404, "unknown_account", str(exc))


async def article_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "article_not_found", str(exc))


async def version_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "version_not_found", str(exc))


async def version_rejected(request: Request, exc: Exception) -> Response:
    return error_response(422, "version_rejected", str(exc))


async def version_not_serving(request: Request, exc: Exception) -> Response:
    return error_response(409, "version_not_serving", str(exc))


async def experiment_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "experiment_not_found", str(exc))


async def request_not_logged(request: Request, exc: Exception) -> Response:
    return error_response(404, "request_not_found", str(exc))


async def trial_in_progress(request: Request, exc: Exception) -> Response:
    return error_response(409, "experiment_running", str(exc))


async def overloaded(request: Request, exc: Exception) -> Response:
    return retry_later(request, "overloaded", str(exc))


async def import_interrupted(request: Request, exc: Exception) -> Response:
    return retry_later(request, "import_interrupted", str(exc))


async def not_ready(request: Request, exc: Exception) -> Response:
    return retry_later(request, "not_ready", str(exc))


async def not_leader(request: Request, exc: Exception) -> Response:
    return retry_later(request, "not_leader", str(exc))


async def backend_failed(request: Request, exc: Exception) -> Response:
    log.warning("backend error on %s %s: %s", request.method, request.url.path, exc)
    return retry_later(request, "backend_unavailable", str(exc))


async def store_failed(request: Request, exc: Exception) -> Response:
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return retry_later(request, "store_unavailable", "the article store failed; retry later")


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own: unknown route (404), wrong method (405, with Allow)."""
    assert isinstance(exc, HTTPException)
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = {404: f"no route {request.url.path}", 405: f"{request.method} not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return error_response(exc.status_code, code, message, exc.headers)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    InvalidRequest: invalid_request,
    Unauthorized: unauthorized,
    Forbidden: forbidden,
    ZendeskExportError: invalid_export,
    UnknownAccount: unknown_account,
    ArticleNotFound: article_not_found,
    VersionNotFound: version_not_found,
    VersionRejected: version_rejected,
    VersionNotServing: version_not_serving,
    ExperimentNotFound: experiment_not_found,
    RequestNotLogged: request_not_logged,
    TrialInProgress: trial_in_progress,
    Overloaded: overloaded,
    ImportInterrupted: import_interrupted,
    NotReady: not_ready,
    NotLeader: not_leader,
    BackendError: backend_failed,
    StoreError: store_failed,
    HTTPException: http_exception,
    Exception: internal_error,
}
