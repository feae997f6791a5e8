"""`kbrec triton start`: the local Triton Inference Server on a model repository.

The server is nvidia-pytriton's CPU tritonserver from `.venv-triton/` (`make
triton-env`), python backend only, so the repository must be converted with
`kbrec convert --backend python`. It runs in the foreground until SIGINT or
SIGTERM, then stops Triton (which drains in-flight requests first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kbrec.errors import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("triton", help="run the local Triton Inference Server")
    commands = parser.add_subparsers(dest="triton_command", required=True, metavar="ACTION")
    start = commands.add_parser(
        "start",
        help="serve a model repository with the local (CPU) Triton until interrupted",
        description="Start tritonserver (nvidia-pytriton's, from --env) on the repository in "
        "explicit model-control mode with one model loaded, wait until the model is ready, "
        "and keep it running until SIGINT or SIGTERM. The repository must be converted with "
        "`kbrec convert --backend python`. Point the front end at it with "
        "`kbrec serve --triton-url grpc://HOST:GRPC_PORT --repository DIR`.",
    )
    start.add_argument("--repository", type=Path, required=True, metavar="DIR")
    start.add_argument("--model", default=None, help="model to load (default: encoder)")
    start.add_argument("--address", default="127.0.0.1", help="address to listen on")
    start.add_argument("--http-port", type=int, default=8000, metavar="N")
    start.add_argument("--grpc-port", type=int, default=8001, metavar="N")
    start.add_argument("--metrics-port", type=int, default=8002, metavar="N")
    start.add_argument(
        "--env",
        type=Path,
        default=None,
        metavar="DIR",
        help="virtualenv with nvidia-pytriton (default: .venv-triton, made by `make triton-env`)",
    )
    start.set_defaults(func=run_start)


def run_start(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from kbrec.repository import MODEL_NAME
    from local_triton.environment import DEFAULT_ENV, TritonEnvError
    from local_triton.launcher import TritonLaunch, TritonLaunchError, TritonPorts, TritonServer

    ports = TritonPorts(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port)
    if len({ports.http, ports.grpc, ports.metrics}) != 3:
        raise CommandError("--http-port, --grpc-port and --metrics-port must differ")
    launch = TritonLaunch(
        repository=args.repository,
        model=args.model or MODEL_NAME,
        ports=ports,
        address=args.address,
        environment=args.env or DEFAULT_ENV,
    )
    server = TritonServer(launch, echo=sys.stderr)
    # Triton runs in its own session, so no signal reaches it but through us. While it
    # starts, SIGTERM unwinds like Ctrl-C: start() stops it on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        server.start()
    except (TritonEnvError, TritonLaunchError) as exc:
        raise CommandError(str(exc)) from exc
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    print(
        f"triton ready: model {launch.model!r} at {launch.grpc_url} "
        f"(HTTP {launch.http_url}, metrics port {ports.metrics}); front end: "
        f"kbrec serve --triton-url {launch.grpc_url} --repository {args.repository}",
        flush=True,
    )
    try:
        # Woken by a signal, or by Triton exiting on its own (watched in a thread).
        watcher = threading.Thread(target=lambda: (server.wait(), stopping.set()), daemon=True)
        watcher.start()
        stopping.wait()
    finally:
        code = server.exited()
        server.stop()
    if code is not None:
        raise CommandError(f"tritonserver exited on its own with status {code}")
    return 0
