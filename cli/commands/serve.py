"""`kbrec serve`: the recommendation service over HTTP (uvicorn + Starlette).

Every setting is a flag and a `KBREC_*` environment variable (flags win); the
flags are generated from `server.settings.KNOBS`, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import socket
from typing import TYPE_CHECKING

from kbrec.errors import CommandError
from server.settings import KNOBS, SETTING_HELP, Settings, env_name, knob_parser

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve article recommendations over HTTP",
        description="Load the model version to serve (the one the article store recorded "
        "as active, else the newest valid one), open the store, build the ranking index "
        "and serve the HTTP API (see /openapi.json). New versions published into the "
        "repository are validated, their articles re-embedded in the background, and "
        "switched in without a failed request (rollback: POST /v1/models/N/activate). "
        "Every flag can also be set as the KBREC_<NAME> environment variable; flags win. "
        "Authentication is on when an admin token is set: --admin-token-file, or the "
        "variable KBREC_ADMIN_TOKEN (no flag: a command line is visible to every user of "
        "the host); without one kbrec serves only a loopback address.",
    )
    for knob in KNOBS.values():
        flag = "--" + knob.name.replace("_", "-")
        help_text = (
            f"{SETTING_HELP[knob.name]} (default: {knob.default}; env {env_name(knob.name)})"
        )
        if isinstance(knob.default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, type=knob_parser(knob), default=None, help=help_text)
    parser.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> Settings:
    import os

    from server.settings import settings_from

    flags = {name: getattr(args, name) for name in KNOBS}
    try:
        return settings_from(os.environ, flags)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    from kbrec.repository import list_versions, model_dir

    settings = settings_from_args(args)
    check_access(settings)
    if not list_versions(settings.repository):
        raise CommandError(
            f"no model version in {model_dir(settings.repository)}: "
            "publish one with `kbrec convert` (or `make model`)"
        )
    check_devices(settings)
    http = settings.http
    family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
    try:
        # Bound here, not by uvicorn, so --port 0 can log the port it got.
        listener = socket.create_server((http.host, http.port), family=family)
    except OSError as exc:
        raise CommandError(f"cannot listen on {http.host}:{http.port}: {exc}") from exc
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # create_server's is 0: without this, a keep-alive client waits ~40 ms per response
    # (Nagle + delayed ACK). Accepted connections inherit it from the listener.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    http = dataclasses.replace(http, port=listener.getsockname()[1])
    settings = dataclasses.replace(settings, http=http)
    with listener:
        if http.workers > 1:
            return serve_workers(settings, listener, verbose=args.verbose)
        return serve_one(settings, listener)


def check_access(settings: Settings) -> None:
    """Before binding: an exposed address without an admin token, or an unusable token,
    is a one-line error (each worker's app checks again)."""
    from server.errors import StartupError
    from server.http.auth import load_auth

    try:
        load_auth(settings, os.environ)
    except StartupError as exc:
        raise CommandError(str(exc)) from exc


def check_devices(settings: Settings) -> None:
    """A GPU that was asked for and is missing: one line, before anything starts."""
    from server.inference.array_modules import NoGpu, gpu_arrays
    from server.inference.backends.execution_providers import MissingProvider, require_device

    try:
        if not settings.inference.triton_url:
            require_device(settings.inference.device)
        gpu_arrays(settings.inference.ranking_device)
    except (MissingProvider, NoGpu) as exc:
        raise CommandError(str(exc)) from exc


def serve_one(settings: Settings, listener: socket.socket) -> int:
    import uvicorn

    from server.app import create_app

    app = create_app(settings, settle_heap=True)
    server = uvicorn.Server(uvicorn_config(app, settings))
    try:
        server.run(sockets=[listener])
    except SystemExit as exc:  # uvicorn exits this way when the lifespan startup fails
        if server.started:
            raise
        failure = app.state.service.failure or "see the log above"
        raise CommandError(f"startup failed: {failure}") from exc
    return 0


def serve_workers(settings: Settings, listener: socket.socket, *, verbose: bool) -> int:
    """`settings.http.workers` spawned processes accept on the one listening socket
    (the kernel spreads connections); uvicorn's supervisor restarts a worker that dies
    and stops everything if one fails to start."""
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    # The workers are the parallelism: a tokenizer thread pool per worker would only
    # make them fight over the cores (the spawned workers inherit the environment).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # A factory the spawned worker can unpickle: the settings travel, not an app.
    factory = functools.partial(worker_app, settings, verbose)
    config = uvicorn_config(factory, settings, factory=True, workers=settings.http.workers)
    supervisor = Multiprocess(config, sockets=[listener])
    supervisor.run()
    failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
    if failed:
        raise CommandError(f"worker {failed[0]} failed to start: see the log above")
    return 0


def worker_app(settings: Settings, verbose: bool) -> Starlette:
    """The app of one worker process (runs in the worker)."""
    from cli.logs import configure_logging
    from server.app import create_app

    configure_logging(verbose)
    return create_app(settings, settle_heap=True)


def uvicorn_config(app: object, settings: Settings, **options: object) -> uvicorn.Config:
    import uvicorn

    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        log_config=None,  # keep kbrec's logging setup
        access_log=settings.http.access_log,
        # Beyond this many connections and requests uvicorn answers 503 at once, so an
        # overload cannot grow the process's sockets and tasks without bound.
        limit_concurrency=settings.http.limit_concurrency or None,
        timeout_graceful_shutdown=10,
        **options,  # type: ignore[arg-type]
    )
