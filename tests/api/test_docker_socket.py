"""The host ``dockersocket`` action and ``/v1/dockersocket``: a ``hostAccess`` ticket, good for
several connections until it expires, whose websocket relays raw bytes both ways through a
``host.dockersocket`` stream of the host's agent (a scripted one here, on a real socket)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestClient

from server.agents.streams import Ticket
from server.api.handlers import SERVICES
from shared import protocol
from shared.errors import ErrorCode
from shared.ids import parse_id
from tests.api.agent_double import attach
from tests.conftest import ADMIN
from tests.support.timing import seconds

VERSION_REQUEST = b"GET /version HTTP/1.1\r\nHost: docker\r\n\r\n"
VERSION_ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 20\r\n\r\n{\"Version\":\"24.0.7\"}")


async def docker_socket(client: TestClient, host_id: str,
                        version: str = "v1") -> dict[str, Any]:
    resp = await client.post(f"/{version}/hosts/{host_id}?action=dockersocket", headers=ADMIN)
    body = await resp.json()
    assert resp.status == 200, body
    return dict(body)


async def next_message(agent: ClientWebSocketResponse) -> protocol.Message:
    return protocol.parse((await agent.receive(timeout=seconds(5))).data)


async def stream_request(agent: ClientWebSocketResponse) -> protocol.Request:
    while not isinstance(message := await next_message(agent), protocol.Request):
        pass
    return message


async def stream_input(agent: ClientWebSocketResponse, stream_id: str) -> bytes:
    message = await next_message(agent)
    assert isinstance(message, protocol.StreamData) and message.stream_id == stream_id, message
    return base64.b64decode(message.data)


async def send_output(agent: ClientWebSocketResponse, stream_id: str, data: bytes) -> None:
    await agent.send_str(protocol.dump(protocol.StreamData(
        stream_id=stream_id, data=base64.b64encode(data).decode())))


async def host_state(client: TestClient, host_id: str) -> str:
    resp = await client.get(f"/v1/hosts/{host_id}", headers=ADMIN)
    return str((await resp.json())["state"])


def socket_url(access: dict[str, Any]) -> str:
    """Where a client connects, as Rancher's clients build it: the URL, then the token."""
    return f"{access['url']}?token={access['token']}"


