"""POST /v1/feedback: what the customer did with a recommendation."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.auth import require_account
from server.http.experiment_payloads import parse_feedback
from server.http.payloads import read_json
from server.service import RecommendationService


async def feedback(request: Request) -> JSONResponse:
    """201 when recorded, 200 when it was recorded before (idempotent per request,
    article and event); 404 for a request the log does not hold (after waiting up to one
    log flush for it), 403 for another account's request, 422 for an article that was
    not in the response."""
    service: RecommendationService = request.app.state.service
    event = parse_feedback(await read_json(request, service.settings.http.max_body_bytes))
    experiments = service.experiments
    logged = await experiments.logged(event.request_id)
    require_account(request, logged.account_id)  # scoped like the request it is about
    new = await experiments.add_feedback(logged, event.article_id, event.event)
    return JSONResponse(
        {
            "request_id": logged.request_id,
            "article_id": event.article_id,
            "event": event.event.value,
            "duplicate": not new,
        },
        201 if new else 200,
    )
