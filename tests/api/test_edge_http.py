"""The HTTP server under the API (server/edge.py) on a real socket: long request heads,
malformed ones and slow clients get Rancher's JSON error or are cut, while others are served,
and none of it logs an ERROR."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from server.app import create_app
from server.config import Settings
from server.edge import EdgeSite, handler_options
from tests.conftest import ADMIN, make_settings
from tests.support.processes import ServerProcess, free_port
from tests.support.timing import seconds

HEADER_TIMEOUT = 1.0


@dataclass
class Edge:
    host: str
    port: int

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"


@pytest.fixture
def edge_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", header_timeout=seconds(HEADER_TIMEOUT))


@pytest.fixture
async def edge(edge_settings: Settings) -> AsyncIterator[Edge]:
    """The app served as ``corral-server`` serves it, on a free localhost port."""
    runner = web.AppRunner(create_app(edge_settings), shutdown_timeout=1)
    await runner.setup()
    site = EdgeSite(runner, "127.0.0.1", 0, handler_options(edge_settings))
    try:
        await site.start()
        yield Edge("127.0.0.1", site.port)
    finally:
        await runner.cleanup()


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def exchange(edge: Edge, raw: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``raw`` on a fresh connection; the status, headers and JSON body of the answer."""
    reader, writer = await asyncio.open_connection(edge.host, edge.port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), seconds(10))
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def request_head(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_rancher_error(status: int, headers: dict[str, str], body: Any, expected: int) -> None:
    assert status == expected
    assert body["type"] == "error" and body["status"] == expected and body["code"]
    assert headers["Content-Type"].startswith("application/json")
    assert headers["X-API-Schemas"].startswith("http://")


# 6. long and malformed request heads


async def test_a_16_kib_query_string_is_served(edge: Edge,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.get(f"{edge.origin}/v1/hosts?name={'a' * 16 * 1024}") as resp:
            assert resp.status == 200
            assert (await resp.json())["type"] == "collection"
        async with session.get(f"{edge.origin}/v1/hosts",
                               headers={"X-Padding": "p" * 16 * 1024}) as resp:
            assert resp.status == 200
    no_errors_logged(caplog)


async def test_a_request_line_over_the_limit_is_414_json(
        edge: Edge, edge_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    path = "/v1/hosts?name=" + "a" * (edge_settings.max_request_line_bytes + 1)
    status, headers, body = await exchange(edge, request_head(path))
    assert_rancher_error(status, headers, body, 414)
    no_errors_logged(caplog)


async def test_a_header_field_over_the_limit_is_431_json(
        edge: Edge, edge_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    padding = "X-Padding: " + "p" * (edge_settings.max_header_field_bytes + 1)
    status, headers, body = await exchange(edge, request_head("/v1/hosts", padding))
    assert_rancher_error(status, headers, body, 431)
    no_errors_logged(caplog)


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/hosts HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    b"GET /v1/hosts HTTP/1.1\r\nHost: localhost\r\nX-A: a\x00b\r\n\r\n",
    b"GET /v1/ho\x7fsts HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET http://[::1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"GET /v1 HTTP/9.9\r\nHost: localhost\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
])
async def test_a_malformed_request_head_is_400_json(edge: Edge, raw: bytes,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    status, headers, body = await exchange(edge, raw)
    assert_rancher_error(status, headers, body, 400)
    no_errors_logged(caplog)


async def test_a_body_that_cannot_be_decoded_is_400_json(
        edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    raw = ("POST /v1/apikeys HTTP/1.1\r\nHost: localhost\r\n"
           f"Authorization: {ADMIN['Authorization']}\r\nContent-Encoding: gzip\r\n"
           "Content-Length: 8\r\n\r\nnot-gzip").encode()
    status, headers, body = await exchange(edge, raw)
    assert_rancher_error(status, headers, body, 400)
    no_errors_logged(caplog)


# 7. slow clients


async def test_slow_clients_are_cut_after_the_header_timeout_while_others_are_served(
        edge: Edge, caplog: pytest.LogCaptureFixture) -> None:
    slow = []
    for n in range(40):
        reader, writer = await asyncio.open_connection(edge.host, edge.port)
        if n % 2:   # a request head that never ends
            writer.write(b"GET /v1/hosts HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        else:       # a websocket upgrade that never completes its head
            writer.write(b"GET /v1/subscribe?eventNames=resource.change HTTP/1.1\r\n"
                         b"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n")
        await writer.drain()
        slow.append((reader, writer))
    async with aiohttp.ClientSession(headers=ADMIN) as session, \
            session.get(f"{edge.origin}/v1/hosts") as resp:
        assert resp.status == 200
    for reader, writer in slow:
        # The server closes each one: the read ends (no answer: a head never came).
        assert await asyncio.wait_for(reader.read(), seconds(20)) == b""
        writer.close()
    no_errors_logged(caplog)


async def test_a_trickling_client_is_cut_although_it_keeps_sending(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection(edge.host, edge.port)
    writer.write(b"GET /v1/hosts HTTP/1.1\r\nHost: localhost\r\n")

    async def trickle() -> None:
        while True:
            writer.write(b"X-Drip: 1\r\n")
            await writer.drain()
            await asyncio.sleep(seconds(HEADER_TIMEOUT) / 10)

    dripping = asyncio.create_task(trickle())
    try:
        assert await asyncio.wait_for(reader.read(), seconds(20)) == b""
    finally:
        dripping.cancel()
        writer.close()


async def test_a_client_that_sends_its_head_in_time_is_answered(edge: Edge) -> None:
    reader, writer = await asyncio.open_connection(edge.host, edge.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        await writer.drain()
        writer.write(b"Connection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(), seconds(10))
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 200")


# the real corral-server process


def test_corral_server_answers_bad_heads_in_json_and_stops_cleanly(tmp_path: Path) -> None:
    """The CLI serves on the edge: a 16 KiB query works, a too-long or malformed head gets
    Rancher's JSON, nothing is logged at ERROR, and SIGTERM stops it with status 0."""
    proc = ServerProcess(data_dir=tmp_path / "server-data", port=free_port(),
                         extra_env={"CORRAL_HEADER_TIMEOUT": str(seconds(HEADER_TIMEOUT))})
    proc.start()
    try:
        assert proc.api("GET", f"/hosts?name={'a' * 16 * 1024}").status_code == 200
        long = proc.api("GET", f"/hosts?name={'a' * 64 * 1024}")
        assert long.status_code == 414 and long.json()["type"] == "error"
        with socket.create_connection((proc.host, proc.port), timeout=seconds(10)) as sock:
            sock.sendall(b"GARBAGE\r\n\r\n")
            answer = sock.makefile("rb").read()
        assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")) and b'"type":"error"' in answer
        with socket.create_connection((proc.host, proc.port), timeout=seconds(20)) as sock:
            sock.sendall(b"GET /v1/hosts HTTP/1.1\r\nHost: x\r\n")
            assert sock.makefile("rb").read() == b""     # cut by the header timeout
    finally:
        assert proc.stop() == 0
    log = proc.log()
    assert " ERROR " not in log and "Traceback" not in log, log


# settings


def test_edge_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = Settings.from_sources({"data_dir": str(tmp_path)}, {
        "CORRAL_HEADER_TIMEOUT": "2.5", "CORRAL_MAX_REQUEST_LINE": "65536",
        "CORRAL_MAX_HEADER_FIELD": "32768"})
    assert (settings.header_timeout, settings.max_request_line_bytes,
            settings.max_header_field_bytes) == (2.5, 65536, 32768)
    assert handler_options(settings) == {"keepalive_timeout": 2.5, "max_line_size": 65536,
                                         "max_field_size": 32768}
    defaults = Settings.from_sources({"data_dir": str(tmp_path)}, {})
    assert defaults.header_timeout == 10.0
    assert min(defaults.max_request_line_bytes, defaults.max_header_field_bytes) > 16 * 1024


@pytest.mark.parametrize("env", [{"CORRAL_HEADER_TIMEOUT": "0"},
                                 {"CORRAL_HEADER_TIMEOUT": "soon"},
                                 {"CORRAL_MAX_REQUEST_LINE": "10"}])
def test_bad_edge_settings_are_refused(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Settings.from_sources({"data_dir": str(tmp_path)}, env)
