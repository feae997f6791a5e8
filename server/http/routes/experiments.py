"""A/B experiments between model versions (admin routes): start one, list them, read one
with its report, stop one keeping its winner."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from server.errors import NotReady
from server.experiments.report import ExperimentReport, experiment_json, report_json
from server.http.experiment_payloads import (
    experiment_id_param,
    parse_experiment_start,
    parse_experiment_stop,
)
from server.http.payloads import decode_json, read_body, read_json
from server.service import RecommendationService
from server.storage.experiment_tables import ExperimentState


def ready_service(request: Request) -> RecommendationService:
    service: RecommendationService = request.app.state.service
    if not service.ready:
        raise NotReady(f"not ready: {service.state}")
    return service


def with_report(report: ExperimentReport) -> dict[str, object]:
    return {"experiment": experiment_json(report.experiment), "report": report_json(report)}


async def experiments(request: Request) -> JSONResponse:
    """GET: every experiment, the newest first. POST: start one: 201 when it runs at
    once (its treatment was complete), 202 while the treatment's articles are embedded."""
    service = ready_service(request)
    if request.method == "GET":
        records = await service.experiments.records()
        return JSONResponse({"experiments": [experiment_json(r) for r in records]})
    body = await read_json(request, service.settings.http.max_body_bytes)
    start = parse_experiment_start(body)
    record = await service.experiments.start(
        start.treatment_version, start.treatment_share, start.unit, start.control_version
    )
    status = 201 if record.state is ExperimentState.RUNNING else 202
    return JSONResponse(experiment_json(record), status)


async def experiment(request: Request) -> JSONResponse:
    """One experiment with its report (the figures of `kbrec experiment report`)."""
    service = ready_service(request)
    experiment_id = experiment_id_param(request.path_params["experiment_id"])
    return JSONResponse(with_report(await service.experiments.report(experiment_id)))


async def stop_experiment(request: Request) -> JSONResponse:
    """Stop it, keeping the winner (the body's, else the report's, else the control);
    `activate_winner` switches a winning treatment in."""
    service = ready_service(request)
    experiment_id = experiment_id_param(request.path_params["experiment_id"])
    raw = await read_body(request, service.settings.http.max_body_bytes)
    stop = parse_experiment_stop(decode_json(raw) if raw.strip() else None)
    _, report = await service.experiments.stop(
        experiment_id, activate_winner=stop.activate_winner, winner=stop.winner
    )
    return JSONResponse(with_report(report))
