"""What an agent sends can never hurt the server: every frame it cannot take closes the
session with a close code and a reason, and what one agent makes the server hold is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import psutil
import pytest
import requests
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient

from server.agents import session as agent_session
from server.agents.session import AgentSession, Report
from shared import protocol
from shared.protocol import CloseCode
from tests.api.agent_double import FACTS, attach, connect, register
from tests.conftest import ADMIN, basic
from tests.support.processes import ServerProcess
from tests.support.timing import seconds

MIB = 1024 * 1024


def hello_text(facts: str) -> str:
    return '{"type":"hello","agentVersion":"x","protocol":1,"facts":' + facts + "}"


async def closing(ws: aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage:
    """The close frame the server sent, skipping anything it sent before."""
    while True:
        msg = await ws.receive(timeout=seconds(10))
        if msg.type is not WSMsgType.TEXT:
            return msg


INVALID_HELLOS = [
    ("a lone surrogate hostname", hello_text('{"hostname":"\\ud800"}'), "lone surrogate"),
    ("a lone surrogate key", hello_text('{"hostname":"h","labels":{"\\udfff":"x"}}'),
     "lone surrogate"),
    ("NaN", hello_text('{"hostname":"h","info":{"memoryInfo":{"memTotal":NaN}}}'),
     "not a JSON number"),
    ("1e400", hello_text('{"hostname":"h","info":{"memoryInfo":{"memTotal":1e400}}}'),
     "out of range"),
    ("1e308", hello_text('{"hostname":"h","info":{"memoryInfo":{"memTotal":1e308}}}'),
     "out of range"),
    ("a huge integer", hello_text('{"hostname":"h","info":{"cpuInfo":{"count":' + "9" * 30
                                  + "}}}"), "out of range"),
    ("deep nesting", hello_text('{"hostname":"h","info":' + "[" * 500 + "]" * 500 + "}"),
     "nested"),
    ("a hello over its limit", hello_text('{"hostname":"' + "h" * 300_000 + '"}'),
     "at most 256 KiB"),
]


@pytest.mark.parametrize(("frame", "reason"), [(f, r) for _, f, r in INVALID_HELLOS],
                         ids=[case for case, _, _ in INVALID_HELLOS])
async def test_an_invalid_hello_closes_with_4400_and_the_reason(
        client: TestClient, frame: str, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    creds = await register(client)
    ws = await connect(client, creds)
    await ws.send_str(frame)
    msg = await closing(ws)
    assert msg.type is WSMsgType.CLOSE, msg
    assert (msg.data, reason in msg.extra) == (CloseCode.INVALID_MESSAGE, True), msg.extra
    assert (await client.get("/v1", headers=ADMIN)).status == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if r.levelno == logging.WARNING
            and creds["hostId"] in r.getMessage()]


@pytest.mark.parametrize("frame", [
    '{"type":"facts","changes":{"hostname":"\\ud800"}}',
    '{"type":"containerEvent","event":"die","container":{"\\ud800":1},"time":1}',
    '{"type":"facts","changes":{"info":{"x":Infinity}}}',
    '{"type":"progress","requestId":"r","message":"m","progress":1e400}',
])
async def test_an_invalid_frame_in_session_closes_with_4400(client: TestClient,
                                                            frame: str) -> None:
    ws, _ = await attach(client)
    await ws.send_str(frame)
    msg = await closing(ws)
    assert msg.type is WSMsgType.CLOSE and msg.data == CloseCode.INVALID_MESSAGE, msg
    assert msg.extra
    assert (await client.get("/v1", headers=ADMIN)).status == 200


@pytest.mark.parametrize(("kind", "frame", "words"), [
    ("facts", json.dumps({"type": "facts", "changes": {"info": {"x": "a" * 300_000}}}),
     "a facts message may be at most 256 KiB"),
    ("progress", json.dumps({"type": "progress", "requestId": "r", "message": "m" * 20_000}),
     "a progress message may be at most 16 KiB"),
    ("containerEvent", json.dumps({"type": "containerEvent", "event": "die", "time": 1,
                                   "container": {"labels": {"x": "y" * 70_000}}}),
     "a containerEvent message may be at most 64 KiB"),
])
async def test_a_frame_over_its_types_limit_closes_with_1009_logged_once(
        client: TestClient, caplog: pytest.LogCaptureFixture, kind: str, frame: str,
        words: str) -> None:
    ws, welcome = await attach(client)
    await ws.send_str(frame)
    with contextlib.suppress(ConnectionError):  # the server may close while we still send
        await ws.send_str(frame)
    msg = await closing(ws)
    assert msg.type is WSMsgType.CLOSE and msg.data == CloseCode.MESSAGE_TOO_BIG, msg
    assert words in msg.extra
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and
                words in r.getMessage()]
    assert len(warnings) == 1 and welcome.host_id in warnings[0].getMessage()


async def test_an_inventory_may_use_the_largest_frame(client: TestClient) -> None:
    ws, _ = await attach(client)
    padding = "p" * (protocol.MAX_FRAME_BYTES - 200)
    await ws.send_str(json.dumps({"type": "inventory", "containers": [{"padding": padding}]}))
    await ws.send_str(json.dumps({"type": "facts", "changes": {"hostname": "still-here"}}))

    async def renamed() -> bool:
        resp = await client.get("/v1/hosts", headers=ADMIN)
        return any(h["hostname"] == "still-here" for h in (await resp.json())["data"])

    for _ in range(int(seconds(100))):
        if await renamed():
            break
        await asyncio.sleep(0.1)
    assert await renamed()
    assert not ws.closed
    await ws.close()


# --- the report queue, with a report handler that never finishes -------------------------

@pytest.fixture
async def stuck_session(aiohttp_client: Callable[..., Any]) -> AsyncIterator[TestClient]:
    """A real session whose report handler waits until the test ends, behind a real socket."""
    release = asyncio.Event()

    async def on_report(report: Report) -> None:
        await release.wait()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=protocol.MAX_FRAME_BYTES)
        await ws.prepare(request)
        await AgentSession(ws, 1, "1h1", on_report).run()
        return ws

    app = web.Application()
    app.router.add_get("/agent", handler)
    client: TestClient = await aiohttp_client(app)
    yield client
    release.set()


async def test_reports_beyond_the_queue_bound_close_with_4429(
        stuck_session: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    ws = await stuck_session.ws_connect("/agent")
    frame = json.dumps({"type": "facts", "changes": {"info": {"x": "f" * 250_000}}})
    frames = agent_session.REPORT_QUEUE_BYTES // len(frame) + 2
    with contextlib.suppress(ConnectionError):
        for _ in range(frames):
            await ws.send_str(frame)
    msg = await closing(ws)
    assert msg.type is WSMsgType.CLOSE and msg.data == CloseCode.OVERLOADED, msg
    assert "of reports waiting" in msg.extra
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "[host 1h1]" in warnings[0].getMessage()


# --- memory of a real server process -----------------------------------------------------

def rss(server: ServerProcess) -> int:
    assert server.proc is not None
    return int(psutil.Process(server.proc.pid).memory_info().rss)


async def flood(http: aiohttp.ClientSession, server: ServerProcess,
                creds: dict[str, Any], frame: str, count: int) -> int | None:
    """Connect as the agent, say hello, send ``frame`` ``count`` times; the close code the
    server sent, or None if it took them all."""
    url = server.origin.replace("http", "ws", 1) + protocol.AGENT_PATH
    async with http.ws_connect(url, headers=basic(creds["accessKey"], creds["secretKey"]),
                               max_msg_size=0) as ws:
        await ws.send_str(protocol.dump(protocol.Hello(agent_version="flood", facts=FACTS)))
        assert (await ws.receive(timeout=seconds(10))).type is WSMsgType.TEXT
        with contextlib.suppress(ConnectionError):
            for _ in range(count):
                await ws.send_str(frame)
        try:
            while (await ws.receive(timeout=seconds(3))).type is WSMsgType.TEXT:
                pass
        except TimeoutError:
            return None
        except ConnectionError:  # answering the server's close frame
            pass
        return ws.close_code


def agent_credentials(server: ServerProcess, key: str) -> dict[str, Any]:
    token = server.api("GET", "/registrationtokens").json()["data"][0]["token"]
    resp = requests.post(f"{server.url}/register", data=json.dumps({"key": key}),
                         auth=("registrationToken", token), timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_a_flood_of_large_frames_is_closed_and_the_memory_comes_back(
        server: ServerProcess) -> None:
    creds = agent_credentials(server, "f" * 64)
    big_facts = json.dumps({"type": "facts", "changes": {
        "info": {"x": "a" * (protocol.MAX_FRAME_BYTES - 100)}}})
    # The largest facts frame allowed, as many small keys as fit: its parsed form is many
    # times its text.
    keys = {f"k{n:06}": n for n in range(15_000)}
    many_keys = json.dumps({"type": "facts", "changes": {"info": {"x": keys}}})
    assert len(many_keys) < protocol.frame_limit("facts")
    inventory = json.dumps({"type": "inventory",
                            "containers": [{}] * ((protocol.MAX_FRAME_BYTES - 100) // 4)})
    async with aiohttp.ClientSession() as http:
        await flood(http, server, creds, protocol.dump(protocol.Facts(changes={"x": 1})), 10)
        before = rss(server)
        assert await flood(http, server, creds, big_facts, 20) == CloseCode.MESSAGE_TOO_BIG
        # Frames within their limits: taken, or refused for the queue; either way bounded.
        assert await flood(http, server, creds, many_keys, 60) in (None, CloseCode.OVERLOADED)
        assert await flood(http, server, creds, inventory, 3) in (None, CloseCode.OVERLOADED)
    assert "a facts message may be at most 256 KiB" in server.log()
    bound = before * 1.5 + 50 * MIB
    for _ in range(int(seconds(150))):  # 30 s at most, for the allocator to give it back
        if rss(server) <= bound:
            break
        await asyncio.sleep(0.2)
    assert rss(server) <= bound, (before, rss(server))
    assert server.api("GET", "/hosts").status_code == 200
    assert " ERROR " not in server.log() and "Traceback" not in server.log(), server.log()
