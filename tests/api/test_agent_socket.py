"""The agent websocket and registration over real sockets, with a scripted agent."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
import zipfile
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server.agents import package
from server.api.handlers import SERVICES
from server.store import NewRecord, Query
from shared import protocol
from shared.ids import parse_id
from tests.api.agent_double import FACTS, attach, connect, hello, register, token
from tests.conftest import ADMIN, basic


async def host(client: TestClient, host_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/hosts/{host_id}", headers=ADMIN)
    return dict(await resp.json())


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_registration_with_same_key_reuses_host_and_rotates_credentials(
        client: TestClient) -> None:
    first = await register(client, "a" * 64)
    second = await register(client, "a" * 64)
    other = await register(client, "b" * 64)
    assert first["hostId"] == second["hostId"] != other["hostId"]
    assert first["secretKey"] != second["secretKey"]
    assert second["agentUrl"].endswith(protocol.AGENT_PATH)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(client, first)
    assert refused.value.status == 401
    ws = await connect(client, second)
    await hello(ws)
    await ws.close()


async def test_registration_rejects_bad_tokens_and_keys(client: TestClient) -> None:
    tok = await token(client)
    resp = await client.post("/v1/register", data='{"key": "' + "k" * 64 + '"}',
                             headers=basic("registrationToken", "wrong"))
    assert resp.status == 401 and (await resp.json())["code"] == "Unauthorized"
    resp = await client.post("/v1/register", data='{"key": "short"}',
                             headers=basic("registrationToken", tok))
    body = await resp.json()
    assert (resp.status, body["code"], body["fieldName"]) == (422, "InvalidFormat", "key")
    resp = await client.post("/v1/register", data='{"key": "' + "k" * 64 + '"}', headers=ADMIN)
    assert resp.status == 401  # an API key is not a registration token


async def test_removed_token_no_longer_registers(client: TestClient) -> None:
    resp = await client.get("/v1/registrationtokens", headers=ADMIN)
    record = (await resp.json())["data"][0]
    await client.delete(f"/v1/registrationtokens/{record['id']}", headers=ADMIN)
    resp = await client.post("/v1/register", data='{"key": "' + "k" * 64 + '"}',
                             headers=basic("registrationToken", record["token"]))
    assert resp.status == 401


async def test_install_script_and_agent_wheel_are_served_for_a_valid_token(
        client: TestClient) -> None:
    tok = await token(client)
    resp = await client.get(f"/v1/scripts/{tok}")
    script = await resp.text()
    assert resp.status == 200 and script.startswith("#!/bin/sh")
    assert f"/v1/scripts/{tok}/{package.wheel_name()}" in script
    resp = await client.get(f"/v1/scripts/{tok}/{package.wheel_name()}")
    wheel = zipfile.ZipFile(io.BytesIO(await resp.read()))
    names = wheel.namelist()
    assert "agent/cli.py" in names and "shared/protocol.py" in names
    assert not any(name.startswith("server/") for name in names)
    metadata = wheel.read(f"corral_agent-{package.version()}.dist-info/METADATA").decode()
    assert "Requires-Dist: websockets" in metadata
    resp = await client.get("/v1/scripts/wrongtoken")
    assert resp.status == 401 and (await resp.json())["type"] == "error"
    resp = await client.get(f"/v1/scripts/{tok}/other-1.0-py3-none-any.whl")
    assert resp.status == 404


async def test_hello_makes_the_host_active_with_its_facts(client: TestClient) -> None:
    ws, welcome = await attach(client)
    assert welcome.ping_interval == 5.0 and welcome.report_interval == 60.0
    found = await host(client, welcome.host_id)
    assert (found["state"], found["agentState"]) == ("active", "active")
    assert found["hostname"] == found["name"] == "double-1"
    assert found["agentIpAddress"] == "127.0.0.1"
    assert found["labels"]["zone"] == "a"
    assert found["memory"] == 2048 * 1024 * 1024 and found["milliCpu"] == 2000
    assert found["localStorageMb"] == 10000
    assert set(found["actions"]) == {"deactivate", "inspect", "dockersocket"}
    await ws.close()


async def test_agent_ip_from_the_agent_wins_over_the_seen_address(client: TestClient) -> None:
    ws = await connect(client, await register(client))
    welcome = await hello(ws, {**FACTS, "agentIp": "10.99.2.2"})
    assert (await host(client, welcome.host_id))["agentIpAddress"] == "10.99.2.2"
    await ws.close()


async def test_facts_reports_write_only_what_changed(client: TestClient) -> None:
    ws, welcome = await attach(client)
    store = client.server.app[SERVICES].store
    number = parse_id(welcome.host_id, "1h")
    assert number is not None
    before = await store.get(number)
    await ws.send_str(protocol.dump(protocol.Facts(changes={"info": FACTS["info"]})))
    await ws.send_str(protocol.dump(protocol.Facts(changes={
        "info": {"memoryInfo": {"memTotal": 4096, "memAvailable": 1}}})))

    async def updated() -> bool:
        record = await store.get(number)
        return record is not None and record.data.get("memory") == 4096 * 1024 * 1024

    await eventually(updated)
    after = await store.get(number)
    assert before is not None and after is not None
    assert after.version == before.version + 1  # the unchanged report wrote nothing
    assert after.data["info"]["cpuInfo"] == FACTS["info"]["cpuInfo"]
    await ws.close()


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\x00binary", "text hello"),
    ("{not json", "not valid JSON"),
    ('{"type": "mystery"}', "unknown message type"),
    ('{"type": "welcome", "hostId": "1h1", "pingInterval": 5, "reportInterval": 60}',
     "expected hello"),
    ('{"type": "hello", "agentVersion": "x", "facts": {}, "protocol": 1}', "hostname"),
    ('{"type": "hello", "agentVersion": "x", "facts": {"hostname": "h"}, "protocol": 99}',
     "not supported"),
])
async def test_bad_first_frames_close_with_a_reason(client: TestClient, frame: str | bytes,
                                                    reason: str) -> None:
    ws = await connect(client, await register(client))
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == protocol.CloseCode.INVALID_MESSAGE
    assert reason in msg.extra
    assert (await client.get("/v1", headers=ADMIN)).status == 200


@pytest.mark.parametrize(("frame", "reason"), [
    (b"\x00binary", "binary frames"),
    ('{"type": "reply"}', "requestId"),
    ('{"type": "hello", "agentVersion": "x", "facts": {"hostname": "h"}, "protocol": 1}',
     "only be sent once"),
    ('{"type": "request", "id": "1", "name": "x", "resourceType": "h", "resourceId": "1"}',
     "may not send request"),
])
async def test_bad_frames_in_session_close_with_a_reason(client: TestClient, frame: str | bytes,
                                                         reason: str) -> None:
    ws, _ = await attach(client)
    if isinstance(frame, bytes):
        await ws.send_bytes(frame)
    else:
        await ws.send_str(frame)
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == protocol.CloseCode.INVALID_MESSAGE
    assert reason in msg.extra


async def test_oversized_frame_closes_with_message_too_big(client: TestClient) -> None:
    ws, welcome = await attach(client)
    with contextlib.suppress(ConnectionError):  # the server may close while we still send
        await ws.send_str('{"type":"facts","changes":{"x":"' + "a" * protocol.MAX_FRAME_BYTES
                          + '"}}')
    msg = await ws.receive(timeout=10)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
    # 1009 when the close frame gets through; 1006 when the connection dies first.
    assert ws.close_code in (1009, 1006)

    async def dropped() -> bool:
        return (await host(client, welcome.host_id))["agentState"] == "reconnecting"

    await eventually(dropped)
    assert (await client.get("/v1", headers=ADMIN)).status == 200


async def test_no_hello_closes_after_the_hello_timeout(client: TestClient) -> None:
    ws = await connect(client, await register(client))
    msg = await ws.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE
    assert msg.data == protocol.CloseCode.HELLO_TIMEOUT and "no hello" in msg.extra


async def test_agent_socket_needs_agent_credentials(client: TestClient) -> None:
    for headers in ({}, ADMIN, basic("registrationToken", await token(client))):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(protocol.AGENT_PATH, headers=headers)
        assert refused.value.status == 401


async def test_second_connection_for_a_host_supersedes_the_first(client: TestClient) -> None:
    first, _ = await attach(client)
    second, _ = await attach(client)
    msg = await first.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == protocol.CloseCode.SUPERSEDED
    await second.close()


async def serve_one(ws: aiohttp.ClientWebSocketResponse, reply: Any) -> protocol.Request:
    request = protocol.parse((await ws.receive(timeout=5)).data)
    assert isinstance(request, protocol.Request)
    await ws.send_str(protocol.dump(protocol.Progress(request_id=request.id,
                                                      message="working", progress=50)))
    await ws.send_str(protocol.dump(reply(request)))
    return request


async def test_inspect_instruction_round_trip(client: TestClient) -> None:
    ws, welcome = await attach(client)
    agent = asyncio.create_task(serve_one(ws, lambda r: protocol.Reply(
        request_id=r.id, data={"facts": FACTS, "docker": {"version": "20.10"}})))
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=inspect", headers=ADMIN)
    body = await resp.json()
    request = await agent
    assert (request.name, request.resource_type, request.resource_id) == (
        "host.inspect", "host", welcome.host_id)
    assert resp.status == 200 and body["type"] == "hostInspection"
    assert body["hostId"] == welcome.host_id and body["docker"]["version"] == "20.10"
    await ws.close()


async def test_failed_instruction_reports_the_agents_message(client: TestClient) -> None:
    ws, welcome = await attach(client)
    agent = asyncio.create_task(serve_one(ws, lambda r: protocol.Reply(
        request_id=r.id, error=protocol.ReplyError(protocol.ErrorCode.RUNTIME_UNAVAILABLE,
                                                   "Docker engine is not reachable"))))
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=inspect", headers=ADMIN)
    await agent
    body = await resp.json()
    assert resp.status == 422 and body["message"] == "Docker engine is not reachable"
    await ws.close()


async def test_instruction_to_a_host_without_agent_fails_at_once(client: TestClient) -> None:
    ws, welcome = await attach(client)
    await ws.close()

    async def gone() -> bool:
        return (await host(client, welcome.host_id))["agentState"] != "active"

    await eventually(gone)
    started = time.monotonic()
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=inspect", headers=ADMIN)
    body = await resp.json()
    assert time.monotonic() - started < 5
    assert resp.status in (422, 503) and body["type"] == "error"


async def test_agent_leaving_mid_instruction_fails_it_cleanly(client: TestClient) -> None:
    ws, welcome = await attach(client)
    call = asyncio.create_task(client.post(f"/v1/hosts/{welcome.host_id}?action=inspect",
                                           headers=ADMIN))
    request = protocol.parse((await ws.receive(timeout=5)).data)
    assert isinstance(request, protocol.Request)
    await ws.close()
    resp = await call
    body = await resp.json()
    assert resp.status == 503 and body["code"] == "HostNotConnected"
    assert "disconnected" in body["message"]


async def test_deactivated_host_keeps_its_state_while_the_agent_comes_and_goes(
        client: TestClient) -> None:
    ws, welcome = await attach(client)
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=deactivate", headers=ADMIN)
    assert (await resp.json())["state"] == "inactive"
    await ws.close()
    await asyncio.sleep(0.5)
    assert (await host(client, welcome.host_id))["state"] == "inactive"
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=activate", headers=ADMIN)
    assert (await resp.json())["state"] in ("reconnecting", "disconnected")


async def test_removing_a_host_closes_its_agent_and_revokes_its_key(client: TestClient) -> None:
    creds = await register(client, "r" * 64)
    ws = await connect(client, creds)
    welcome = await hello(ws)
    await client.post(f"/v1/hosts/{welcome.host_id}?action=deactivate", headers=ADMIN)
    resp = await client.delete(f"/v1/hosts/{welcome.host_id}", headers=ADMIN)
    assert (await resp.json())["state"] == "removed"
    msg = await ws.receive(timeout=5)
    assert msg.type is WSMsgType.CLOSE and msg.data == protocol.CloseCode.HOST_REMOVED
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await connect(client, creds)
    again = await register(client, "r" * 64)
    assert again["hostId"] != welcome.host_id  # a removed host comes back as a new one
    assert json.dumps(again)


async def test_removing_a_host_removes_the_containers_and_volumes_placed_on_it(
        client: TestClient) -> None:
    ws, welcome = await attach(client)
    store = client.server.app[SERVICES].store
    number = parse_id(welcome.host_id, "1h")
    assert number is not None
    host_record = await store.get(number)
    assert host_record is not None
    placed = [await store.create(NewRecord(type=t, kind=t, state="running",
                                           project_id=host_record.project_id,
                                           data={"hostId": number}))
              for t in ("container", "volume")]
    await client.post(f"/v1/hosts/{welcome.host_id}?action=deactivate", headers=ADMIN)
    await client.delete(f"/v1/hosts/{welcome.host_id}", headers=ADMIN)
    for record in placed:
        after = await store.get(record.id)
        assert after is not None and after.state == "removed" and after.removed is not None
    pools = await store.list(Query(types=["storagePool"], project_id=host_record.project_id))
    assert all(p.state == "removed" for p in pools if p.data.get("hostId") == number)
    await ws.close()
