"""POST /v1/recommendations."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.payloads import parse_recommendation, read_json
from server.service import RecommendationService

SCORE_DECIMALS = 6


async def recommend(request: Request) -> JSONResponse:
    service: RecommendationService = request.app.state.service
    query = parse_recommendation(await read_json(request, service.settings.http.max_body_bytes))
    result = await service.recommend(
        query.account_id, query.text, query.top_k, query.locale, query.model_version
    )
    return JSONResponse(
        {
            "request_id": uuid.uuid4().hex,
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
    )
