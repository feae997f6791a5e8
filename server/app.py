"""`create_app(settings)`: the Starlette application of the recommendation service.

The lifespan opens the service (model version, backend, batcher, store) and
closes it; the index is then built in the background while /readyz says 503.
Tests inject a backend with `backend_opener` (a function of the verified
`ModelVersion`), so the HTTP logic runs without ONNX Runtime.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from server.backends.onnx_runtime import OnnxRuntimeBackend
from server.http_errors import EXCEPTION_HANDLERS
from server.metrics import Metrics, MetricsMiddleware
from server.model_lifecycle import VersionsKeeper
from server.routes import ROUTES, route_templates
from server.service import RecommendationService, StoreOpener
from server.serving_model import BackendOpener
from server.settings import Settings
from server.sqlite_store import SqliteArticleStore


def onnx_runtime_opener(settings: Settings) -> BackendOpener:
    return functools.partial(
        OnnxRuntimeBackend.open,
        intra_op_threads=settings.intra_op_threads,
        background_threads=settings.backfill_threads,
    )


def default_backend_opener(settings: Settings) -> BackendOpener:
    """Triton over gRPC when `triton_url` is set, else the embedded ONNX Runtime."""
    if settings.triton_url:
        from server.backends.triton_grpc import triton_opener  # tritonclient only when used

        return triton_opener(settings.triton_url, settings.triton_timeout_s)
    return onnx_runtime_opener(settings)


def default_versions_keeper(settings: Settings) -> VersionsKeeper | None:
    """With Triton, kbrec tells it which versions to keep loaded; in-process, no one."""
    if not settings.triton_url:
        return None
    from server.backends.triton_control import triton_keeper

    return triton_keeper(settings.triton_url, settings.repository)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    service: RecommendationService = app.state.service
    await service.start()
    try:
        yield
    finally:
        await service.stop()


def create_app(
    settings: Settings,
    *,
    backend_opener: BackendOpener | None = None,
    store_opener: StoreOpener | None = None,
) -> Starlette:
    metrics = Metrics()
    service = RecommendationService(
        settings,
        backend_opener or default_backend_opener(settings),
        store_opener or SqliteArticleStore.open,
        on_batch=metrics.observe_batch,
        keep_loaded=None if backend_opener else default_versions_keeper(settings),
    )
    metrics.watch(service)
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics, route_templates=route_templates(ROUTES))
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    return app
