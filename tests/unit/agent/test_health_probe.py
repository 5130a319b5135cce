"""The health probe against real servers on 127.0.0.1: TCP connects, HTTP status lines (2xx
and 3xx up, others down as ``HTTP <code>``), a server that never answers, a closed port, and
answers that are not HTTP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from agent.health.probe import (
    READ_LIMIT,
    ProbeResult,
    judge_status_line,
    probe,
    request_bytes,
)
from shared.health import HealthCheck
from tests.support.timing import seconds

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(serve: Serve) -> AsyncIterator[int]:
    """A server on 127.0.0.1 running ``serve`` for each connection; yields its port."""
    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()
        await srv.wait_closed()


def answering(answer: bytes, seen: list[bytes] | None = None) -> Serve:
    """Reads the request up to its blank line, answers ``answer`` and closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            if seen is not None:
                seen.append(request)
            writer.write(answer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the prober hung up first: its verdict was in
        finally:
            writer.close()

    return serve


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, never answers; ends when the prober hangs up."""
    await reader.read()
    writer.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def http(port: int, line: str = "GET /healthz HTTP/1.0", timeout_ms: int = 2000) -> HealthCheck:
    return HealthCheck("c1", "127.0.0.1", port, request_line=line,
                       response_timeout_ms=int(seconds(timeout_ms / 1000) * 1000))


def tcp(port: int) -> HealthCheck:
    return HealthCheck("c1", "127.0.0.1", port)


async def test_an_http_200_is_up() -> None:
    async with server(answering(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")) as port:
        assert await probe(http(port)) == ProbeResult(True)


async def test_a_redirect_is_up_as_in_rancher() -> None:
    async with server(answering(b"HTTP/1.1 302 Found\r\nLocation: /\r\n\r\n")) as port:
        assert await probe(http(port)) == ProbeResult(True)


async def test_an_http_404_is_down_saying_its_code() -> None:
    async with server(answering(b"HTTP/1.0 404 Not Found\r\n\r\n")) as port:
        assert await probe(http(port)) == ProbeResult(False, "HTTP 404")


async def test_an_http_500_is_down_saying_its_code() -> None:
    async with server(answering(b"HTTP/1.1 503 Service Unavailable\r\n\r\n")) as port:
        assert await probe(http(port)) == ProbeResult(False, "HTTP 503")


async def test_a_server_that_accepts_and_never_answers_times_out() -> None:
    async with server(silent) as port:
        assert await probe(http(port, timeout_ms=100)) == ProbeResult(False, "timed out")


async def test_a_closed_port_is_connection_refused() -> None:
    port = closed_port()
    assert await probe(http(port)) == ProbeResult(False, "connection refused")
    assert await probe(tcp(port)) == ProbeResult(False, "connection refused")


async def test_a_tcp_check_is_up_when_the_port_accepts_even_if_nothing_is_said() -> None:
    async with server(silent) as port:
        assert await probe(tcp(port)) == ProbeResult(True)


async def test_a_server_that_hangs_up_without_answering_is_down() -> None:
    async with server(hang_up) as port:
        result = await probe(http(port))
    assert not result.ok
    assert result.message in {"connection closed before the status line", "connection reset",
                              "broken pipe"}


async def test_an_answer_that_is_not_http_is_down() -> None:
    async with server(answering(b"SSH-2.0-OpenSSH_9.6\r\n")) as port:
        assert await probe(http(port)) == ProbeResult(False,
                                                      "the answer is not an HTTP status line")


async def test_a_status_line_longer_than_the_read_limit_is_not_read_to_its_end() -> None:
    async with server(answering(b"HTTP/1.0 200 " + b"x" * (READ_LIMIT * 4))) as port:
        assert await probe(http(port)) == ProbeResult(False,
                                                      "the answer is not an HTTP status line")


async def test_http_1_1_requests_carry_a_host_header_and_1_0_ones_do_not() -> None:
    seen: list[bytes] = []
    async with server(answering(b"HTTP/1.1 200 OK\r\n\r\n", seen)) as port:
        assert (await probe(http(port, "GET /ping HTTP/1.1"))).ok
        assert (await probe(http(port, "HEAD / HTTP/1.0"))).ok
    assert seen == [f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Connection: close\r\n\r\n".encode(), b"HEAD / HTTP/1.0\r\n\r\n"]


def test_a_request_line_without_a_version_is_sent_as_it_is() -> None:
    assert request_bytes(HealthCheck("c", "10.42.0.2", 80, request_line="GET /")) == \
        b"GET /\r\n\r\n"


@pytest.mark.parametrize(("line", "expected"), [
    (b"HTTP/1.1 200 OK\r\n", ProbeResult(True)),
    (b"HTTP/1.0 204\r\n", ProbeResult(True)),
    (b"HTTP/1.1 399 Odd\n", ProbeResult(True)),
    (b"HTTP/2 200\r\n", ProbeResult(True)),
    (b"HTTP/1.1 199 Early\r\n", ProbeResult(False, "HTTP 199")),
    (b"HTTP/1.1 400 Bad Request\r\n", ProbeResult(False, "HTTP 400")),
    (b"HTTP/1.1 200", ProbeResult(True)),  # the server closed right after the code
    (b"", ProbeResult(False, "connection closed before the status line")),
    (b"HTTP/1.1 2000 OK\r\n", ProbeResult(False, "the answer is not an HTTP status line")),
    (b"http/1.1 200 OK\r\n", ProbeResult(False, "the answer is not an HTTP status line")),
    (b"<html>\r\n", ProbeResult(False, "the answer is not an HTTP status line")),
])
def test_status_lines_are_judged_by_their_code(line: bytes, expected: ProbeResult) -> None:
    assert judge_status_line(line) == expected
