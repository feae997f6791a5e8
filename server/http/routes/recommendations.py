"""POST /v1/recommendations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.auth import require_account
from server.http.disconnect import (
    CLIENT_CLOSED_REQUEST,
    ClientDisconnected,
    cancelled_if_client_leaves,
)
from server.http.errors import error_response
from server.http.payloads import parse_recommendation, read_json
from server.service import RecommendationService

SCORE_DECIMALS = 6


async def recommend(request: Request) -> JSONResponse:
    service: RecommendationService = request.app.state.service
    limits = service.settings.http
    body = await read_json(request, limits.max_body_bytes)
    query = parse_recommendation(body, limits.max_query_bytes)
    require_account(request, query.account_id)
    try:
        # A client that leaves while its query waits takes its query out of the batcher.
        async with cancelled_if_client_leaves(request):
            result = await service.recommend(
                query.account_id,
                query.text,
                query.top_k,
                query.locale,
                query.model_version,
                query.assignment_key,
            )
    except ClientDisconnected:
        return error_response(CLIENT_CLOSED_REQUEST, "client_closed_request", "client left")
    body = {
        "request_id": result.request_id,
        "model_version": result.model_version,
        "articles": [
            {
                "article_id": article.article_id,
                "title": article.title,
                "score": round(article.score, SCORE_DECIMALS),
            }
            for article in result.articles
        ],
    }
    if result.experiment_id is not None:  # only in an experiment: the fields above as before
        body.update(experiment_id=result.experiment_id, arm=result.arm)
    return JSONResponse(body)
