"""The anchor of the front-end benchmark: the least a Starlette + uvicorn endpoint can do
for kbrec's recommendation API.

    .venv/bin/python -m bench.anchor_app --port 0 --loop uvloop --http httptools

POST /v1/recommendations parses the same JSON body kbrec gets, checks its three fields
(account_id a string, text a non-empty string, top_k an integer in 1..100; 422 in kbrec's
error shape otherwise) and answers five fixed articles in kbrec's response shape, with a
fresh request id. No model, no batcher, no middleware: what kbrec costs above this is its
own front end, so the benchmark can say how close to the framework's floor it gets.
GET /readyz answers 200.

It binds its own socket like `kbrec serve` (port 0 = a free one, TCP_NODELAY on the
listener) and prints `anchor ready on URL (LOOP/HTTP)` once it listens, which
bench/frontend_benchmark.py waits for.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import uuid
from collections.abc import Sequence
from typing import Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

READY_PREFIX: Final = "anchor ready on"
MAX_TOP_K: Final = 100
MODEL_VERSION: Final = 1
ARTICLES: Final = tuple(
    {
        "article_id": f"anchor-article-{i:02d}",
        "title": f"Working with anchor topic {i} and styles",  # kbrec-like lengths
        "score": round(0.9 - i / 25, 6),
    }
    for i in range(5)
)


def invalid(message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "invalid_request", "message": message}}, 422)


def check(body: object) -> str | None:
    """What is wrong with a recommendation body, or None: the three fields kbrec requires."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if not isinstance(body.get("account_id"), str):
        return "'account_id' must be a string"
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        return "'text' must be a non-empty string"
    top_k = body.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        return f"'top_k' must be an integer in 1..{MAX_TOP_K}"
    return None


async def recommend(request: Request) -> JSONResponse:
    try:
        body: Any = json.loads(await request.body())
    except ValueError:
        return invalid("body is not valid JSON")
    problem = check(body)
    if problem is not None:
        return invalid(problem)
    return JSONResponse(
        {"request_id": uuid.uuid4().hex, "model_version": MODEL_VERSION, "articles": ARTICLES}
    )


async def readyz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ready"})


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/recommendations", recommend, methods=["POST"]),
            Route("/readyz", readyz, methods=["GET"]),
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--http", choices=["h11", "httptools"], default="httptools")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    listener = socket.create_server((args.host, args.port))
    # As in `kbrec serve`: asyncio sets TCP_NODELAY only on sockets whose proto is
    # IPPROTO_TCP, and create_server's is 0; without it a keep-alive client waits ~40 ms
    # per response (Nagle + delayed ACK). Accepted connections inherit it.
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        create_app(),
        loop=args.loop,
        http=args.http,
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    # The socket already listens: early connections wait in its backlog, and the
    # benchmark polls /readyz after this line anyway.
    print(f"{READY_PREFIX} http://{args.host}:{port} ({args.loop}/{args.http})", flush=True)
    with listener:
        server.run(sockets=[listener])
    return 0


if __name__ == "__main__":
    sys.exit(main())
