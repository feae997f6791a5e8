"""Operational endpoints: liveness, readiness, model versions and activation, metrics."""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kbrec.repository import MAX_VERSION, parse_version
from server.errors import InvalidRequest, NotReady
from server.http.errors import error_response
from server.http.metrics import Metrics
from server.service import RecommendationService
from server.versions.live_set import Standby
from server.versions.verification import VersionStatus


def service_of(request: Request) -> RecommendationService:
    return request.app.state.service


async def healthz(request: Request) -> JSONResponse:
    """Alive: the batch worker runs (503 asks for a restart). A backend that does not
    answer makes /readyz false instead: restarting kbrec would not bring Triton back."""
    service = service_of(request)
    if not service.alive():
        reason = service.failure or "the batch worker is down"
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


def version_json(
    number: int, state: str, status: VersionStatus | None, error: str | None, vectors: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"version": number, "state": state}
    if status is not None and status.version is not None:
        metadata = status.version.metadata
        out.update(dim=metadata.dim, max_length=metadata.max_length, created_at=metadata.created_at)
    out["stored_vectors"] = vectors
    if error:
        out["error"] = error
    return out


def upgrade_json(standby: Standby) -> dict[str, Any]:
    progress = standby.progress
    done = sum(count for _, count in standby.model.index.article_counts())
    rate = progress.articles_per_s()
    return {
        "version": standby.number,
        "state": "complete" if standby.complete else "backfilling",
        "articles_done": done,
        "articles_remaining": progress.remaining,
        "articles_per_s": round(rate, 2),
        "eta_s": round(progress.remaining / rate, 1) if rate > 0 else None,
        "last_error": progress.last_error,
    }


async def models(request: Request) -> JSONResponse:
    service = service_of(request)
    lifecycle = service.lifecycle
    vectors = await service.store.embedding_versions()
    upgrade = lifecycle.upgrade
    return JSONResponse(
        {
            "active_version": lifecycle.live.active_number,
            "versions": [
                version_json(number, state, status, error, vectors.get(number, 0))
                for number, state, status, error in lifecycle.version_states()
            ],
            "upgrade": None if upgrade is None else upgrade_json(upgrade),
            # Several processes may share the store: one leads model changes.
            "leader": lifecycle.leader,
            "change_seq": service.applied_change_seq,
        }
    )


async def activate_model(request: Request) -> JSONResponse:
    """Switch to a version: 200 when done (rollback to a kept version: instant), 202 when
    its articles are being re-embedded first (progress under "upgrade" in /v1/models)."""
    raw = request.path_params["version"]
    number = parse_version(raw)
    if number is None:  # the repository's rule: ASCII digits, no leading zero, bounded
        shown = raw if len(raw) <= 40 else raw[:39] + "…"
        raise InvalidRequest(
            f"model version must be an integer from 1 to {MAX_VERSION}, got {shown!r}"
        )
    service = service_of(request)
    if not service.ready:
        raise NotReady(f"not ready: {service.state}")
    started = time.perf_counter()
    activation = await service.lifecycle.activate(number)
    body: dict[str, Any] = {"active_version": activation.active, "switched": activation.switched}
    if activation.pending is not None:
        body["upgrade"] = upgrade_json(activation.pending)
        return JSONResponse(body, 202)
    body["seconds"] = round(time.perf_counter() - started, 4)
    return JSONResponse(body)


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.exposition()
    return Response(body, media_type=content_type)
