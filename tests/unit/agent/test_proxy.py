"""``instance.proxy`` through the real dispatcher: bytes relayed between the server's stream
and a real TCP connection to the container's address (a local server here)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest

from shared import protocol
from tests.support.timing import seconds
from tests.unit.agent.test_streams import Harness

ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    """A server on loopback that answers one request line with ANSWER and closes."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWER)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def on_loopback(h: Harness) -> None:
    h.runtime.containers[h.docker_id]["NetworkSettings"]["IPAddress"] = "127.0.0.1"


async def test_proxy_relays_the_request_and_the_answer_until_the_container_closes(
        http_port: int) -> None:
    h = Harness()
    on_loopback(h)
    request, task = h.start("instance.proxy", port=http_port, scheme="http")
    h.dispatcher.deliver(protocol.StreamData(
        stream_id=request.id, data=base64.b64encode(b"GET / HTTP/1.0\r\n\r\n").decode()))

    await asyncio.wait_for(task, seconds(5))

    assert h.output(request) == ANSWER
    assert h.reply(request).error is None


async def test_proxy_to_a_closed_port_fails_with_a_sentence() -> None:
    h = Harness()
    on_loopback(h)
    idle = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = idle.sockets[0].getsockname()[1]
    idle.close()
    await idle.wait_closed()

    request, task = h.start("instance.proxy", port=port)
    await asyncio.wait_for(task, seconds(5))

    error = h.reply(request).error
    assert error is not None and "could not connect" in error.message


async def test_proxy_to_a_stopped_container_is_refused() -> None:
    h = Harness()
    h.runtime.containers[h.docker_id]["State"]["Running"] = False
    h.runtime.containers[h.docker_id]["State"]["Status"] = "exited"

    request, task = h.start("instance.proxy", port=80)
    await asyncio.wait_for(task, seconds(5))

    error = h.reply(request).error
    assert error is not None and "not running" in error.message
