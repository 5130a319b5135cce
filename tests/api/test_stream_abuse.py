"""What a stream client (``/v1/stream``: logs, execute) sends can never hurt the server: a frame
the stream cannot take closes it with 4400 and the reason, and a client that leaves is no
error."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server.agents import session as session_module
from server.api import subscribe
from server.api.handlers import SERVICES
from server.store import NewRecord
from shared import protocol
from shared.ids import parse_id
from tests.api.agent_double import attach
from tests.conftest import ADMIN
from tests.support.timing import seconds


async def running_container(client: TestClient, host_id: str) -> str:
    """A container record placed on the host, as if the agent had created it."""
    store = client.server.app[SERVICES].store
    number = parse_id(host_id, "1h")
    assert number is not None
    host = await store.get(number)
    assert host is not None
    record = await store.create(NewRecord(
        type="container", kind="container", state="running", project_id=host.project_id,
        data={"hostId": number, "externalId": "d0cker1d", "imageUuid": "docker:busybox"}))
    return f"1i{record.id}"


async def stream_url(client: TestClient, container_id: str, action: str,
                     body: dict[str, Any]) -> str:
    resp = await client.post(f"/v1/containers/{container_id}?action={action}",
                             data=json.dumps(body), headers=ADMIN)
    access = await resp.json()
    assert resp.status == 200 and access["type"] == "hostAccess", access
    return str(access["url"])


async def stream_request(agent: aiohttp.ClientWebSocketResponse) -> protocol.Request:
    """The streaming instruction the server sent the agent."""
    while True:
        message = protocol.parse((await agent.receive(timeout=seconds(5))).data)
        if isinstance(message, protocol.Request):
            return message


async def until_stream_close(agent: aiohttp.ClientWebSocketResponse,
                             stream_id: str) -> list[protocol.Message]:
    """What the agent received for the stream until the server's streamClose."""
    seen: list[protocol.Message] = []
    while True:
        message = protocol.parse((await agent.receive(timeout=seconds(10))).data)
        seen.append(message)
        if isinstance(message, protocol.StreamClose) and message.stream_id == stream_id:
            return seen


def no_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


BAD_CONTROL_FRAMES = [
    ("cols 1e400", '{"resize": {"cols": 1e400, "rows": 30}}', "out of range"),
    ("cols NaN", '{"resize": {"cols": NaN, "rows": 30}}', "not a JSON number"),
    ("deep nesting", '{"resize": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested"),
    ("shallow nesting", '{"resize": ' + "[" * 100 + "]" * 100 + "}", "nested"),
    ("cols a string", '{"resize": {"cols": "80", "rows": 30}}', "between 1 and 65535"),
    ("cols a bool", '{"resize": {"cols": true, "rows": 30}}', "between 1 and 65535"),
    ("cols too large", '{"resize": {"cols": 100000000, "rows": 30}}', "between 1 and 65535"),
    ("cols zero", '{"resize": {"cols": 0, "rows": 30}}', "between 1 and 65535"),
    ("resize a list", '{"resize": [80, 30]}', "control frames are"),
    ("no resize", '{"size": {"cols": 80, "rows": 30}}', "control frames are"),
    ("a lone surrogate", '{"resize": {"cols": 80, "rows": 30, "\\ud800": 1}}', "surrogate"),
    ("not json", '{"resize"', "not valid JSON"),
    ("input not base64", "not base64!", "base64"),
    ("input not ascii", "ééé", "base64"),
]


@pytest.mark.parametrize(("frame", "reason"), [(f, r) for _, f, r in BAD_CONTROL_FRAMES],
                         ids=[case for case, _, _ in BAD_CONTROL_FRAMES])
async def test_a_frame_the_stream_cannot_take_closes_it_with_4400(
        client: TestClient, caplog: pytest.LogCaptureFixture, frame: str,
        reason: str) -> None:
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    url = await stream_url(client, container, "execute", {"command": ["sh"], "tty": True})
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        request = await stream_request(agent)
        assert request.name == "instance.exec"
        await ws.send_str(frame)
        msg = await ws.receive(timeout=seconds(10))
        assert msg.type is WSMsgType.CLOSE, msg
        assert msg.data == protocol.CloseCode.INVALID_MESSAGE and reason in msg.extra, msg
        # The agent is told to stop the stream, and nothing reached it from the bad frame.
        seen = await until_stream_close(agent, request.id)
        assert not [m for m in seen if isinstance(m, protocol.StreamResize | protocol.StreamData)]
        await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id,
                                                          data={"exitCode": 0})))
    assert (await client.get("/v1", headers=ADMIN)).status == 200
    assert not no_errors(caplog)
    await agent.close()