async def test_an_active_host_offers_dockersocket_which_answers_a_host_access(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    host = await (await client.get(f"/v1/hosts/{welcome.host_id}", headers=ADMIN)).json()
    assert "dockersocket" in host["actions"]
    for version in ("v1", "v2-beta"):
        access = await docker_socket(client, welcome.host_id, version)
        assert access["type"] == "hostAccess" and access["token"]
        assert access["url"] == f"ws://{client.host}:{client.port}/v1/dockersocket/"
    await agent.close()


async def test_bytes_relay_both_ways_and_the_ticket_serves_several_connections(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    async with aiohttp.ClientSession() as http:
        for _ in range(2):  # the Docker client opens a connection per request
            async with http.ws_connect(socket_url(access)) as ws:
                request = await stream_request(agent)
                assert (request.name, request.resource_type, request.resource_id) == \
                    ("host.dockersocket", "host", welcome.host_id)
                await ws.send_bytes(VERSION_REQUEST)
                assert await stream_input(agent, request.id) == VERSION_REQUEST
                await send_output(agent, request.id, VERSION_ANSWER)
                answer = await ws.receive(timeout=seconds(5))
                assert (answer.type, answer.data) == (WSMsgType.BINARY, VERSION_ANSWER)
                # The engine closes the connection: the agent's reply ends the stream.
                await agent.send_str(protocol.dump(protocol.Reply(request_id=request.id)))
                closed = await ws.receive(timeout=seconds(5))
                assert (closed.type, closed.data) == (WSMsgType.CLOSE, 1000), closed
    await agent.close()


async def test_the_slash_less_path_works_and_a_text_frame_is_its_bytes(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    url = f"{access['url'].rstrip('/')}?token={access['token']}"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        request = await stream_request(agent)
        await ws.send_str("GET /_ping HTTP/1.1\r\n\r\n")
        assert await stream_input(agent, request.id) == b"GET /_ping HTTP/1.1\r\n\r\n"
    await agent.close()


async def test_a_client_that_leaves_has_the_agent_told_to_stop(client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(socket_url(access))
        request = await stream_request(agent)
        await ws.close()
    assert await next_message(agent) == protocol.StreamClose(stream_id=request.id)
    await agent.close()


async def test_an_engine_the_agent_cannot_reach_closes_the_socket_with_its_reason(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    async with aiohttp.ClientSession() as http, http.ws_connect(socket_url(access)) as ws:
        request = await stream_request(agent)
        await agent.send_str(protocol.dump(protocol.Reply(
            request_id=request.id, error=protocol.ReplyError(
                code=ErrorCode.RUNTIME_UNAVAILABLE,
                message="could not connect to the Docker engine"))))
        closed = await ws.receive(timeout=seconds(5))
        assert (closed.type, closed.data, closed.extra) == \
            (WSMsgType.CLOSE, 1014, "could not connect to the Docker engine")
    await agent.close()


async def test_a_forged_expired_or_other_ticket_is_a_401(client: TestClient) -> None:
    agent, welcome = await attach(client)
    host_id = parse_id(welcome.host_id, "1h")
    assert host_id is not None
    tickets = client.server.app[SERVICES].streams
    expired = tickets.issue(Ticket(host_id=host_id, instruction="host.dockersocket",
                                   resource_id=welcome.host_id, data={},
                                   expires=time.time() - 1))
    exec_ticket = tickets.issue(Ticket(host_id=host_id, instruction="instance.exec",
                                       resource_id="1i1", data={"uuid": "u", "command": ["sh"]}))
    for token in ("forged", "", expired, exec_ticket):
        resp = await client.get(f"/v1/dockersocket/?token={token}")
        body = await resp.json()
        assert (resp.status, body["type"], body["status"]) == (401, "error", 401), token
    assert (await client.get("/v1/dockersocket")).status == 401
    await agent.close()


async def test_a_host_whose_agent_is_away_refuses_dockersocket(client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    await agent.close()
    deadline = time.monotonic() + seconds(5)
    while await host_state(client, welcome.host_id) == "active":
        assert time.monotonic() < deadline, "the host still shows its agent connected"
        await asyncio.sleep(0.05)
    action = f"/v1/hosts/{welcome.host_id}?action=dockersocket"
    # Its state says it is away (reconnecting): the action is not offered, as in Rancher.
    resp = await client.post(action, headers=ADMIN)
    assert (resp.status, (await resp.json())["code"]) == (422, "ActionNotAvailable")
    # Inactive, it is offered, and the missing agent is a 503.
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=deactivate", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    resp = await client.post(action, headers=ADMIN)
    body = await resp.json()
    assert (resp.status, body["code"]) == (503, "HostNotConnected"), body
    assert "agent is not connected" in body["message"]
    # A ticket issued while it was there meets the same answer, before any upgrade.
    resp = await client.get(f"/v1/dockersocket/?token={access['token']}")
    assert (resp.status, (await resp.json())["code"]) == (503, "HostNotConnected")


async def test_dockersocket_is_refused_to_callers_without_credentials(
        client: TestClient) -> None:
    agent, welcome = await attach(client)
    resp = await client.post(f"/v1/hosts/{welcome.host_id}?action=dockersocket")
    assert resp.status == 401
    await agent.close()


async def test_shutdown_closes_the_socket_with_going_away(client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    async with aiohttp.ClientSession() as http, http.ws_connect(socket_url(access)) as ws:
        await stream_request(agent)
        closing = asyncio.ensure_future(client.server.close())
        msg = await ws.receive(timeout=seconds(10))
        await closing
        assert (msg.type, msg.data) == (WSMsgType.CLOSE, 1001)


async def test_a_docker_socket_or_proxy_ticket_opens_no_stream(client: TestClient) -> None:
    agent, welcome = await attach(client)
    access = await docker_socket(client, welcome.host_id)
    host_id = parse_id(welcome.host_id, "1h")
    assert host_id is not None
    proxy = client.server.app[SERVICES].streams.issue(Ticket(
        host_id=host_id, instruction="instance.proxy", resource_id="1i1",
        data={"uuid": "u", "port": 80, "scheme": "http"}))
    for token in (access["token"], proxy):
        resp = await client.get(f"/v1/stream?token={token}")
        assert resp.status == 401, token
    # Still good where it belongs: refused there, it was not used up.
    async with aiohttp.ClientSession() as http, http.ws_connect(socket_url(access)):
        assert (await stream_request(agent)).name == "host.dockersocket"
    await agent.close()
