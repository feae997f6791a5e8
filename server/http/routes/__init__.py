"""The HTTP routes, each a module-level function in a module of its concern."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, Route

from server.http.auth import Access, guarded_route
from server.http.openapi_access import openapi_document
from server.http.routes.account_settings import account_settings
from server.http.routes.accounts import account_keys, create_account, get_account, revoke_key
from server.http.routes.articles import article, import_articles
from server.http.routes.experiments import experiment, experiments, stop_experiment
from server.http.routes.feedback import feedback
from server.http.routes.operations import activate_model, healthz, metrics, models, readyz
from server.http.routes.recommendations import recommend

ACCOUNT = "/v1/accounts/{account_id}"
ARTICLE = f"{ACCOUNT}/articles/{{article_id}}"

# Every route says who may call it (server.http.auth); a test holds each rule.
ROUTES: list[BaseRoute] = [
    # The body names the account: the handler checks it (`require_account`).
    guarded_route("/v1/recommendations", recommend, ["POST"], Access.CALLER),
    # Before ARTICLE, which would otherwise take "import" for an article id.
    guarded_route(f"{ACCOUNT}/articles/import", import_articles, ["POST"], Access.ACCOUNT),
    # HEAD comes with GET.
    guarded_route(ARTICLE, article, ["GET", "PUT", "DELETE"], Access.ACCOUNT),
    guarded_route("/v1/accounts", create_account, ["POST"], Access.ADMIN),
    guarded_route(ACCOUNT, get_account, ["GET"], Access.ACCOUNT),
    guarded_route(f"{ACCOUNT}/keys", account_keys, ["GET", "POST"], Access.ADMIN),
    guarded_route(f"{ACCOUNT}/keys/{{key_id}}", revoke_key, ["DELETE"], Access.ADMIN),
    # An account reads its minimum score; the admin sets it.
    guarded_route(f"{ACCOUNT}/settings", account_settings, ["GET"], Access.ACCOUNT),
    guarded_route(f"{ACCOUNT}/settings", account_settings, ["PUT"], Access.ADMIN),
    # The logged request names the account: the handler checks it (`require_account`).
    guarded_route("/v1/feedback", feedback, ["POST"], Access.CALLER),
    guarded_route("/v1/experiments", experiments, ["GET", "POST"], Access.ADMIN),
    guarded_route("/v1/experiments/{experiment_id}", experiment, ["GET"], Access.ADMIN),
    guarded_route("/v1/experiments/{experiment_id}/stop", stop_experiment, ["POST"], Access.ADMIN),
    guarded_route("/v1/models", models, ["GET"], Access.ADMIN),
    guarded_route("/v1/models/{version}/activate", activate_model, ["POST"], Access.ADMIN),
    guarded_route("/healthz", healthz, ["GET"], Access.OPEN),
    guarded_route("/readyz", readyz, ["GET"], Access.OPEN),
    guarded_route("/metrics", metrics, ["GET"], Access.ADMIN),
    guarded_route("/openapi.json", openapi_document, ["GET"], Access.OPEN),
]


def route_templates(routes: list[BaseRoute]) -> dict[Callable[..., Any], str]:
    """Endpoint → path template, for metrics labels."""
    return {route.endpoint: route.path for route in routes if isinstance(route, Route)}