async def test_output_arriving_during_the_close_handshake_does_not_abort_it(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """The server closes a refused stream with 4400 and waits for the client's answer to
    its close, even when the agent's output for the stream arrives in between (the
    output half cannot write to the closing socket; that must not end the handshake)."""
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    url = await stream_url(client, container, "execute", {"command": ["sh"], "tty": True})
    reader, writer = await raw_websocket(url)
    request = await stream_request(agent)
    writer.write(masked_frame(0x1, b'{"resize": [80, 30]}'))
    close = await server_close(reader)
    assert struct.unpack("!H", close[:2])[0] == protocol.CloseCode.INVALID_MESSAGE, close
    # We have not answered the close yet; the agent's output comes meanwhile.
    await agent.send_str(protocol.dump(protocol.StreamData(
        stream_id=request.id, data=base64.b64encode(b"late output").decode())))
    await until_stream_close(agent, request.id)
    await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id,
                                                      data={"exitCode": 0})))
    await answer_close_late(reader, writer, close)
    assert (await client.get("/v1", headers=ADMIN)).status == 200
    assert not no_errors(caplog)
    await agent.close()


async def test_a_good_resize_and_input_reach_the_agent(client: TestClient) -> None:
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    url = await stream_url(client, container, "execute", {"command": ["sh"], "tty": True})
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        request = await stream_request(agent)
        await ws.send_str('{"resize": {"cols": 100, "rows": 30}}')
        await ws.send_str(base64.b64encode(b"ls\n").decode())
        resize = protocol.parse((await agent.receive(timeout=seconds(5))).data)
        data = protocol.parse((await agent.receive(timeout=seconds(5))).data)
        assert resize == protocol.StreamResize(stream_id=request.id, cols=100, rows=30)
        assert isinstance(data, protocol.StreamData) and \
            base64.b64decode(data.data) == b"ls\n"
        await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id,
                                                          data={"exitCode": 3})))
        msg = await ws.receive(timeout=seconds(10))
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 1000, "exit code 3")
    await agent.close()


async def raw_websocket(url: str, headers: dict[str, str] | None = None,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The websocket at ``url`` after the handshake, as bytes: a client that does no more
    than the test says, not even answer a close."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    writer.write((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                  f"Sec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One final client frame, masked as RFC 6455 requires."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, 0x80 | size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", size)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def server_close(reader: asyncio.StreamReader) -> bytes:
    """The payload of the server's close frame, skipping the frames before it."""
    while True:
        head = await asyncio.wait_for(reader.readexactly(2), seconds(10))
        size = head[1] & 0x7F
        if size >= 126:
            extended = await reader.readexactly(2 if size == 126 else 8)
            size = int.from_bytes(extended, "big")
        payload = await reader.readexactly(size)
        if head[0] == 0x88:
            return payload


async def answer_close_late(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            close: bytes) -> None:
    """A second after the server's close, the server still waits for our answer (it has not
    hung up); once we answer, it hangs up."""
    try:
        early = await asyncio.wait_for(reader.read(1), seconds(1))
    except TimeoutError:
        pass
    else:
        pytest.fail(f"the server hung up before we answered its close: {early!r}")
    writer.write(masked_frame(0x8, close[:2]))
    assert await asyncio.wait_for(reader.read(), seconds(10)) == b""
    writer.close()


