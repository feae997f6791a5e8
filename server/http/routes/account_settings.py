"""An account's settings: its minimum score (the precision knob). Reading is the
account's (its keys may); changing it is the admin's."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.http.experiment_payloads import parse_min_score
from server.http.payloads import checked_id, read_json
from server.service import RecommendationService


async def account_settings(request: Request) -> JSONResponse:
    """GET: the account's minimum score (null: the default applies) and the one in force.
    PUT {"min_score": x | null}: set it; every process applies it within the change
    feed's delay, this one at once."""
    service: RecommendationService = request.app.state.service
    account_id = checked_id(request.path_params["account_id"], "account id")
    experiments = service.experiments
    if request.method == "PUT":
        body = await read_json(request, service.settings.http.max_body_bytes)
        await experiments.set_min_score(account_id, parse_min_score(body))
    return JSONResponse(
        {
            "account_id": account_id,
            "min_score": experiments.min_scores.configured(account_id),
            "effective_min_score": experiments.min_scores.of(account_id),
        }
    )
