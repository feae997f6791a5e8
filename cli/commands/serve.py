"""`kbrec serve`: the recommendation service over HTTP (uvicorn + Starlette).

Every setting is a flag and a `KBREC_*` environment variable (flags win); the
flags are generated from `server.settings.KNOBS`, so they cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses

from kbrec.errors import CommandError
from server.settings import KNOBS, SETTING_HELP, Settings, env_name, knob_parser


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve article recommendations over HTTP",
        description="Load the model version to serve (the one the article store recorded "
        "as active, else the newest valid one), open the store, build the ranking index "
        "and serve the HTTP API (see /openapi.json). New versions published into the "
        "repository are validated, their articles re-embedded in the background, and "
        "switched in without a failed request (rollback: POST /v1/models/N/activate). "
        "Every flag can also be set as the KBREC_<NAME> environment variable; flags win.",
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
    import socket

    import uvicorn

    from kbrec.repository import list_versions, model_dir
    from server.app import create_app

    settings = settings_from_args(args)
    if not list_versions(settings.repository):
        raise CommandError(
            f"no model version in {model_dir(settings.repository)}: "
            "publish one with `kbrec convert` (or `make model`)"
        )
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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        log_config=None,  # keep kbrec's logging setup
        access_log=http.access_log,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    try:
        with listener:
            server.run(sockets=[listener])
    except SystemExit as exc:  # uvicorn exits this way when the lifespan startup fails
        if server.started:
            raise
        failure = app.state.service.failure or "see the log above"
        raise CommandError(f"startup failed: {failure}") from exc
    return 0