async def vanishing_client(url: str) -> None:
    """Open the stream's websocket, then drop the connection without a close frame."""
    _, writer = await raw_websocket(url)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()  # a reset: the client is gone at once


@pytest.mark.parametrize(("action", "body"), [
    ("execute", {"command": ["sh"], "tty": False}),
    ("logs", {"follow": True}),
])
async def test_a_client_that_is_already_gone_is_no_error(
        client: TestClient, caplog: pytest.LogCaptureFixture, action: str,
        body: dict[str, Any]) -> None:
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    await vanishing_client(await stream_url(client, container, action, body))
    request = await stream_request(agent)
    # Output for the client that left, then the agent's end of the stream.
    for _ in range(20):
        await agent.send_str(protocol.dump(protocol.StreamData(
            stream_id=request.id, data=base64.b64encode(b"x" * 30_000).decode())))
    await until_stream_close(agent, request.id)
    await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id,
                                                      data={"exitCode": 0})))
    sockets = client.server.app[SERVICES].sockets
    for _ in range(int(seconds(100))):
        if not len(sockets):
            break
        await asyncio.sleep(0.05)
    assert not len(sockets)
    assert (await client.get("/v1", headers=ADMIN)).status == 200
    assert not no_errors(caplog)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.startswith("corral.stream")]
    await agent.close()


# --- /v1/subscribe -------------------------------------------------------------------------

async def next_sequence(ws: aiohttp.ClientWebSocketResponse) -> int:
    msg = await ws.receive(timeout=seconds(10))
    assert msg.type is WSMsgType.TEXT, msg
    return int(json.loads(msg.data)["sequence"])


@pytest.mark.parametrize("since", ["%C2%B2", "%D9%A3", "1%EF%BC%91"])
async def test_a_since_of_digits_outside_ascii_is_a_422(client: TestClient, since: str) -> None:
    resp = await client.get(f"/v1/subscribe?since={since}", headers=ADMIN)
    body = await resp.json()
    assert (resp.status, body["fieldName"]) == (422, "since"), body


