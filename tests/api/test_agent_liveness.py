"""Agent liveness over real sockets, with short intervals: pings, grace, reconnection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from server.config import Settings
from tests.api.agent_double import attach
from tests.api.test_agent_socket import eventually, host
from tests.conftest import make_settings


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return make_settings(tmp_path / "data", ping_interval=0.5, disconnect_grace=2.5,
                         hello_timeout=1.0)


async def test_silent_agent_goes_reconnecting_then_disconnected(client: TestClient) -> None:
    ws, welcome = await attach(client, autoping=False)  # never answers pings
    states: list[str] = []

    async def disconnected() -> bool:
        state = (await host(client, welcome.host_id))["agentState"]
        if not states or states[-1] != state:
            states.append(state)
        return state == "disconnected"

    await eventually(disconnected, timeout=8)
    assert states[-2:] == ["reconnecting", "disconnected"]
    found = await host(client, welcome.host_id)
    assert found["state"] == "disconnected"
    while not ws.closed:  # the server gives up on the socket too
        msg = await ws.receive(timeout=5)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED):
            break


async def test_answering_agent_stays_active_and_returns_after_a_drop(client: TestClient) -> None:
    ws, welcome = await attach(client)
    reader = asyncio.create_task(ws.receive())  # keeps the client answering pings
    await asyncio.sleep(2.0)  # four ping rounds
    assert (await host(client, welcome.host_id))["agentState"] == "active"
    await ws.close()
    reader.cancel()

    async def reconnecting() -> bool:
        return (await host(client, welcome.host_id))["state"] == "reconnecting"

    await eventually(reconnecting)
    again, welcome2 = await attach(client)
    assert welcome2.host_id == welcome.host_id
    assert (await host(client, welcome.host_id))["state"] == "active"
    await again.close()


