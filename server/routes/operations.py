"""Operational endpoints: liveness, readiness, model versions, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.errors import NotReady
from server.http_errors import error_response
from server.metrics import Metrics
from server.model_versions import VersionStatus
from server.service import RecommendationService


def service_of(request: Request) -> RecommendationService:
    return request.app.state.service


async def healthz(request: Request) -> JSONResponse:
    """Alive: the batch worker runs and the backend answers (503 asks for a restart)."""
    service = service_of(request)
    if not await service.healthy():
        reason = service.failure or "the batch worker or the backend is down"
        return error_response(503, "unhealthy", f"unhealthy: {reason}")
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    service = service_of(request)
    if not service.ready:
        raise NotReady(f"not ready: {service.state}")
    # A remote backend (Triton) can go away and come back: ready follows it, no restart.
    if not await service.healthy():
        raise NotReady("not ready: the backend does not answer")
    return JSONResponse({"status": "ready", "model_version": service.active_version})


def version_json(status: VersionStatus, active: int | None) -> dict[str, Any]:
    if status.version is None:
        return {"version": status.number, "state": "invalid", "error": status.error}
    metadata = status.version.metadata
    return {
        "version": status.number,
        "state": "active" if status.number == active else "available",
        "dim": metadata.dim,
        "max_length": metadata.max_length,
        "created_at": metadata.created_at,
    }


async def models(request: Request) -> JSONResponse:
    service = service_of(request)
    active = service.active_version
    return JSONResponse(
        {
            "active_version": active,
            "versions": [version_json(status, active) for status in service.scan.statuses],
            "upgrade": None,  # live upgrades come with a later issue
        }
    )


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.exposition()
    return Response(body, media_type=content_type)
