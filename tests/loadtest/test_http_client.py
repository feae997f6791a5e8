"""The raw HTTP client: only the URL given, no redirects, every failure counted by kind,
and a refusal's Retry-After passed on."""

from __future__ import annotations

import asyncio
import datetime
import email.utils
from collections.abc import Awaitable, Callable

import pytest

from loadtest.http_client import HttpTarget, _retry_after_s, build_request, parse_http_url
from loadtest.stub_server import stub_thread
from loadtest.target import CONNECTION_ERROR, PROTOCOL_ERROR, TIMEOUT, TargetError


@pytest.mark.parametrize(
    "url", ["https://127.0.0.1:8000", "127.0.0.1:8000", "http://x:1/?q=1", "http://x:port"]
)
def test_only_plain_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(TargetError):
        parse_http_url(url)


def test_a_url_path_prefixes_every_request() -> None:
    endpoint = parse_http_url("http://127.0.0.1:8080/kbrec/")
    raw = build_request(endpoint, "POST", "/v1/recommendations", b'{"a":1}')
    assert raw.startswith(b"POST /kbrec/v1/recommendations HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert raw.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')


def send_all(url: str, count: int, timeout_s: float = 2.0) -> list[str | None]:
    """Send `count` requests at once through an HttpTarget; their outcomes in order."""
    endpoint = parse_http_url(url)
    request = build_request(endpoint, "POST", "/v1/recommendations", b"{}")

    async def run() -> list[str | None]:
        target = HttpTarget(endpoint, [request], max_in_flight=count, timeout_s=timeout_s)
        outcomes: list[asyncio.Future[str | None]] = []
        for _ in range(count):
            future = asyncio.get_running_loop().create_future()
            assert target.submit(0, lambda _i, _t, error, _r, f=future: f.set_result(error))
            outcomes.append(future)
        try:
            return list(await asyncio.gather(*outcomes))
        finally:
            await target.close()

    return asyncio.run(run())


def test_answers_are_counted_by_status_and_redirects_are_not_followed() -> None:
    with stub_thread(status=302) as stub:
        assert send_all(stub.url, 3) == ["HTTP 302"] * 3
        assert len(stub.arrivals()) == 3  # nothing went anywhere else
    with stub_thread(status=503) as stub:
        assert send_all(stub.url, 2) == ["HTTP 503"] * 2
    with stub_thread() as stub:
        assert send_all(stub.url, 2) == [None, None]


def test_the_pre_flight_check_names_the_failure() -> None:
    async def check(url: str) -> None:
        target = HttpTarget(parse_http_url(url), [b"GET / HTTP/1.1\r\n\r\n"], 1, 2.0)
        try:
            await target.check()
        finally:
            await target.close()

    with stub_thread(status=404) as stub, pytest.raises(TargetError, match="HTTP 404"):
        asyncio.run(check(stub.url))


def test_a_slow_answer_is_a_timeout() -> None:
    with stub_thread(delay_s=1.0) as stub:
        assert send_all(stub.url, 2, timeout_s=0.2) == [TIMEOUT, TIMEOUT]


def test_a_closed_port_is_a_connection_error() -> None:
    with stub_thread() as stub:
        url = stub.url
    assert send_all(url, 2) == [CONNECTION_ERROR, CONNECTION_ERROR]


def raw_server(answer: bytes) -> Callable[[], Awaitable[tuple[asyncio.Server, str]]]:
    """A server that answers every connection's first bytes with `answer`, then hangs up."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    async def start() -> tuple[asyncio.Server, str]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    return start


def outcome_of_one_request(answer: bytes) -> tuple[str | None, float]:
    """(error, Retry-After seconds) the target reports for one request `answer`ed so."""

    async def run() -> tuple[str | None, float]:
        server, url = await raw_server(answer)()
        endpoint = parse_http_url(url)
        target = HttpTarget(endpoint, [build_request(endpoint, "POST", "/", b"{}")], 1, 2.0)
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[tuple[str | None, float]] = loop.create_future()
        target.submit(0, lambda _i, _t, error, wait: outcome.set_result((error, wait)))
        try:
            return await outcome
        finally:
            await target.close()
            server.close()

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"garbage\r\n\r\n", PROTOCOL_ERROR),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            PROTOCOL_ERROR,
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", CONNECTION_ERROR),  # cut short
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}", None),
    ],
    ids=["not-http", "chunked", "truncated", "connection-close"],
)
def test_malformed_answers_are_errors(answer: bytes, expected: str | None) -> None:
    error, _ = outcome_of_one_request(answer)
    assert error == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 503 X\r\nretry-after: 3", ("HTTP 503", 3.0)),
        (b"HTTP/1.1 429 X\r\nRetry-After:  7 ", ("HTTP 429", 7.0)),
        (b"HTTP/1.1 503 X\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT", ("HTTP 503", 0.0)),
        (b"HTTP/1.1 503 X\r\nretry-after: soon", ("HTTP 503", 0.0)),
        (b"HTTP/1.1 503 X", ("HTTP 503", 0.0)),
        (b"HTTP/1.1 200 OK\r\nretry-after: 3", (None, 0.0)),  # only refusals ask for a wait
    ],
    ids=["503-seconds", "429-seconds", "date-past", "unreadable", "absent", "not-a-refusal"],
)
def test_a_refusal_passes_on_its_retry_after(
    head: bytes, expected: tuple[str | None, float]
) -> None:
    assert outcome_of_one_request(head + b"\r\ncontent-length: 2\r\n\r\n{}") == expected


def test_a_retry_after_date_counts_from_now() -> None:
    soon = email.utils.format_datetime(
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30), usegmt=True
    )
    assert 25 <= _retry_after_s(f"http/1.1 503 x\r\nretry-after: {soon}".lower().encode()) <= 30
