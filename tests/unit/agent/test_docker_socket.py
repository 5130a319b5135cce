"""``host.dockersocket`` through the real dispatcher: bytes relayed between the server's stream
and a real connection to the engine's unix socket (a local server standing in for Docker)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared import protocol
from shared.errors import ErrorCode
from tests.support.timing import seconds
from tests.unit.agent.test_streams import Harness

REQUEST = b"GET /version HTTP/1.1\r\nHost: docker\r\n\r\n"
ANSWER = b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"Version":"24.0.7"}'


@pytest.fixture
async def engine_socket(tmp_path: Path) -> AsyncIterator[str]:
    """A unix socket answering each request head with ANSWER, keeping the connection open
    (as Docker does, HTTP/1.1) until the client closes it."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(ANSWER)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    path = str(tmp_path / "docker.sock")
    server = await asyncio.start_unix_server(answer, path)
    async with server:
        yield path


class Watched(Harness):
    """The harness, with a way to wait for what the stream sends."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = asyncio.Condition()

    async def send(self, message: protocol.AgentMessage) -> None:
        await super().send(message)
        async with self.changed:
            self.changed.notify_all()

    def start_socket(self) -> tuple[protocol.Request, asyncio.Task[None]]:
        request = protocol.Request(id="r-docker", name="host.dockersocket",
                                   resource_type="host", resource_id="1h1", data={},
                                   timeout_ms=1)
        self.dispatcher.prepare(request)
        return request, asyncio.create_task(self.dispatcher.handle(request, self.send))

    async def until_output(self, request: protocol.Request, expected: bytes) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(
                lambda: self.output(request) == expected), seconds(5))


def data(request: protocol.Request, chunk: bytes) -> protocol.StreamData:
    return protocol.StreamData(stream_id=request.id, data=base64.b64encode(chunk).decode())


async def test_requests_reach_the_engine_and_its_answers_come_back_until_the_server_closes(
        engine_socket: str) -> None:
    h = Watched()
    h.runtime.engine_socket = engine_socket
    request, task = h.start_socket()
    h.dispatcher.deliver(data(request, REQUEST))
    await h.until_output(request, ANSWER)
    h.dispatcher.deliver(data(request, REQUEST))  # the same connection, kept alive
    await h.until_output(request, ANSWER * 2)
    assert not task.done()  # streams have no time limit

    h.dispatcher.deliver(protocol.StreamClose(stream_id=request.id))
    await asyncio.wait_for(task, seconds(5))

    assert h.reply(request).error is None and h.sent[-1] == h.reply(request)


async def test_the_stream_ends_when_the_engine_closes_the_connection(tmp_path: Path) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        writer.close()

    path = str(tmp_path / "docker.sock")
    async with await asyncio.start_unix_server(hang_up, path):
        h = Watched()
        h.runtime.engine_socket = path
        request, task = h.start_socket()
        h.dispatcher.deliver(data(request, REQUEST))
        await asyncio.wait_for(task, seconds(5))

    assert h.output(request).startswith(b"HTTP/1.1 400 Bad Request")
    assert h.reply(request).error is None


async def test_an_engine_socket_that_is_not_there_is_runtime_unavailable(
        tmp_path: Path) -> None:
    h = Watched()
    h.runtime.engine_socket = str(tmp_path / "missing.sock")
    request, task = h.start_socket()
    await asyncio.wait_for(task, seconds(5))

    error = h.reply(request).error
    assert error is not None and error.code is ErrorCode.RUNTIME_UNAVAILABLE
    assert "could not connect to the Docker engine at unix://" in error.message