async def test_frames_from_a_subscriber_are_dropped_and_big_ones_refused(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    ws = await client.ws_connect("/v1/subscribe", headers=ADMIN)
    await ws.send_str('{"resize": {"cols": 1e400}}')
    await ws.send_str("[" * 50_000)
    await ws.send_bytes(b"\xff" * 1000)
    await client.post("/v1/apikeys", data='{"name": "still-served"}', headers=ADMIN)
    assert await next_sequence(ws) > 0
    await ws.send_str("x" * (subscribe.MAX_CLIENT_FRAME + 1))
    while (msg := await ws.receive(timeout=seconds(10))).type is WSMsgType.TEXT:
        pass  # changes sent before the server read the frame
    assert msg.type is WSMsgType.CLOSE and msg.data == 1009, msg
    assert not no_errors(caplog)


async def test_a_subscriber_frame_too_big_is_refused_with_a_close_handshake(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    """1009 and a reason, and the server waits for the client's answer: it read the whole
    frame, so no unread bytes turn its hang-up into a reset that can take the close frame
    with it."""
    reader, writer = await raw_websocket(str(client.make_url("/v1/subscribe")), ADMIN)
    writer.write(masked_frame(0x1, b"[" * 200_000))
    close = await server_close(reader)
    assert struct.unpack("!H", close[:2])[0] == protocol.CloseCode.MESSAGE_TOO_BIG, close
    assert f"at most {subscribe.MAX_CLIENT_FRAME} bytes" in close[2:].decode(), close
    await answer_close_late(reader, writer, close)
    assert not no_errors(caplog)


def host_blob(event: dict[str, Any]) -> tuple[int, str]:
    """The sequence of a host change and the first characters of its info blob."""
    assert event["resourceType"] == "host", event
    return int(event["sequence"]), str(event["data"]["resource"]["info"]["blob"][:4])


async def test_a_subscriber_that_stops_reading_is_closed_and_resumes_where_it_was(
        client: TestClient, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscribe, "OUTBOX_BYTES", 64 * 1024)
    monkeypatch.setattr(subscribe, "STALL_SECONDS", 0.5)
    agent, welcome = await attach(client)
    store = client.server.app[SERVICES].store
    number = parse_id(welcome.host_id, "1h")
    assert number is not None
    ws = await client.ws_connect("/v1/subscribe", headers=ADMIN)

    def warned() -> bool:
        return any("read nothing for" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING)

    # Host changes of ~200 KiB each, more than the socket buffers hold, nobody reading.
    written = 0
    for written in range(1, 200):
        await store.update(number, {}, {"info": {"blob": f"{written:04}" + "z" * 200_000}})
        if warned():
            break
    for _ in range(int(seconds(200))):
        if warned():
            break
        await asyncio.sleep(0.05)
    assert warned()
    received: list[tuple[int, str]] = []
    while (msg := await ws.receive(timeout=seconds(10))).type is WSMsgType.TEXT:
        received.append(host_blob(json.loads(msg.data)))
    assert msg.type is WSMsgType.CLOSE and msg.data == protocol.CloseCode.OVERLOADED, msg
    since = int(msg.extra.rsplit("since=", 1)[1])
    assert received and since == received[-1][0]
    # Resuming from there misses nothing and repeats nothing.
    await store.update(number, {}, {"info": {"blob": "last"}})
    again = await client.ws_connect(f"/v1/subscribe?since={since}", headers=ADMIN)
    resumed = [host_blob(json.loads((await again.receive(timeout=seconds(10))).data))]
    while resumed[-1][1] != "last":
        resumed.append(host_blob(json.loads((await again.receive(timeout=seconds(10))).data)))
    blobs = [blob for _, blob in received + resumed]
    assert blobs == [f"{n:04}" for n in range(1, written + 1)] + ["last"]
    assert not no_errors(caplog)
    await again.close()
    await agent.close()


async def test_input_faster_than_the_agent_reads_waits_instead_of_filling_the_server(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    container = await running_container(client, welcome.host_id)
    url = await stream_url(client, container, "execute", {"command": ["cat"], "tty": False})
    hub = client.server.app[SERVICES].hub
    number = parse_id(welcome.host_id, "1h")
    assert number is not None
    chunk = b"i" * (256 * 1024 - 16)
    frames = 240  # 60 MiB of input: more than the send queue and every socket buffer hold
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        request = await stream_request(agent)
        sender = asyncio.create_task(_send_all(ws, chunk, frames))
        session = hub._sessions[number]  # the agent's session, to watch its send queue
        for _ in range(int(seconds(600))):
            if session._outbox_bytes > session_module.SEND_QUEUE_BYTES // 2:
                break
            await asyncio.sleep(0.05)
        # The queue is as full as input may make it, the agent is still connected, and the
        # client waits for room.
        assert session._outbox_bytes <= session_module.SEND_QUEUE_BYTES
        assert hub.is_live(number) and not sender.done()
        received = 0
        while received < len(chunk) * frames:
            message = protocol.parse((await agent.receive(timeout=seconds(10))).data)
            assert isinstance(message, protocol.StreamData) and message.stream_id == request.id
            received += len(base64.b64decode(message.data))
        await sender
        await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id,
                                                          data={"exitCode": 0})))
        msg = await ws.receive(timeout=seconds(10))
        assert (msg.type, msg.extra) == (WSMsgType.CLOSE, "exit code 0")
    await agent.close()


async def _send_all(ws: aiohttp.ClientWebSocketResponse, chunk: bytes, frames: int) -> None:
    for _ in range(frames):
        await ws.send_bytes(chunk)
