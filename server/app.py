"""`create_app(settings)`: the Starlette application of the recommendation service.

The top of the server's layers (docs/architecture.md): it picks the backend kind,
wires the service, metrics and routes, and its lifespan opens and closes the
service; the index is then built in the background while /readyz says 503.
Tests inject a `BackendProvider` (`backends=`), so the HTTP logic runs without
ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from server.heap import settle_for_serving
from server.http.auth import ADMIN_TOKEN_VARIABLE, access_middleware, load_auth, warn_if_open
from server.http.errors import EXCEPTION_HANDLERS
from server.http.imports import ImportGate
from server.http.keyring import KeyRing
from server.http.loop_lag import probe_loop_lag
from server.http.metrics import Metrics, MetricsMiddleware
from server.http.routes import ROUTES, route_templates
from server.inference.backends.base import BackendProvider
from server.inference.backends.onnx_runtime import OnnxRuntimeProvider
from server.service import RecommendationService, StoreOpener
from server.settings import Settings
from server.storage.opening import open_store

log = logging.getLogger(__name__)


def default_backends(settings: Settings) -> BackendProvider:
    """Triton over gRPC when `triton_url` is set, else the embedded ONNX Runtime."""
    inference = settings.inference
    if inference.triton_url:
        from server.inference.backends.triton_control import TritonProvider  # tritonclient

        return TritonProvider(
            inference.triton_url, settings.repository, timeout_s=inference.triton_timeout_s
        )
    # Workers and their model instances share the cores: each instance gets its part,
    # not one thread per core (which would put several threads on every core).
    share = inference.core_share(settings.http.workers)
    instances = inference.instances(settings.http.workers)
    threads = inference.intra_op_threads or max(1, share // instances)
    return OnnxRuntimeProvider(
        threads,
        inference.backfill_threads,
        inference.device,
        instances,
        lone_threads=inference.lone_batch_threads or share,
    )


async def settle_heap_when_ready(service: RecommendationService) -> None:
    """Once the index is built, so that its objects are frozen with startup's."""
    if await service.until_ready():
        log.info("garbage collector: %d objects frozen once ready", settle_for_serving())


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    service: RecommendationService = app.state.service
    await service.start()
    loop = asyncio.get_running_loop()
    lag_probe = loop.create_task(probe_loop_lag(app.state.metrics.observe_loop_lag))
    settling = loop.create_task(settle_heap_when_ready(service)) if app.state.settle_heap else None
    try:
        yield
    finally:
        lag_probe.cancel()
        if settling is not None:
            settling.cancel()
        app.state.imports.close()
        await app.state.keys.close()
        await service.stop()


def create_app(
    settings: Settings,
    *,
    backends: BackendProvider | None = None,
    store_opener: StoreOpener | None = None,
    admin_token: str | None = None,
    settle_heap: bool = False,
) -> Starlette:
    """`admin_token` turns authentication on as KBREC_ADMIN_TOKEN would (by default that
    variable or --admin-token-file; StartupError for an exposed address without one).
    `settle_heap`: set the process's garbage collector for serving once the service is
    ready (server/heap.py); for the process that serves, not for one that builds many
    apps."""
    environ = os.environ if admin_token is None else {ADMIN_TOKEN_VARIABLE: admin_token}
    auth = load_auth(settings, environ)
    warn_if_open(auth, settings)
    metrics = Metrics()
    service = RecommendationService(
        settings,
        backends or default_backends(settings),
        store_opener or open_store,
        observer=metrics,
        feed_observer=metrics,
        accounts_provisioned=auth.enabled,
        experiment_observer=metrics,
    )
    keys = KeyRing(lambda: service.store, settings.access.key_cache_s)
    metrics.watch(service)
    app = Starlette(
        routes=ROUTES,
        middleware=[
            Middleware(MetricsMiddleware, metrics=metrics, route_templates=route_templates(ROUTES)),
            *access_middleware(settings, auth, keys),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.metrics = metrics
    app.state.keys = keys
    app.state.imports = ImportGate(settings.imports)
    app.state.settle_heap = settle_heap
    return app
