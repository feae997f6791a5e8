"""The HTTP routes, each a module-level function in a module of its concern."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, Route

from server.http.openapi import openapi_document
from server.http.routes.articles import article, import_articles
from server.http.routes.operations import activate_model, healthz, metrics, models, readyz
from server.http.routes.recommendations import recommend

ARTICLE = "/v1/accounts/{account_id}/articles/{article_id}"

ROUTES: list[BaseRoute] = [
    Route("/v1/recommendations", recommend, methods=["POST"]),
    # Before ARTICLE, which would otherwise take "import" for an article id.
    Route("/v1/accounts/{account_id}/articles/import", import_articles, methods=["POST"]),
    Route(ARTICLE, article, methods=["GET", "PUT", "DELETE"]),  # HEAD comes with GET
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{version}/activate", activate_model, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_document, methods=["GET"]),
]


def route_templates(routes: list[BaseRoute]) -> dict[Callable[..., Any], str]:
    """Endpoint → path template, for metrics labels."""
    return {route.endpoint: route.path for route in routes if isinstance(route, Route)}
